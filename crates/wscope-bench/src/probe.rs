//! Readings of this process and of the server (`--pid`) taken together at the start and end of a
//! measurement window, and what they add up to ([`Usage`]): the load generator's CPU, the
//! server's CPU and memory, all over the same window.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cpu::{self, CpuTimes, CpuUse, Process};
use crate::error::BenchError;
use crate::rss;

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
    fn wall_until(&self, later: &Sample) -> Duration {
        later.at.saturating_duration_since(self.at)
    }
}

/// The load generator's own CPU use over a measurement, and the cores it had.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCpu {
    /// CPU time and share of wall time (`percent` is in % of one core).
    #[serde(flatten)]
    pub cpu: CpuUse,
    /// Cores available: `percent` (of one core) can reach 100 × this, and near it the load
    /// generator may be what limits the measurement.
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
    /// Resident memory at the start of the window, in bytes.
    pub rss_before: u64,
    /// Resident memory at the end of the window (`idle`: at the end of the hold), in bytes.
    pub rss_after: u64,
    /// CPU time the server spent over the window (`percent` is in % of one core).
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
    /// Reads both now; an unreadable `--pid` is an error naming it.
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

    /// What both used from `self` to `later`: one window for the client and the server.
    pub(crate) fn usage_until(&self, later: &Probe) -> Usage {
        Usage {
            cpu_window_secs: self.own.wall_until(&later.own).as_secs_f64(),
            client_cpu: ClientCpu::new(self.own.cpu_until(&later.own)),
            server: match (&self.server, &later.server) {
                (Some(a), Some(b)) => ServerUse::between(a, b),
                _ => None,
            },
        }
    }
}

/// The load generator's and the server's use over one measurement window; reports flatten it
/// into `cpuWindowSecs`, `clientCpu` and `server`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Wall time the CPU figures of both processes cover, in seconds.
    pub cpu_window_secs: f64,
    /// The load generator's CPU use over the window.
    pub client_cpu: ClientCpu,
    /// The server's CPU and memory over the window (`--pid`).
    pub server: Option<ServerUse>,
}

impl Usage {
    /// The same figures with the server's memory read again at `later` (`idle` measures CPU
    /// over the opening but memory at the end of the hold).
    pub(crate) fn with_rss_at(mut self, later: &Probe) -> Self {
        if let (Some(server), Some(sample)) = (self.server.as_mut(), later.server.as_ref()) {
            server.rss_after = sample.rss;
        }
        self
    }
}
