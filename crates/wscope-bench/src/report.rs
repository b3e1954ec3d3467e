//! How reports are shown: a two-column table for people, one JSON object for machines. Each
//! mode's report lists its rows; the numbers are formatted here, once.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cpu::CpuUse;
use crate::latency::LatencySummary;
use crate::lost::Lost;
use crate::probe::{ClientCpu, ServerUse, Usage};

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

/// A CPU-use row: the share is of one core, so two busy cores read 200%.
pub(crate) fn cpu_row(name: &str, c: &CpuUse) -> (String, String) {
    (
        name.to_owned(),
        format!(
            "{:.0}% of one core ({:.2} s user + {:.2} s sys)",
            c.percent, c.user_secs, c.system_secs
        ),
    )
}

/// The rows of a window's usage: the load generator's CPU, then the server's (`--pid`), both
/// over the window's length.
pub(crate) fn usage_rows(u: &Usage) -> Vec<(String, String)> {
    let mut rows = vec![client_cpu_row(u)];
    if let Some(s) = &u.server {
        rows.extend(server_rows(s, u.cpu_window_secs));
    }
    rows
}

/// The load generator's own CPU row.
fn client_cpu_row(u: &Usage) -> (String, String) {
    let c: &ClientCpu = &u.client_cpu;
    let (label, mut value) = cpu_row(&format!("client cpu ({} cores)", c.cores), &c.cpu);
    value.push_str(&format!(" over {}", secs(u.cpu_window_secs)));
    if c.saturated() {
        value.push_str(": near saturation, the load generator may be the limit");
    }
    (label, value)
}

/// The server's rows (`--pid`), its CPU over the same `window` as the client's.
fn server_rows(s: &ServerUse, window: f64) -> Vec<(String, String)> {
    let (label, mut cpu) = cpu_row(&format!("server cpu (pid {})", s.pid), &s.cpu);
    cpu.push_str(&format!(" over {}", secs(window)));
    vec![
        (label, cpu),
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

/// The row saying how many connections were lost and when, if any were.
pub(crate) fn lost_row(what: &str, lost: &Lost) -> Option<(String, String)> {
    let (Some(first), Some(last)) = (lost.first_secs, lost.last_secs) else {
        return None;
    };
    let when = if last - first < 0.05 {
        format!("{first:.1} s")
    } else {
        format!("between {first:.1} s and {last:.1} s")
    };
    let all = if lost.all {
        format!("; every {what} was lost, the load stopped there")
    } else {
        String::new()
    };
    Some((
        "lost".to_owned(),
        format!(
            "{} {what}s {when} after the load started{all}",
            int(lost.count)
        ),
    ))
}

/// A rate row, saying the time it is taken over when that is less than the window asked for.
pub(crate) fn rate_row(
    label: &str,
    rate_per_sec: f64,
    active: f64,
    window: f64,
) -> (String, String) {
    let mut value = self::rate(rate_per_sec);
    if active + 0.05 < window {
        value.push_str(&format!(
            " (over the {} under load, of {})",
            secs(active),
            secs(window)
        ));
    }
    (label.to_owned(), value)
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

    #[test]
    fn cpu_is_a_share_of_one_core() {
        let c = CpuUse {
            user_secs: 1.5,
            system_secs: 0.5,
            percent: 200.0,
        };
        let (_, value) = cpu_row("client cpu", &c);
        assert_eq!(value, "200% of one core (1.50 s user + 0.50 s sys)");
    }
}
