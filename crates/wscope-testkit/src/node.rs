//! A Node.js upstream for the proxy's tests: `node server.js` from a directory holding the
//! server and its `node_modules` (installed with `npm ci`), its port read from its first line,
//! killed when dropped. Without Node or the installed modules, one `SKIPPED: …` line on stderr
//! (visible under the harness's capture) and `None` — or a panic when [`REQUIRE_VAR`] is `1`, as
//! in CI.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The variable that makes a missing Node a failure instead of a skip.
pub const REQUIRE_VAR: &str = "WSCOPE_REQUIRE_NODE";

/// A running `node server.js`.
#[derive(Debug)]
pub struct NodeUpstream {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl NodeUpstream {
    /// Starts `dir/server.js` on a port of its choosing, or skips (see the module docs).
    pub fn start_or_skip(test_name: &str, dir: &Path) -> Option<Self> {
        let require = std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1");
        let skip = |why: String| {
            assert!(
                !require,
                "{test_name}: {why}, and {REQUIRE_VAR}=1 requires it"
            );
            let _ = writeln!(
                io::stderr(),
                "SKIPPED: {test_name}: {why} (set {REQUIRE_VAR}=1 to fail instead)"
            );
            None
        };
        if !dir.join("node_modules/ws").is_dir() {
            let hint = format!("npm ci in {}", dir.display());
            return skip(format!(
                "the Node upstream's modules are not installed ({hint})"
            ));
        }
        let spawned = Command::new("node")
            .arg("server.js")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return skip(format!("node cannot be started ({e})")),
        };
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("node upstream said {line:?}"));
        Some(Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// `http://` base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for NodeUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
