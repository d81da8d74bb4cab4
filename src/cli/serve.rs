//! `promote serve [--listen ADDR] [--pipelines DIR]... [--reload DURATION]`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// A folder of pipeline files (repeatable; default the current folder).
    #[arg(long, value_name = "DIR")]
    pub pipelines: Vec<PathBuf>,
    /// How often the folders are read again.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub reload: String,
}

/// Runs `serve` until SIGTERM or Ctrl-C.
pub fn run(args: Args, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    let reload: crate::model::Duration = args.reload.parse().map_err(|e: crate::model::DurationError| anyhow::anyhow!("--reload {}: {e}", args.reload))?;
    let dirs = if args.pipelines.is_empty() { vec![PathBuf::from(".")] } else { args.pipelines };
    let dirs = dirs.into_iter().map(|d| std::path::absolute(&d).unwrap_or(d)).collect();
    let rt = super::runtime()?;
    rt.block_on(async {
        let exec = super::executor(state).await?;
        let listener = tokio::net::TcpListener::bind(&args.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        eprintln!("promote serve: listening on http://{}", listener.local_addr()?);
        let shutdown = async {
            super::interrupted().await;
            eprintln!("promote serve: stopping (runs stop at a durable point and resume at the next start)");
        };
        crate::server::serve(listener, exec, crate::server::Config { pipelines: dirs, reload: reload.0 }, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
