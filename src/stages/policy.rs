//! `policy`: evaluates Rego policies over the run (the input document of docs/policy.md) and the
//! environment's manifests as the next deploy will leave them; `deny` fails the stage, `warn` is
//! recorded and notified. The same policies check every deploy's commit (see `commit_check`).

use serde_json::{Value, json};

use super::{StageContext, StageError};
use crate::git::{CheckInput, Destination};
use crate::model::{PolicyStage, StageKind};
use crate::providers::policy::{Decision, PolicySet, to_value};

/// Judges the run and the target environment.
pub async fn run(p: &PolicyStage, ctx: &StageContext) -> Result<Value, StageError> {
    let name = ctx.stage().name.value.clone();
    let sets = compiled(ctx).await?;
    let env = target_environment(p, ctx);
    let mut input = input_base(ctx, "stage", env.as_deref()).await?;
    if let Some(env) = &env {
        let e = ctx.plan.pipeline.environments.iter().find(|e| &e.name.value == env).expect("validated");
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
            ctx.store.audit(&ctx.run.id, Some(&name), "policy", "promote", &format!("policy error: {e}")).await?;
            return Err(StageError::Terminal(format!("policy error (nothing passes on an error): {e}")));
        }
    };
    ctx.store.audit(&ctx.run.id, Some(&name), "policy", "promote", &describe(&decision, env.as_deref())).await?;
    if !decision.warn.is_empty() {
        ctx.notify("policy-warning", Some(&name), &format!("policy warnings: {}", decision.warn.join("; ")));
    }
    let out = json!({"policy": {"environment": env, "deny": decision.deny, "warn": decision.warn}});
    if !decision.deny.is_empty() {
        return Err(StageError::Verdict { message: format!("denied by policy: {}", decision.deny.join("; ")), evidence: out });
    }
    Ok(out)
}

/// One line for the audit trail.
pub fn describe(d: &Decision, env: Option<&str>) -> String {
    let at = env.map(|e| format!(" for `{e}`")).unwrap_or_default();
    match (d.deny.is_empty(), d.warn.is_empty()) {
        (true, true) => format!("policy allowed{at}"),
        (true, false) => format!("policy allowed{at} with warnings: {}", d.warn.join("; ")),
        (false, _) => {
            format!("policy denied{at}: {}{}", d.deny.join("; "), if d.warn.is_empty() { String::new() } else { format!(" (warnings: {})", d.warn.join("; ")) })
        }
    }
}

async fn load(ctx: &StageContext, p: &PolicyStage) -> Result<PolicySet, StageError> {
    let (base, policies, data, file) = (ctx.base_dir.clone(), p.policies.clone(), p.data.clone(), ctx.run.file.clone());
    tokio::task::spawn_blocking(move || {
        let mut diags = crate::diag::Diagnostics::new(file);
        PolicySet::load(&base, &policies, &data, &mut diags).ok_or_else(|| diags.into_sorted().iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "))
    })
    .await
    .map_err(|e| StageError::Transient(format!("loading policies stopped: {e}")))?
    .map_err(|e| StageError::Terminal(format!("policies do not load: {e}")))
}

/// The compiled policy sets of a pipeline: (policy stage's index, its set).
pub type Compiled = std::sync::Arc<Vec<(usize, PolicySet)>>;

/// Every policy stage's policies of the pipeline, by stage index: compiled on first use in a run,
/// then shared by the policy stages and every deploy's commit check.
pub async fn compiled(ctx: &StageContext) -> Result<Compiled, StageError> {
    ctx.policies
        .get_or_try_init(|| async {
            let mut out = Vec::new();
            for (i, s) in ctx.plan.pipeline.stages.iter().enumerate() {
                if let StageKind::Policy(p) = &s.kind {
                    out.push((i, load(ctx, p).await?));
                }
            }
            Ok(std::sync::Arc::new(out))
        })
        .await
        .cloned()
}

/// The commit check of a deploy: every policy set over the input document with the change and
/// the manifests after it; a denial refuses the commit, warnings are returned.
pub fn commit_check<'a, I>(sets: I, base: &'a Value) -> impl Fn(&CheckInput<'_>) -> Result<Vec<String>, String> + Sync + use<'a, I>
where
    I: Iterator<Item = &'a PolicySet> + Clone + Sync,
{
    move |c: &CheckInput<'_>| {
        let mut input = base.clone();
        add_change(&mut input, c.file, c.old_value, c.new_value, &c.head, &c.manifests);
        let input = to_value(&input);
        let mut all = Decision::default();
        for set in sets.clone() {
            let d = set.evaluate(input.clone())?;
            all.deny.extend(d.deny);
            all.warn.extend(d.warn);
        }
        if all.deny.is_empty() { Ok(all.warn) } else { Err(all.deny.join("; ")) }
    }
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
    let after = (0..stages.len()).filter(|&i| env_of(i).is_some() && super::deploy::upstream(&ctx.plan, ctx.index, i)).min_by_key(|&i| ctx.plan.wave_of[i]);
    let before = (0..stages.len()).filter(|&i| env_of(i).is_some() && super::deploy::upstream(&ctx.plan, i, ctx.index)).max_by_key(|&i| ctx.plan.wave_of[i]);
    after.or(before).and_then(env_of)
}

