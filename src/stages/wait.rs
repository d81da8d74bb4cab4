//! `wait`: soak time. A resumed run waits only what is left of the duration.

pub use settings::WaitStage;

use super::{StageContext, StageError};
use crate::clock::now_ms;

/// Sleeps until `duration` after the stage first started.
pub async fn run(w: &WaitStage, ctx: &StageContext) -> Result<serde_json::Value, StageError> {
    let total = w.duration.0;
    let elapsed = std::time::Duration::from_millis(now_ms().saturating_sub(ctx.started_at).max(0) as u64);
    if let Some(rest) = total.checked_sub(elapsed) {
        tokio::time::sleep(rest).await;
    }
    Ok(serde_json::json!({"waitedMs": total.as_millis() as u64}))
}

impl super::Run for crate::model::WaitStage {
    // The explicit form promises `Send`, which the engine's tasks need.
    #[allow(clippy::manual_async_fn)]
    fn run<'a>(&'a self, ctx: &'a StageContext) -> impl std::future::Future<Output = Result<super::Step, StageError>> + Send + 'a {
        async move { run(self, ctx).await.map(super::Step::Done) }
    }
}

/// The kind's settings as the pipeline file writes them under `wait:`, what the kind says of itself
/// (`model::Kind`) and its own checks (`plan::Checks`): with its runner above, the kind in one place.
mod settings {
    use serde::{Deserialize, Serialize};

    use crate::model::*;
    use crate::plan::Checks;

    /// `wait`: does nothing for a time (soak).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct WaitStage {
        /// How long.
        pub duration: Duration,
    }

    impl Kind for WaitStage {
        const NAME: &'static str = "wait";
        fn summary(&self) -> String {
            format!("wait {}", self.duration)
        }
    }

    impl Checks for WaitStage {}

    impl crate::governance::Govern for WaitStage {}
}
