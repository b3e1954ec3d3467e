//! How reports are shown: a two-column table for people, one JSON object for machines. Each
//! mode's report lists its rows; the numbers are formatted here, once.

use std::fmt::Write as _;

use serde::Serialize;

use super::cpu::CpuUse;
use super::latency::LatencySummary;
use super::probe::{ClientCpu, ServerUse};

/// A report that can be shown as a table and as JSON.
pub trait Report: Serialize {
    /// The first line: mode, URL and shape of the run.
    fn title(&self) -> String;
    /// (label, value) lines, in order.
    fn rows(&self) -> Vec<(String, String)>;
}

/// The table a person reads.
pub fn table<R: Report>(report: &R) -> String {
    let rows = report.rows();
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = report.title();
    out.push('\n');
    for (label, value) in rows {
        let _ = writeln!(out, "  {label:<width$}  {value}");
    }
    out
}

/// One JSON object on one line.
pub fn json<R: Report>(report: &R) -> String {
    serde_json::to_string(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// `1234567` → `1,234,567`.
pub(crate) fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate per second, rounded to a whole number.
pub(crate) fn rate(r: f64) -> String {
    if r.is_finite() && r >= 0.0 {
        int(r.round() as u64)
    } else {
        "-".to_owned()
    }
}

/// Microseconds, switching to milliseconds past 10 ms.
pub(crate) fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// Bytes with a binary unit.
pub(crate) fn bytes(n: f64) -> String {
    let sign = if n < 0.0 { "-" } else { "" };
    let n = n.abs();
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{sign}{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{sign}{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 10.0 * 1024.0 {
        format!("{sign}{:.1} KiB", n / 1024.0)
    } else {
        format!("{sign}{n:.0} B")
    }
}

/// Seconds with two decimals.
pub(crate) fn secs(s: f64) -> String {
    format!("{s:.2} s")
}

/// The rows of a latency summary under `name`.
pub(crate) fn latency_rows(name: &str, l: &LatencySummary) -> Vec<(String, String)> {
    vec![(
        name.to_owned(),
        format!(
            "p50 {}  p90 {}  p99 {}  max {}",
            micros(l.p50),
            micros(l.p90),
            micros(l.p99),
            micros(l.max)
        ),
    )]
}

/// A CPU-use row.
pub(crate) fn cpu_row(name: &str, c: &CpuUse) -> (String, String) {
    (
        name.to_owned(),
        format!(
            "{:.0}% ({:.2} s user + {:.2} s sys)",
            c.percent, c.user_secs, c.system_secs
        ),
    )
}

/// The load generator's own CPU row.
pub(crate) fn client_cpu_row(c: &ClientCpu) -> (String, String) {
    let (label, mut value) = cpu_row(&format!("client cpu ({} cores)", c.cores), &c.cpu);
    if c.saturated() {
        value.push_str(": near saturation, the load generator may be the limit");
    }
    (label, value)
}

/// The server's rows (`--pid`).
pub(crate) fn server_rows(s: &ServerUse) -> Vec<(String, String)> {
    vec![
        cpu_row(&format!("server cpu (pid {})", s.pid), &s.cpu),
        (
            "server rss".to_owned(),
            format!(
                "{} → {} ({})",
                bytes(s.rss_before as f64),
                bytes(s.rss_after as f64),
                bytes(s.rss_growth() as f64)
            ),
        ),
    ]
}

/// The errors row: count and the first one's words.
pub(crate) fn errors_row(count: u64, first: Option<&str>) -> (String, String) {
    let value = match first {
        Some(f) if count > 0 => format!("{} (first: {f})", int(count)),
        _ => int(count),
    };
    ("errors".to_owned(), value)
}

/// The row saying `--timeout` cut the run short, if it did.
pub(crate) fn timed_out_row(timed_out: bool) -> Option<(String, String)> {
    timed_out.then(|| {
        (
            "timed out".to_owned(),
            "yes: --timeout stopped the run".to_owned(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1000), "1,000");
        assert_eq!(int(1234567), "1,234,567");
        assert_eq!(micros(512), "512 µs");
        assert_eq!(micros(12_345), "12.3 ms");
        assert_eq!(bytes(2048.0), "2048 B");
        assert_eq!(bytes(-3.0 * 1024.0 * 1024.0), "-3.0 MiB");
    }
}
