//! Resident memory of a process from `/proc/PID/status` (`VmRSS`), to put a number on the bytes
//! a server spends per open connection.

use std::io;

use crate::cpu::Process;

/// `process`'s resident set size in bytes.
pub(crate) fn read(process: Process) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("{}/status", process.proc_dir()))?;
    parse_status(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

/// `VmRSS:\t   12345 kB` (the kernel always writes kB).
fn parse_status(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_vmrss() {
        let text = "Name:\twscope\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_status(text), Some(1234 * 1024));
        assert_eq!(parse_status("Name:\tx\n"), None);
        assert!(read(Process::Own).unwrap() > 0);
    }
}
