//! CPU time of a process (user and system) from `/proc/PID/stat`: the load generator's own, to
//! show it is not the bottleneck, and with `--pid` the server's, to put a cost on each message.

use std::io;
use std::time::Duration;

use serde::Serialize;

/// Linux reports `utime`/`stime` in clock ticks of `USER_HZ`, which the kernel ABI fixes at 100
/// on every architecture Rust targets (it is `sysconf(_SC_CLK_TCK)`).
const TICKS_PER_SEC: u64 = 100;

/// Which process to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Process {
    /// This one.
    Own,
    /// Another, by pid (`--pid`).
    Pid(u32),
}

impl Process {
    pub(crate) fn proc_dir(self) -> String {
        match self {
            Process::Own => "/proc/self".to_owned(),
            Process::Pid(pid) => format!("/proc/{pid}"),
        }
    }
}

/// Cumulative CPU time of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    pub(crate) user: Duration,
    pub(crate) system: Duration,
}

/// Reads `process`'s CPU time so far.
pub(crate) fn read(process: Process) -> io::Result<CpuTimes> {
    let text = std::fs::read_to_string(format!("{}/stat", process.proc_dir()))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat line"))
}

/// `pid (comm) state ppid … utime stime …`: `comm` may hold spaces and parentheses, so fields
/// are counted from the last `)`; `utime` and `stime` are fields 14 and 15.
fn parse_stat(text: &str) -> Option<CpuTimes> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = |t: u64| Duration::from_millis(t.saturating_mul(1000 / TICKS_PER_SEC));
    Some(CpuTimes {
        user: ticks(user),
        system: ticks(system),
    })
}

/// CPU used over a stretch of wall time, as reports show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuUse {
    /// User-mode seconds.
    pub user_secs: f64,
    /// Kernel-mode seconds.
    pub system_secs: f64,
    /// (user + system) / wall time × 100, in % of one core: 100 is one core busy, 200 two.
    pub percent: f64,
}

impl CpuUse {
    /// What was used between two readings taken `wall` apart.
    pub(crate) fn between(before: CpuTimes, after: CpuTimes, wall: Duration) -> Self {
        let user = after.user.saturating_sub(before.user).as_secs_f64();
        let system = after.system.saturating_sub(before.system).as_secs_f64();
        let wall = wall.as_secs_f64();
        Self {
            user_secs: user,
            system_secs: system,
            percent: if wall > 0.0 {
                (user + system) / wall * 100.0
            } else {
                0.0
            },
        }
    }

    /// User plus system seconds.
    pub fn total_secs(&self) -> f64 {
        self.user_secs + self.system_secs
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let line = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 4 0 99 \
                    1000 200 18446744073709551615";
        let t = parse_stat(line).unwrap();
        assert_eq!(t.user, Duration::from_millis(2500));
        assert_eq!(t.system, Duration::from_millis(370));
    }

    #[test]
    fn reads_own_process() {
        let t = read(Process::Own).unwrap();
        let u = CpuUse::between(CpuTimes::default(), t, Duration::from_secs(1));
        assert!(u.percent >= 0.0);
    }
}