/// The input document without the change: pipeline, run, version, image, stage, environment,
/// every stage's state and output, approvals, who triggered, the time.
pub async fn input_base(ctx: &StageContext, phase: &str, env: Option<&str>) -> Result<Value, StageError> {
    let mut stages = serde_json::Map::new();
    let mut approvals = Vec::new();
    for r in ctx.store.stages(&ctx.run.id).await? {
        if r.kind == "approval" || r.kind == "metrics" {
            for d in ctx.store.decisions(&ctx.run.id, &r.name).await? {
                approvals.push(json!({"stage": r.name, "user": d.user, "approve": d.approve, "comment": d.comment, "time": crate::clock::rfc3339(d.at)}));
            }
        }
        stages.insert(r.name.clone(), json!({"kind": r.kind, "state": r.state.as_str(), "message": r.message, "output": r.output}));
    }
    let now = jiff::Timestamp::now();
    Ok(json!({
        "phase": phase,
        "pipeline": ctx.plan.pipeline.name.value,
        "run": {"id": ctx.run.id, "triggeredBy": ctx.run.triggered_by, "startedAt": crate::clock::rfc3339(ctx.run.created_at)},
        "version": ctx.run.version,
        "image": ctx.plan.pipeline.artifact.image.value,
        "stage": ctx.stage().name.value,
        "environment": env,
        "change": null,
        "manifests": [],
        "manifestErrors": [],
        "stages": stages,
        "approvals": approvals,
        "triggeredBy": ctx.run.triggered_by,
        "time": now.to_string(),
        "timeNs": now.as_nanosecond() as i64,
    }))
}

/// Adds the change and the manifests (each YAML document of each file, parsed) to an input
/// document.
pub fn add_change(input: &mut Value, file: &str, old: Option<&str>, new: &str, head: &str, manifests: &[(String, String)]) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (path, text) in manifests {
        match serde_saphyr::from_multiple_with_options::<Value>(text, serde_saphyr::options! { strict_booleans: true }) {
            Ok(list) => {
                for (i, obj) in list.into_iter().enumerate().filter(|(_, v)| v.is_object()) {
                    docs.push(json!({
                        "file": path, "index": i,
                        "apiVersion": obj["apiVersion"], "kind": obj["kind"],
                        "name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
                        "object": obj,
                    }));
                }
            }
            Err(e) => errors.push(json!({"file": path, "error": e.to_string().lines().next().unwrap_or("").to_string()})),
        }
    }
    input["change"] = json!({"file": file, "oldValue": old, "newValue": new, "head": head});
    input["manifests"] = Value::Array(docs);
    input["manifestErrors"] = Value::Array(errors);
}
