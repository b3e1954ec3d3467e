//! The `wscope bench` command line: a mode and its flags ([`BenchArgs`]), and [`run`], which runs
//! the mode and prints its report as a table or as JSON.

use std::io::IsTerminal;

use clap::{Args, Subcommand};

use crate::broadcast::{broadcast, BroadcastOptions};
use crate::churn::{churn, ChurnOptions};
use crate::echo::{echo, EchoOptions};
use crate::error::BenchError;
use crate::idle::{idle, IdleOptions};
use crate::report::{self, Report};

/// `wscope bench` flags: a mode and its options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What load to drive.
    #[command(subcommand)]
    pub mode: Mode,
    /// Print one JSON object instead of the table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The modes of `wscope bench`.
#[derive(Subcommand, Debug)]
pub enum Mode {
    /// C connections × W messages in flight × S bytes for T: messages/s and round-trip latency.
    Echo(EchoOptions),
    /// Open C connections and hold them: handshakes/s and (with --pid) server bytes per connection.
    Idle(IdleOptions),
    /// C workers each looping connect → echo one message → close: connections/s.
    Churn(ChurnOptions),
    /// C listeners on a chat endpoint, one sender (there or on --sender-url): fan-out latency to
    /// the last receiver.
    Broadcast(BroadcastOptions),
}

/// Runs the mode `args` names and prints its report on stdout (progress bars go to stderr when
/// it is a terminal).
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let progress = std::io::stderr().is_terminal();
    let json = args.json;
    let text = match args.mode {
        Mode::Echo(mut o) => {
            o.common.progress = progress;
            show(&echo(o).await?, json)
        }
        Mode::Idle(mut o) => {
            o.common.progress = progress;
            show(&idle(o).await?, json)
        }
        Mode::Churn(mut o) => {
            o.common.progress = progress;
            show(&churn(o).await?, json)
        }
        Mode::Broadcast(mut o) => {
            o.common.progress = progress;
            show(&broadcast(o).await?, json)
        }
    };
    println!("{text}");
    Ok(())
}

fn show<R: Report>(report: &R, json: bool) -> String {
    if json {
        report::json(report)
    } else {
        report::table(report).trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Mode {
        let argv = std::iter::once("bench").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().bench.mode
    }

    /// The defaults tests and wrappers get from `Default` are the command line's, and the ones
    /// the help and the README state.
    #[test]
    fn defaults_match_the_command_line() {
        let dbg = |m: Mode| match m {
            Mode::Echo(o) => format!("{o:?}"),
            Mode::Idle(o) => format!("{o:?}"),
            Mode::Churn(o) => format!("{o:?}"),
            Mode::Broadcast(o) => format!("{o:?}"),
        };
        let echo = EchoOptions::default();
        let idle = IdleOptions::default();
        let churn = ChurnOptions::default();
        let broadcast = BroadcastOptions::default();
        assert_eq!(dbg(parse(&["echo"])), format!("{echo:?}"));
        assert_eq!(dbg(parse(&["idle"])), format!("{idle:?}"));
        assert_eq!(dbg(parse(&["churn"])), format!("{churn:?}"));
        assert_eq!(dbg(parse(&["broadcast"])), format!("{broadcast:?}"));

        assert_eq!(echo.url, "ws://127.0.0.1:8080/ws");
        assert_eq!((echo.connections, echo.in_flight, echo.size), (100, 1, 64));
        assert_eq!(echo.duration, Duration::from_secs(10));
        assert_eq!(echo.warmup, Duration::from_secs(2));
        assert_eq!(idle.connections, 1000, "a first run fits a 1,024 fd limit");
        assert_eq!(idle.hold, Duration::from_secs(5));
        assert_eq!(churn.connections, 50);
        assert_eq!(broadcast.url, "ws://127.0.0.1:8080/ws/chat");
        assert_eq!((broadcast.connections, broadcast.messages), (1000, 100));
        assert_eq!(broadcast.sender_url, None, "the sender goes to --url");
        // The defaults several modes share.
        assert_eq!(
            (idle.url.as_str(), churn.url.as_str()),
            (echo.url.as_str(), echo.url.as_str())
        );
        let concurrency = [echo.handshake_concurrency, idle.handshake_concurrency];
        assert_eq!(concurrency, [200, 200]);
        assert_eq!(broadcast.handshake_concurrency, 200);
        assert_eq!((churn.size, broadcast.size), (64, 64));
        assert_eq!(churn.duration, Duration::from_secs(10));
        let common = echo.common;
        assert_eq!(common.connect_timeout, Duration::from_secs(10));
        assert_eq!(common.per_source, 10_000);
        assert_eq!(
            (common.timeout, common.pid, common.progress),
            (None, None, false)
        );
    }

    #[test]
    fn flags_parse_like_serve_flags() {
        let Mode::Echo(o) = parse(&[
            "echo",
            "-c",
            "7",
            "-w",
            "3",
            "-s",
            "1KiB",
            "-d",
            "500ms",
            "--warmup",
            "2m",
            "--timeout",
            "90",
            "--per-source",
            "5",
        ]) else {
            panic!("echo")
        };
        assert_eq!((o.connections, o.in_flight, o.size), (7, 3, 1024));
        assert_eq!(o.duration, Duration::from_millis(500));
        assert_eq!(o.warmup, Duration::from_secs(120));
        assert_eq!(o.common.timeout, Some(Duration::from_secs(90)));
        assert_eq!(o.common.per_source, 5);
        let Mode::Broadcast(o) = parse(&[
            "broadcast",
            "--url",
            "ws://127.0.0.1:9003/ws/chat",
            "--sender-url",
            "ws://127.0.0.1:9001/ws/chat",
        ]) else {
            panic!("broadcast")
        };
        assert_eq!(o.url, "ws://127.0.0.1:9003/ws/chat");
        assert_eq!(o.sender_url.as_deref(), Some("ws://127.0.0.1:9001/ws/chat"));
        assert!(Cli::try_parse_from(["bench", "broadcast", "--sender-url"]).is_err());
        assert!(Cli::try_parse_from(["bench", "echo", "-c", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "idle", "--hold", "soon"]).is_err());
    }
}
