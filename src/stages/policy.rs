//! `policy`: evaluates Rego policies over the run (the input document of docs/policy.md) and the
//! environment's manifests as the next deploy will leave them; `deny` fails the stage, `warn` is
//! recorded and notified. The same policies check every deploy's commit (see `commit_check`).

pub use settings::PolicyStage;

use serde_json::{Value, json};

use super::policies::{add_change, compiled, describe, input_base};
use super::{StageContext, StageError};
use crate::git::Destination;
use crate::model::StageKind;
use crate::providers::policy::to_value;

/// Judges the run and the target environment.
pub async fn run(p: &PolicyStage, ctx: &StageContext) -> Result<Value, StageError> {
    let name = ctx.stage().name.value.clone();
    let sets = compiled(ctx).await?;
    let env = target_environment(p, ctx);
    let mut input = input_base(ctx, "stage", env.as_deref()).await?;
    if let Some(env) = &env {
        let Some(e) = ctx.plan.environment(env) else {
            return Err(StageError::Terminal(format!("`{env}` is not an environment of this pipeline")));
        };
        let dest = Destination::of(e, &ctx.base_dir);
        let value = ctx.deploy_value(e)?;
        let (writer, read) = (ctx.writer.clone(), dest.clone());
        let (head, mut manifests) = tokio::task::spawn_blocking(move || writer.manifests(&read))
            .await
            .map_err(|e| StageError::Transient(format!("reading manifests stopped: {e}")))?
            .map_err(|e| StageError::Transient(format!("reading the manifests of `{env}`: {e}")))?;
        // What the deploy will write, applied to the file it edits.
        let mut old = None;
        if let Some(m) = manifests.iter_mut().find(|(f, _)| *f == dest.file)
            && let Ok(edited) = crate::git::edit::apply(&dest.file, &m.1, dest.target.as_target(), &value)
        {
            old = edited.old_value.clone();
            m.1 = edited.text;
        }
        add_change(&mut input, &dest.file, old.as_deref(), &value, &head, &manifests);
    }
    let evaluated = {
        let input = to_value(&input);
        let index = ctx.index;
        tokio::task::spawn_blocking(move || sets.iter().find(|(i, _)| *i == index).expect("every policy stage is compiled").1.evaluate(input))
            .await
            .map_err(|e| StageError::Transient(format!("policy evaluation stopped: {e}")))?
    };
    let decision = match evaluated {
        Ok(d) => d,
        Err(e) => {
            ctx.store.audit(Some(&ctx.run.id), Some(&name), crate::store::EntryKind::Policy, "promote", &format!("policy error: {e}")).await?;
            return Err(StageError::Terminal(format!("policy error (nothing passes on an error): {e}")));
        }
    };
    ctx.store.audit(Some(&ctx.run.id), Some(&name), crate::store::EntryKind::Policy, "promote", &describe(&decision, env.as_deref())).await?;
    if !decision.warn.is_empty() {
        ctx.notify("policy-warning", Some(&name), &format!("policy warnings: {}", decision.warn.join("; ")));
    }
    let out = json!({"policy": {"environment": env, "deny": decision.deny, "warn": decision.warn}});
    if !decision.deny.is_empty() {
        return Err(StageError::Verdict { message: format!("denied by policy: {}", decision.deny.join("; ")), evidence: out });
    }
    Ok(out)
}

/// The environment a policy stage judges: its own `environment`, else the nearest deploy after
/// it, else the nearest before it.
fn target_environment(p: &PolicyStage, ctx: &StageContext) -> Option<String> {
    if let Some(e) = &p.environment {
        return Some(e.value.clone());
    }
    let stages = &ctx.plan.pipeline.stages;
    let env_of = |i: usize| match &stages[i].kind {
        StageKind::Deploy(d) => Some(d.environment.value.clone()),
        _ => None,
    };
    // The nearest deploy after it is the one of the lowest wave, the nearest before it of the highest.
    let after = (0..stages.len()).filter(|&i| env_of(i).is_some() && ctx.plan.is_upstream(ctx.index, i)).min_by_key(|&i| ctx.plan.wave_of[i]);
    let before = (0..stages.len()).filter(|&i| env_of(i).is_some() && ctx.plan.is_upstream(i, ctx.index)).max_by_key(|&i| ctx.plan.wave_of[i]);
    after.or(before).and_then(env_of)
}

impl super::Run for crate::model::PolicyStage {
    // The explicit form promises `Send`, which the engine's tasks need.
    #[allow(clippy::manual_async_fn)]
    fn run<'a>(&'a self, ctx: &'a StageContext) -> impl std::future::Future<Output = Result<super::Step, StageError>> + Send + 'a {
        async move { run(self, ctx).await.map(super::Step::Done) }
    }
    fn describe(&self, output: &serde_json::Value) -> String {
        let p = &output["policy"];
        let env = p["environment"].as_str().map(|e| format!(" for {e}")).unwrap_or_default();
        let warn: Vec<&str> = p["warn"].as_array().map(|w| w.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
        match warn.len() {
            0 => format!("allowed{env}"),
            n => format!("allowed{env}, {}: {}", crate::diag::plural(n, "warning"), warn.join("; ")),
        }
    }
}

/// The kind's settings as the pipeline file writes them under `policy:`, what the kind says of itself
/// (`model::Kind`) and its own checks (`plan::Checks`): with its runner above, the kind in one place.
mod settings {
    use serde::{Deserialize, Serialize};

    use crate::diag::{Diagnostics, plural};

    use crate::model::*;
    use crate::plan::Checks;

    /// `policy`: evaluates Rego policies; `deny` fails the stage, `warn` is recorded.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct PolicyStage {
        /// Rego files or folders, relative to the pipeline file.
        pub policies: Vec<Spanned<String>>,
        /// JSON or YAML data files, available as `data`.
        #[serde(default)]
        pub data: Vec<Spanned<String>>,
        /// The environment judged (default: the nearest deploy after this stage, else before it).
        #[serde(default)]
        pub environment: Option<Spanned<String>>,
    }

    impl Kind for PolicyStage {
        const NAME: &'static str = "policy";
        const SHAPE: (&'static str, &'static str) = ("{{\"", "\"}}");
        fn summary(&self) -> String {
            format!("policy ({})", plural(self.policies.len(), "source"))
        }
        const GATES: bool = true;
        fn policies(&self) -> Option<&PolicyStage> {
            Some(self)
        }
    }

    impl Checks for PolicyStage {
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        fn check(&self, stage: &Stage, diags: &mut Diagnostics) {
            let pol = self;
            let name = &stage.name.value;
            if pol.policies.is_empty() {
                diags.error(stage.kind_pos, format!("policy stage `{name}` lists no `policies`: name Rego files or folders"));
            }
        }
    }

    impl crate::governance::Govern for PolicyStage {
        fn govern(&self, g: &crate::governance::Governed<'_>, diags: &mut Diagnostics) {
            let _ = crate::providers::policy::PolicySet::load(g.base_dir, &self.policies, &self.data, diags);
            let p = g.pipeline;
            if let Some(env) = &self.environment
                && !p.environments.iter().any(|e| e.name.value == env.value)
            {
                let names = p.environments.iter().map(|e| e.name.value.as_str());
                diags.error(env.pos, format!("unknown environment `{}`{}", env.value, crate::diag::did_you_mean(&env.value, names)));
            }
        }
    }
}
