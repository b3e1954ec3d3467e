//! `wscope bench`: a load generator for any WebSocket server (being written; see issue 3).

use clap::Args;

/// `wscope bench` options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Server URL (`ws://127.0.0.1:8080/ws`).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("wscope bench is not built yet (url {})", args.url)
}
