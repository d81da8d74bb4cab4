//! Rolling an environment back by hand: the revert commit, its audit entry (done or not) and the
//! notification of the pipeline's channels; one function for the CLI and the server.

use std::path::Path;

use super::OpsError;
use crate::diag::did_you_mean;
use crate::git::{Destination, GitError, Outcome, Report, RollbackRequest, RollbackTarget, Writer};
use crate::plan::Plan;
use crate::store::{EntryKind, Store, WatchState};

/// What became of a rollback.
pub struct RolledBack {
    /// The writer's report, or why nothing was committed.
    pub result: Result<Report, GitError>,
    /// One line for a person (and the trail).
    pub line: String,
}

/// What to roll back, and who asks.
pub struct Request<'a> {
    /// The pipeline's plan.
    pub plan: &'a Plan,
    /// The pipeline as the person knows it (its file, or its name), for messages.
    pub shown: &'a str,
    /// The folder relative repos start from.
    pub base: &'a Path,
    /// The environment.
    pub environment: &'a str,
    /// To which state.
    pub target: RollbackTarget,
    /// Who asks: a person the server vouched for needs `access.rollback` (or the environment's
    /// own `access.rollback`, or `access.admin`).
    pub caller: super::access::Caller<'a>,
}

/// Rolls an environment back: a new commit, never a force push. The trail keeps it whether it
/// landed or not; the pipeline's channels hear of a commit. An unknown environment is
/// [`OpsError::Refused`].
pub async fn rollback(store: &Store, writer: &std::sync::Arc<Writer>, r: Request<'_>) -> Result<RolledBack, OpsError> {
    let Request { plan, shown, base, environment, target, caller } = r;
    let pipeline = &plan.pipeline;
    super::access::allow(pipeline, super::access::Permission::Rollback, Some(environment), &caller)?;
    let who = caller.login();
    let Some(env) = pipeline.environments.iter().find(|e| e.name.value == environment) else {
        let names: Vec<&str> = pipeline.environments.iter().map(|e| e.name.value.as_str()).collect();
        let hint = did_you_mean(environment, names.iter().copied());
        return Err(OpsError::Refused(format!("{shown} has no environment `{environment}`{hint} (its environments: {})", names.join(", "))));
    };
    let dest = Destination::of(env, base);
    // A protected environment is rolled back through a request.
    let request = match &env.spec.pull_request {
        Some(spec) => Some(
            crate::stages::pull_request::Request::of(
                spec,
                &pipeline.name.value,
                environment,
                &dest.branch,
                base,
                &format!("rollback-{}", crate::clock::now_ms()),
            )
            .map_err(|e| OpsError::Refused(e.to_string()))?,
        ),
        None => None,
    };
    let via = request.as_ref().map(|r| r.branch.clone());
    // A version whose watch failed is held: no rollback restores it.
    let forbidden: Vec<(String, String)> = store
        .watches(crate::store::WatchFilter { pipeline: Some(&pipeline.name.value), state: Some(WatchState::Failed), ..Default::default() })
        .await?
        .into_iter()
        .filter(|w| w.holds())
        .map(|w| {
            let why = format!("{} would restore {} ({}), which is held: {}", environment, w.value, w.version, crate::stages::held(&w));
            (w.value, why)
        })
        .collect();
    let (w, name, env_name, key) = (writer.clone(), pipeline.name.value.clone(), environment.to_string(), store.key().clone());
    let mut result = tokio::task::spawn_blocking(move || {
        let request =
            RollbackRequest { pipeline: &name, environment: &env_name, target, run: None, stage: None, seal: Some(&key), only_if: None, forbidden: &forbidden };
        match &via {
            Some(branch) => w.rollback_via_branch(&dest, branch, &request),
            None => w.rollback(&dest, &request),
        }
    })
    .await
    .map_err(|e| OpsError::Stopped(format!("the git writer stopped: {e}")))?;
    let mut line = match &result {
        Ok(report) => describe(environment, &report.outcome),
        Err(e) => format!("promote: error: {e}"),
    };
    if let (Some(r), Ok(Report { outcome: Outcome::Committed(_), .. })) = (&request, &result) {
        match crate::stages::pull_request::propose_rollback(r, environment, &format!("rollback of {environment}")).await {
            // Merged: the rollback is done, and said as any rollback is (with the request).
            Ok((Some(_), pr)) => line = format!("{line}; {pr}"),
            // Proposed: nothing is restored until someone merges it.
            Ok((None, pr)) => {
                line = pr;
                result = Err(GitError::Refused(line.clone()));
            }
            Err(e) => {
                line = format!("promote: error: the rollback commit is on {}, but its request could not be opened: {e}", r.branch);
                result = Err(GitError::Refused(line.clone()));
            }
        }
    }
    // The trail keeps every manual rollback, done or not (run `-`: no run).
    let detail = match &result {
        Ok(_) => format!("{}: {line}", pipeline.name.value),
        Err(e) => format!("{}: rollback of {environment} failed: {e}", pipeline.name.value),
    };
    let detail = crate::store::texts::vouched(detail, super::decide::vouched(&caller).as_deref());
    store.audit(None, None, EntryKind::Rollback, who, &detail).await?;
    if let Ok(Report { outcome: Outcome::Committed(_), .. }) = &result {
        // What watched the release rolled back watches no more.
        store.supersede_watches(&pipeline.name.value, environment, &format!("a rollback by {who}")).await?;
    }
    // The pipeline's channels hear of it as of a run's rollback.
    if let Ok(Report { outcome: Outcome::Committed(_), .. }) = &result {
        match crate::governance::notify::Notifier::new(&pipeline.notifications, vec![]) {
            Ok(n) => {
                let n = std::sync::Arc::new(n);
                n.send(crate::governance::notify::Note {
                    event: "rollback".into(),
                    pipeline: pipeline.name.value.clone(),
                    run: crate::store::NO_RUN.into(),
                    version: String::new(),
                    stage: None,
                    message: format!("{line} (by {who}, `promote rollback`)"),
                    link: None,
                    headline: String::new(),
                    page: None,
                    ..Default::default()
                });
                n.finish_audited(store, None).await?;
            }
            Err(e) => store.audit(None, None, EntryKind::Notification, "promote", &format!("notifications are off: {e}")).await?,
        }
    }
    Ok(RolledBack { result, line })
}

/// One line for a rollback's outcome.
pub fn describe(environment: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Committed(w) => format!(
            "rolled back {environment}: {} -> {} in commit {}{}",
            w.old_value.as_deref().unwrap_or("(absent)"),
            w.new_value,
            w.commit,
            w.undoes.map(|u| format!(" (undoes {u})")).unwrap_or_default()
        ),
        Outcome::AlreadyDone { commit } => format!("{environment} is already rolled back (commit {commit})"),
        Outcome::Unchanged { value } => format!("{environment} already holds {value}: nothing to commit"),
    }
}

/// The pipeline and environment of a trail entry [`rollback`] wrote for a rollback that committed
/// (`PIPELINE: rolled back ENV: ...`); `None` for one that did not.
pub fn parse_detail(detail: &str) -> Option<(&str, &str)> {
    crate::store::dora::rollback_target(detail)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rollbacks_trail_entry_names_its_pipeline_and_environment_only_when_it_committed() {
        assert_eq!(super::parse_detail("checkout: rolled back prod: 1.4.2 -> 1.4.1 in commit abc"), Some(("checkout", "prod")));
        assert_eq!(super::parse_detail("checkout: rollback of prod failed: refused"), None);
        assert_eq!(super::parse_detail("checkout: prod is already rolled back (commit abc)"), None);
    }
}
