//! `wait`: soak time. A resumed run waits only what is left of the duration.

use super::{StageContext, StageError};
use crate::clock::now_ms;
use crate::model::WaitStage;

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
