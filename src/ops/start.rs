//! Starting a run: what refuses it (kinds this version cannot run, an empty version, an unknown
//! environment to accept), accepting rewritten histories, and the run recorded.

use std::path::Path;

use super::OpsError;
use crate::exec::Executor;
use crate::plan::Plan;
use crate::store::RunRecord;

/// A run asked for.
pub struct Request<'a> {
    /// The pipeline file, absolute (a resumed run finds relative repos from it).
    pub file: &'a Path,
    /// The file's text, stored with the run.
    pub source: &'a str,
    /// Its plan.
    pub plan: &'a Plan,
    /// The pipeline as the person knows it (its file), for messages.
    pub shown: &'a str,
    /// The version to promote.
    pub version: &'a str,
    /// Who starts it: a person the server vouched for (who needs `access.run`), or a local
    /// command's user (with their token, checked when the pipeline's users file gives tokens).
    pub caller: super::access::Caller<'a>,
    /// Environments whose rewritten (force-pushed) history is accepted first.
    pub accept_rewrite: &'a [String],
    /// The caller drives the run at once ([`Executor::drive_started`]): its lease is taken with
    /// it, in the same transaction.
    pub driven: bool,
}

/// Every reason the run may not start, one line each (with the file's position where it has one).
pub fn refusals(r: &Request<'_>) -> Vec<String> {
    let mut out = unrunnable(r.plan, r.shown);
    for env in r.accept_rewrite {
        if !r.plan.pipeline.environments.iter().any(|e| &e.name.value == env) {
            out.push(format!("promote: error: --accept-rewrite {env}: {} has no environment `{env}`", r.shown));
        }
    }
    if r.version.trim().is_empty() {
        out.push("promote: error: --version is empty".to_string());
    } else if let Err(why) = crate::model::version::check(r.version) {
        out.push(format!("promote: error: --version {why}"));
    }
    out
}

/// The stages of kinds this version of promote cannot run, one line each at its position.
fn unrunnable(plan: &Plan, shown: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in &plan.pipeline.stages {
        if let Err(why) = crate::stages::runnable(&s.kind) {
            out.push(format!(
                "{}:{}:{}: error: stage `{}` ({}): {why} by this version of promote",
                shown,
                s.kind_pos.line,
                s.kind_pos.col,
                s.name.value,
                s.kind.name()
            ));
        }
    }
    out
}

/// A run started.
pub struct Started {
    /// The run, recorded with its stages pending.
    pub run: RunRecord,
    /// One line per history accepted.
    pub accepted: Vec<String>,
}

/// Accepts the histories asked for (each in the trail), then records the run. The caller drives
/// it ([`Executor::drive`]) or leaves it to another process; with `driven`, it holds the run's
/// lease and drives it itself ([`Executor::drive_started`]): no other process takes the run
/// until that lease lapses.
pub async fn start(exec: &Executor, r: &Request<'_>) -> Result<Started, OpsError> {
    super::access::allow(&r.plan.pipeline, super::access::Permission::Run, None, &r.caller)?;
    let refused = refusals(r);
    if !refused.is_empty() {
        return Err(OpsError::Refused(refused.join("\n")));
    }
    if let Some(w) = exec.store.held(&r.plan.pipeline.name.value, r.version).await? {
        return Err(OpsError::Refused(crate::stages::held(&w)));
    }
    let base = r.file.parent().unwrap_or(Path::new("."));
    let authenticated = authenticate(r, base)?;
    let mut accepted = Vec::new();
    for name in r.accept_rewrite {
        let Some(env) = r.plan.environment(name) else { continue };
        let dest = crate::git::Destination::of(env, base);
        let writer = exec.writer.clone();
        let head = tokio::task::spawn_blocking(move || writer.accept_history(&dest))
            .await
            .map_err(|e| OpsError::Stopped(format!("the git writer stopped: {e}")))??;
        accepted.push(format!("accepted the history of `{name}` at {head}; commits that vanished stay under refs/promote/lost/ in the cache"));
        let detail = format!("{}: rewritten history of `{name}` accepted at {head}", r.plan.pipeline.name.value);
        exec.store.audit(None, None, crate::store::EntryKind::AcceptRewrite, r.caller.login(), &detail).await?;
    }
    // Held was asked above: the run is recorded without asking again.
    let run = match exec.record_start(r.file, r.source, r.plan, r.version, r.caller.login(), authenticated, None, r.driven).await? {
        Ok(run) => run,
        Err(_) => unreachable!("only a delivery can be a duplicate"),
    };
    Ok(Started { run, accepted })
}

/// Whether the starter proved who they are. Where the users file gives tokens, starting a run
/// takes the starter's token as deciding does (refused otherwise); elsewhere the name is
/// self-declared and the run is recorded unauthenticated, which never satisfies separation of
/// duties in a tokened file.
fn authenticate(r: &Request<'_>, base: &Path) -> Result<bool, OpsError> {
    let super::access::Caller::Local { user: who, token } = r.caller else { return Ok(true) };
    let users = crate::governance::users_of(&r.plan.pipeline, base).map_err(|e| OpsError::Refused(format!("the users file: {e}")))?;
    let Some(users) = users.filter(|u| u.uses_tokens()) else { return Ok(false) };
    if !users.users.contains_key(who) {
        return Err(OpsError::Refused(format!(
            "`{}` is not in the users file, which gives tokens: a run is started by one of its users, with their token in PROMOTE_TOKEN (set PROMOTE_USER to who you are)",
            who
        )));
    }
    users.authenticate(who, token).map_err(OpsError::Refused)?;
    Ok(true)
}

/// What became of a start that a verified delivery asked for (a webhook, a poll of a repo or a
/// registry): the machine's start, under the same rules as a person's but the person's own.
#[derive(Debug)]
pub enum Delivered {
    /// Recorded: the caller drives it.
    Started(RunRecord),
    /// The same delivery (or the same pipeline and version from another source) started a run
    /// already: its id, when known.
    Duplicate(Option<String>),
    /// The version is held (its watch failed): why, and what clears it.
    Held(String),
    /// Refused (a version promote does not accept, a kind this version cannot run): why.
    Refused(String),
}

/// Starts a run for a verified delivery: the version checked, the kinds runnable, the version not
/// held ([`refusals`] and `held`, as [`start`] asks them for a person), then the run recorded
/// with its delivery, once per delivery whatever the number of replicas, and with the lease of
/// the caller, which drives it at once ([`Executor::drive_started`]).
pub async fn delivered(
    exec: &Executor,
    file: &Path,
    source: &str,
    plan: &Plan,
    version: &str,
    who: &str,
    delivery: crate::store::Delivery,
) -> Result<Delivered, OpsError> {
    if let Err(why) = crate::model::version::check(version) {
        return Ok(Delivered::Refused(format!("the version `{}` is refused: {why}", crate::diag::printable(version))));
    }
    let unrunnable = unrunnable(plan, &file.display().to_string());
    if !unrunnable.is_empty() {
        return Ok(Delivered::Refused(unrunnable.join("; ")));
    }
    match exec.start_delivered(file, source, plan, version, who, true, Some(delivery), true).await {
        Ok(Ok(run)) => Ok(Delivered::Started(run)),
        Ok(Err(first)) => Ok(Delivered::Duplicate(first)),
        Err(crate::exec::ExecError::Held(why)) => Ok(Delivered::Held(why)),
        Err(e) => Err(e.into()),
    }
}
