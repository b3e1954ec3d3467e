//! The standard `process_*` families, read from `/proc/self` (Linux) at each scrape: resident and
//! virtual memory, CPU seconds, open and maximum file descriptors, start time. Elsewhere, or if a
//! file cannot be read, the families it feeds are left out.
//!
//! Written by hand: `prometheus-client` has no process collector, and the crates that read
//! `/proc` (`procfs`, the `prometheus` crate's collector) bring a second metrics model or a
//! syscall layer for five numbers out of three text files.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Linux reports `utime`, `stime` and `starttime` in clock ticks of `USER_HZ`, which the kernel
/// ABI fixes at 100 on every architecture Rust targets (`sysconf(_SC_CLK_TCK)`).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading; `None` where the source could not be read.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) struct Process {
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl Process {
    /// Reads `/proc/self` now.
    pub(super) fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(Stat::parse);
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| boot_time(&text));
        Self {
            resident_bytes: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|text| resident_bytes(&text)),
            virtual_bytes: stat.map(|s| s.vsize),
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / TICKS_PER_SEC),
            // One directory entry per descriptor: O(open fds), the cost every Prometheus client
            // pays for this family.
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|text| max_fds(&text)),
            start_time_seconds: stat
                .zip(boot_time)
                .map(|(s, boot)| boot as f64 + s.starttime as f64 / TICKS_PER_SEC),
        }
    }

    /// Writes the families it has.
    pub(super) fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                self.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                self.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                self.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit).",
                self.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
                self.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                ConstGauge::new(value).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        if let Some(cpu) = self.cpu_seconds {
            ConstCounter::new(cpu).encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
}

impl Stat {
    /// `pid (comm) state ppid …`: `comm` may hold spaces and parentheses, so fields are counted
    /// from the last `)`. `utime`, `stime`, `starttime` and `vsize` are fields 14, 15, 22 and 23.
    fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        // `rest` starts at field 3 (state).
        let field =
            |n: usize| -> Option<u64> { rest.split_ascii_whitespace().nth(n - 3)?.parse().ok() };
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
        })
    }
}

/// `VmRSS:    1234 kB` in `/proc/self/status`.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `btime 1700000000` in `/proc/stat`: boot time, seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// `Max open files  1024  524288  files` in `/proc/self/limits`: the soft limit, which is what
/// `open` fails at (`unlimited` reads as none).
fn max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_stat_with_an_odd_command_name() {
        let line = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 4 0 \
                    9900 1048576 200 18446744073709551615";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(
            stat,
            Stat {
                utime: 250,
                stime: 37,
                starttime: 9900,
                vsize: 1_048_576
            }
        );
        assert_eq!(Stat::parse("1234 (truncated) S 1"), None);
    }

    #[test]
    fn parses_status_stat_and_limits() {
        let status = "Name:\twscope\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(resident_bytes(status), Some(5120 * 1024));
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63000                63000                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_fds(unlimited), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_its_own_process() {
        let p = Process::read();
        assert!(p.resident_bytes.unwrap() > 0);
        assert!(p.open_fds.unwrap() > 0);
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        // Started before now (ticks are 10 ms, and btime is rounded to the second).
        assert!(start <= now + 1.0, "start {start} after now {now}");
    }
}
