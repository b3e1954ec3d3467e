//! Readings of a process (CPU time, RSS) at the start and end of a measurement, and what they
//! add up to: the load generator's own CPU use, and with `--pid` the server's cost.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::cpu::{self, CpuTimes, CpuUse, Process};
use super::{rss, BenchError};

/// One reading of a process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    process: Process,
    at: Instant,
    cpu: CpuTimes,
    /// Zero for this process: only the server's memory is reported.
    rss: u64,
}

impl Sample {
    /// Reads this process's CPU time (a failed read counts as zero: it is only reported).
    pub(crate) fn own() -> Self {
        Self {
            process: Process::Own,
            at: Instant::now(),
            cpu: cpu::read(Process::Own).unwrap_or_default(),
            rss: 0,
        }
    }

    /// Reads the server's CPU time and RSS; an error names `--pid`.
    pub(crate) fn server(pid: u32) -> Result<Self, BenchError> {
        let process = Process::Pid(pid);
        let err = |e: std::io::Error| BenchError::Invalid {
            flag: "--pid",
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{pid}: no such process")
            } else {
                format!("{pid}: cannot read /proc/{pid}: {e}")
            },
        };
        let cpu = cpu::read(process).map_err(err)?;
        let rss = rss::read(process).map_err(err)?;
        Ok(Self {
            process,
            at: Instant::now(),
            cpu,
            rss,
        })
    }

    /// A new reading of the same process (the previous figures if it cannot be read any more).
    pub(crate) fn again(&self) -> Self {
        let at = Instant::now();
        let cpu = cpu::read(self.process).unwrap_or(self.cpu);
        let rss = match self.process {
            Process::Own => 0,
            Process::Pid(_) => rss::read(self.process).unwrap_or(self.rss),
        };
        Self {
            process: self.process,
            at,
            cpu,
            rss,
        }
    }

    /// CPU used from `self` to `later`.
    pub(crate) fn cpu_until(&self, later: &Sample) -> CpuUse {
        CpuUse::between(
            self.cpu,
            later.cpu,
            later.at.saturating_duration_since(self.at),
        )
    }

    /// Wall time from `self` to `later`.
    pub(crate) fn wall_until(&self, later: &Sample) -> Duration {
        later.at.saturating_duration_since(self.at)
    }
}

/// The load generator's own CPU use over a measurement, and the cores it had.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCpu {
    /// CPU time and share of wall time.
    #[serde(flatten)]
    pub cpu: CpuUse,
    /// Cores available: `percent` can reach 100 × this, and near it the load generator may be
    /// what limits the measurement.
    pub cores: usize,
}

impl ClientCpu {
    pub(crate) fn new(cpu: CpuUse) -> Self {
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Busy on more than 85 % of every core: the run may have measured the load generator.
    pub fn saturated(&self) -> bool {
        self.cpu.percent >= 85.0 * self.cores as f64
    }
}

/// What the server process (`--pid`) used over a measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerUse {
    /// The server's pid.
    pub pid: u32,
    /// Resident memory at the start, in bytes.
    pub rss_before: u64,
    /// Resident memory at the end, in bytes.
    pub rss_after: u64,
    /// CPU time the server spent over the measurement.
    pub cpu: CpuUse,
}

impl ServerUse {
    /// From two readings of the server.
    pub(crate) fn between(before: &Sample, after: &Sample) -> Option<Self> {
        match before.process {
            Process::Pid(pid) => Some(Self {
                pid,
                rss_before: before.rss,
                rss_after: after.rss,
                cpu: before.cpu_until(after),
            }),
            Process::Own => None,
        }
    }

    /// RSS growth, in bytes (negative when memory was given back).
    pub fn rss_growth(&self) -> i64 {
        i64::try_from(self.rss_after).unwrap_or(i64::MAX)
            - i64::try_from(self.rss_before).unwrap_or(i64::MAX)
    }
}

/// Readings of this process and optionally the server, taken together.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    own: Sample,
    server: Option<Sample>,
}

impl Probe {
    /// Reads both now.
    pub(crate) fn start(pid: Option<u32>) -> Result<Self, BenchError> {
        Ok(Self {
            server: pid.map(Sample::server).transpose()?,
            own: Sample::own(),
        })
    }

    /// Reads both again.
    pub(crate) fn again(&self) -> Self {
        Self {
            own: self.own.again(),
            server: self.server.as_ref().map(Sample::again),
        }
    }

    /// This process's CPU use from `self` to `later`.
    pub(crate) fn own_cpu_until(&self, later: &Probe) -> CpuUse {
        self.own.cpu_until(&later.own)
    }

    /// The server's use from `self` to `later`, when `--pid` was given.
    pub(crate) fn server_until(&self, later: &Probe) -> Option<ServerUse> {
        match (&self.server, &later.server) {
            (Some(a), Some(b)) => ServerUse::between(a, b),
            _ => None,
        }
    }

    /// Wall time from `self` to `later`.
    pub(crate) fn wall_until(&self, later: &Probe) -> Duration {
        self.own.wall_until(&later.own)
    }
}
