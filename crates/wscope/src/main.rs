//! The `wscope` binary: `serve` runs a tracked WebSocket server with its admin API; `bench`
//! drives load against any WebSocket server; `top` watches a server live in the terminal.

use std::process::ExitCode;

use std::io::Write as _;

use clap::{Parser, Subcommand};
use wscope_core::StopSignals;

use wscope::config::{ConfigError, Listeners, ProxyArgs, ProxySettings, ServeArgs, ServeSettings};
use wscope::{demo, logging, runtime, serve};

mod top;

/// The binary's allocator: jemalloc, unless built without the `jemalloc` feature (then the
/// system's). Measured against glibc's malloc in docs/BENCHMARKS.md, "The allocator".
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Put wscope in front of any web app: WebSockets tracked and relayed, other requests
    /// reverse-proxied, to the upstream of each path's route.
    Proxy(Box<ProxyArgs>),
    /// Drive load against a WebSocket server and report throughput and latency.
    Bench(wscope_bench::BenchArgs),
    /// Watch a wscope server live in the terminal: totals, rates, busiest and idlest connections.
    Top(top::TopArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Proxy(args) => proxy(*args),
        // The clients stay on one work-stealing runtime: they are not what is measured.
        Command::Bench(args) => multi_thread().and_then(|runtime| {
            runtime
                .block_on(wscope_bench::run(args))
                .map_err(Into::into)
        }),
        Command::Top(args) => multi_thread().and_then(|runtime| runtime.block_on(top::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: it panics when stderr is closed, and the status must still be 2 or 1.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
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
            let _ = writeln!(std::io::stderr(), "{line}");
            ExitCode::from(2)
        }
    }
}

/// A multi-thread runtime with a worker per core, for the subcommands that do not serve.
fn multi_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))
}

/// The runtime a server's subcommand runs on, as `--runtime` and `--threads` say (the settings
/// are read first, so a bad one exits 2 before any thread starts).
fn server_runtime(listeners: &Listeners) -> anyhow::Result<tokio::runtime::Runtime> {
    runtime::build(listeners).map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = ServeSettings::resolve(args)?;
    server_runtime(&settings.listeners)?.block_on(async move {
        logging::init(settings.logging.log_format);
        let signal = stop_signal()?;
        let server = serve::Server::bind(&settings)?;
        server.serve(demo::app(), signal).await?;
        Ok(())
    })
}

fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let settings = ProxySettings::resolve(args.clone())?;
    server_runtime(&settings.listeners)?.block_on(async move {
        logging::init(settings.logging.log_format);
        let signal = stop_signal()?;
        let mut server = serve::Server::bind(&settings)?;
        let proxy = wscope::proxy::Proxy::new(&settings)?;
        // SIGHUP and the admin action `reload` reread the routes from the --config file.
        let reload = proxy.reload_hook(args, settings);
        let on_hangup = reload.clone();
        server.on_reload("routes", move || on_hangup.run().map(drop));
        server.serve(proxy.app().extension(reload), signal).await?;
        Ok(())
    })
}

/// The first SIGINT/SIGTERM drains; a second exits at once with 130/143, as if the signal had
/// killed the process, for an operator who will not wait for the drain deadline.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut signals =
        StopSignals::install().map_err(|e| anyhow::anyhow!("cannot handle signals: {e}"))?;
    Ok(async move {
        let first = signals.recv().await;
        tracing::info!("{first}: shutting down (send it again to exit at once)");
        tokio::spawn(async move {
            let second = signals.recv().await;
            tracing::warn!("{second} again: exiting without waiting for the drain");
            std::process::exit(second.exit_code().into());
        });
    })
}
