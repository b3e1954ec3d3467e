//! The `wscope` binary: `serve` runs a tracked WebSocket server with its admin API; `bench`
//! drives load against any WebSocket server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use wscope::config::{ConfigError, LogFormat, ServeArgs, ServeConfig};
use wscope::serve;

/// See, steer and load-test WebSocket connections.
#[derive(Parser, Debug)]
#[command(name = "wscope", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the tracked WebSocket server (echo, chat, health) and its admin API.
    // Boxed: the serve flags outgrow the other variants (clippy::large_enum_variant).
    Serve(Box<ServeArgs>),
    /// Drive load against a WebSocket server and report throughput and latency.
    Bench(wscope_bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Bench(args) => runtime
            .block_on(wscope_bench::run(args))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A bad setting exits as a bad flag does (clap's status); anything else with 1.
            if e.is::<ConfigError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Prints clap's help and version as they are, and its errors as one line naming the flag.
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let text = e.render().to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error: invalid arguments");
            eprintln!("{line}");
            ExitCode::from(2)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = ServeConfig::resolve(args)?;
    init_logging(cfg.log_format);
    let signal =
        serve::shutdown_signal().map_err(|e| anyhow::anyhow!("cannot handle signals: {e}"))?;
    let server = serve::Server::bind(&cfg)?;
    server.run(signal).await?;
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
