//! `promote probe URL`: asks a `promote serve` whether it is up (the image's HEALTHCHECK, where
//! no curl is installed): exit 0 on a 2xx answer within the timeout, 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `probe`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to ask (`http://127.0.0.1:8080/healthz`, `/readyz`).
    pub url: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s")]
    pub timeout: String,
}

/// Runs `probe`.
pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let timeout: Duration =
        a.timeout.parse::<crate::model::Duration>().map_err(|e: crate::model::DurationError| anyhow::anyhow!("--timeout {}: {e}", a.timeout))?.0;
    let rt = super::runtime()?;
    rt.block_on(async {
        let client = crate::providers::http_client();
        match tokio::time::timeout(timeout, client.get(&a.url).send()).await {
            Ok(Ok(r)) if r.status().is_success() => Ok(ExitCode::SUCCESS),
            Ok(Ok(r)) => {
                eprintln!("promote probe: {} answered {}", crate::redact::text(&a.url), r.status());
                Ok(ExitCode::FAILURE)
            }
            Ok(Err(e)) => {
                eprintln!("promote probe: {}: {}", crate::redact::text(&a.url), crate::redact::text(&e.to_string()));
                Ok(ExitCode::FAILURE)
            }
            Err(_) => {
                eprintln!("promote probe: {}: no answer within {}", crate::redact::text(&a.url), a.timeout);
                Ok(ExitCode::FAILURE)
            }
        }
    })
}
