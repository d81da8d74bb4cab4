//! `deploy`: takes the environment (one promotion at a time), then writes the promotion commit
//! through the git writer. Idempotent: a resumed deploy finds its own commit.

use super::{StageContext, StageError};
use crate::git::{Destination, Outcome, Promotion};
use crate::model::DeployStage;

/// Promotes the run's version into the stage's environment.
pub async fn run(d: &DeployStage, ctx: &StageContext) -> Result<serde_json::Value, StageError> {
    let env_name = &d.environment.value;
    let env = ctx.plan.pipeline.environments.iter().find(|e| &e.name.value == env_name).expect("validated: the environment exists");
    let mut said_waiting = false;
    while let Some(holder) = ctx.store.lock_environment(env_name, &ctx.run.id).await? {
        if !said_waiting {
            ctx.waiting(&format!("environment `{env_name}` is being promoted by run {holder}")).await?;
            said_waiting = true;
        }
        tokio::time::sleep(ctx.poll).await;
    }
    if said_waiting {
        ctx.resumed().await?;
    }
    let stage = ctx.stage().name.value.clone();
    let run = ctx.run.clone();
    let image = ctx.plan.pipeline.artifact.image.value.clone();
    let pipeline = ctx.plan.pipeline.name.value.clone();
    let vars = |n: &str| -> Option<&str> {
        match n {
            "version" => Some(&run.version),
            "image" => Some(&image),
            "pipeline" => Some(&pipeline),
            "run" => Some(&run.id),
            "environment" => Some(env_name),
            "stage" => Some(&stage),
            _ => None,
        }
    };
    let value = Destination::value(&env.spec.update.value, vars).map_err(|v| StageError::Failed(format!("`${{{v}}}` has no value here")))?;
    let dest = Destination::of(env, &ctx.base_dir);
    // Everyone who approved an approval stage of this run gated this promotion.
    let mut approved_by = Vec::new();
    for (i, s) in ctx.plan.pipeline.stages.iter().enumerate() {
        if matches!(s.kind, crate::model::StageKind::Approval(_)) && upstream(&ctx.plan, i, ctx.index) {
            for decision in ctx.store.decisions(&run.id, &s.name.value).await? {
                if decision.approve && !approved_by.contains(&decision.user) {
                    approved_by.push(decision.user);
                }
            }
        }
    }
    let writer = ctx.writer.clone();
    let (run2, env2, stage2, value2) = (run.clone(), env_name.clone(), stage.clone(), value.clone());
    let pipeline2 = pipeline.clone();
    let report = tokio::task::spawn_blocking(move || {
        let p = Promotion {
            pipeline: &pipeline2,
            environment: &env2,
            run: &run2.id,
            stage: &stage2,
            version: &run2.version,
            value: &value2,
            approved_by: &approved_by,
        };
        writer.promote(&dest, &p)
    })
    .await
    .map_err(|e| StageError::Failed(format!("the git writer stopped: {e}")))?
    .map_err(|e| StageError::Failed(e.to_string()))?;
    let (outcome, commit, old) = match &report.outcome {
        Outcome::Committed(w) => ("committed", Some(w.commit.to_string()), w.old_value.clone()),
        Outcome::AlreadyDone { commit } => ("already-done", Some(commit.to_string()), None),
        Outcome::Unchanged { .. } => ("unchanged", None, None),
    };
    Ok(serde_json::json!({
        "environment": env_name, "outcome": outcome, "commit": commit, "oldValue": old, "newValue": value, "attempts": report.attempts,
    }))
}

/// Whether stage `a` is upstream of stage `b` (a path of needs leads from `a` to `b`).
fn upstream(plan: &crate::plan::Plan, a: usize, b: usize) -> bool {
    let mut stack = vec![b];
    let mut seen = vec![false; plan.needs.len()];
    while let Some(n) = stack.pop() {
        for &m in &plan.needs[n] {
            if m == a {
                return true;
            }
            if !std::mem::replace(&mut seen[m], true) {
                stack.push(m);
            }
        }
    }
    false
}
