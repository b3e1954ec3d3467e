//! A `wscope serve` (or `wscope proxy`) process for tests of the binary: spawned on ports 0, its addresses read
//! from its "listening" line, its stderr kept line by line, stopped by signals, killed when
//! dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A spawned `wscope serve` and the addresses it reported.
#[derive(Debug)]
pub struct Served {
    /// The process.
    pub child: Child,
    /// The main listener's address.
    pub main: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    /// The rest of stderr, line by line.
    pub lines: mpsc::Receiver<String>,
}

impl Served {
    /// Spawns `bin serve` on ports 0 with `extra` flags.
    pub fn start(bin: &str, extra: &[&str]) -> Self {
        Self::start_with_env(bin, extra, &[])
    }

    /// Spawns `bin serve` on ports 0 with `extra` flags and `envs` set (`INSTANCE_ID` and
    /// `WSCOPE_REDIS_URL` unset).
    pub fn start_with_env(bin: &str, extra: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::spawn(bin, "serve", extra, envs)
    }

    /// Spawns `bin proxy` on ports 0 with `extra` flags (`--upstream …` among them).
    pub fn proxy(bin: &str, extra: &[&str]) -> Self {
        Self::spawn(bin, "proxy", extra, &[])
    }

    /// Spawns `bin command` on ports 0 with `extra` flags and `envs` set.
    pub fn spawn(bin: &str, command: &str, extra: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut child = Command::new(bin)
            .args([
                command,
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env_remove("INSTANCE_ID")
            // Not a cluster member unless the test says so (`--redis-url`).
            .env_remove("WSCOPE_REDIS_URL")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = wait_line(&rx, "listening", Duration::from_secs(20));
        let field = |name: &str| -> SocketAddr {
            let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
            line[start..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (main, admin) = (field("main"), field("admin"));
        Self {
            child,
            main,
            admin,
            lines: rx,
        }
    }

    /// `ws://` URL of `path` on the main listener.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.main)
    }

    /// Sends signal `sig` (`TERM`, `INT`, …).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wscope did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Served {
    /// The process's resident memory, in bytes (from `/proc/PID/status`).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next stderr line containing `needle`; panics after `within`.
pub fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line containing {needle:?} within {within:?}: {e}"),
        }
    }
}
