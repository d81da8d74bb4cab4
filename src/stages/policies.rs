//! What the policy stage and every deploy's commit check share (no kind calls another): the
//! pipeline's policies compiled once per run, the input document, and the audit line of a decision.

use serde_json::{Value, json};

use super::{StageContext, StageError};
use crate::git::CheckInput;
use crate::model::{PolicyStage, StageKind};
use crate::providers::policy::{Decision, PolicySet, to_value};

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
        "triggerAuthenticated": ctx.run.authenticated,
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
        if let Err((pos, why)) = crate::model::yaml::within_limits(text) {
            errors.push(json!({"file": path, "error": format!("line {}, column {}: {why}", pos.line, pos.col)}));
            continue;
        }
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
