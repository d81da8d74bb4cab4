//! Compliance: the pipeline's policies (every policy stage's set, `phase: "compliance"` in the
//! input) judging each environment's current files between promotions: when the policies
//! change, every `compliance.every`, and on drift. A violation is recorded once per
//! (environment, head, policies), audited, notified (event `compliance`) and decided like a
//! drift: accepted as an exception with a reason until an expiry (it opens again then), or
//! reverted by a new commit to the newest commit whose files the policies allowed (through a
//! pull request where the environment is protected). `action: revert` reverts without a person;
//! where no earlier commit complies, it only alerts.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::OpsError;
use super::access::Caller;
use crate::git::{Destination, Outcome, RevertFor, Writer};
use crate::model::{DriftAction, Environment, Pipeline};
use crate::plan::Plan;
use crate::providers::policy::PolicySet;
use crate::store::{Denials, Store, ViolationDecision, ViolationFilter, ViolationRecord, ViolationState};

/// How far back a revert looks for a commit the policies allow.
pub const DEPTH: usize = 200;
/// The longest an exception may last.
pub const MAX_EXCEPTION: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);
/// An exception's length when the decider names none.
pub const DEFAULT_EXCEPTION: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// How one environment stands after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// The policies allow its files.
    Compliant,
    /// They deny them, and nobody has decided (or a revert is under way).
    Violation,
    /// They deny them, under an exception that has not expired.
    Excepted,
    /// They denied them, and a revert restored allowed files.
    Reverted,
    /// Its files could not be read or judged (the line says why).
    Unjudged,
    /// Not judged: `compliance.action: ignore`.
    Ignored,
}

/// What a look at one environment found.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Judged {
    /// The environment.
    pub environment: String,
    /// The head judged (empty when it could not be read).
    pub head: String,
    /// How it stands.
    pub standing: Standing,
    /// The violation recorded now or before, if any.
    pub violation: Option<ViolationRecord>,
    /// One line for a person.
    pub line: String,
}

/// The compiled policies of one pipeline and their digest: compiled again only when a file changed.
struct Compiled {
    digest: String,
    sets: Arc<Vec<PolicySet>>,
}

/// What a server keeps between looks: each pipeline's compiled policies, and the (head,
/// policies) each environment was last found compliant at, so that a sweep judges again only
/// what changed (the fetch that tells the head is still made).
#[derive(Default)]
pub struct Sweep {
    compiled: Mutex<HashMap<String, Compiled>>,
    clean: Mutex<HashMap<(String, String), (String, String)>>,
}

impl Sweep {
    /// The digest of `plan`'s policies as their files are now (`None`: it has no policy stage).
    pub fn digest(plan: &Plan, base: &Path) -> Option<String> {
        let stages = policy_stages(&plan.pipeline);
        if stages.is_empty() {
            return None;
        }
        let sources: Vec<_> = stages.iter().flat_map(|p| p.policies.iter().cloned()).collect();
        let data: Vec<_> = stages.iter().flat_map(|p| p.data.iter().cloned()).collect();
        Some(crate::providers::policy::digest(base, &sources, &data))
    }

    fn sets(&self, plan: &Plan, base: &Path, digest: &str) -> Result<Arc<Vec<PolicySet>>, String> {
        let name = &plan.pipeline.name.value;
        if let Some(c) = self.compiled.lock().unwrap_or_else(|e| e.into_inner()).get(name)
            && c.digest == digest
        {
            return Ok(c.sets.clone());
        }
        let mut sets = Vec::new();
        for p in policy_stages(&plan.pipeline) {
            let mut diags = crate::diag::Diagnostics::new(name.clone());
            let Some(set) = PolicySet::load(base, &p.policies, &p.data, &mut diags) else {
                return Err(diags.into_sorted().iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "));
            };
            sets.push(set);
        }
        let sets = Arc::new(sets);
        self.compiled.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), Compiled { digest: digest.to_string(), sets: sets.clone() });
        Ok(sets)
    }
}

fn policy_stages(p: &Pipeline) -> Vec<&crate::model::PolicyStage> {
    p.stages.iter().filter_map(|s| s.kind.policies()).collect()
}

/// The input document of a compliance judgement (docs/policy.md, `phase: "compliance"`).
fn input(pipeline: &Pipeline, env: &Environment, value: Option<&str>) -> Value {
    let now = jiff::Timestamp::now();
    json!({
        "phase": "compliance",
        "pipeline": pipeline.name.value,
        "run": null,
        "version": value,
        "image": pipeline.artifact.image.value,
        "stage": null,
        "environment": env.name.value,
        "stages": {},
        "approvals": [],
        "triggeredBy": null,
        "triggerAuthenticated": false,
        "time": now.to_string(),
        "timeNs": now.as_nanosecond() as i64,
    })
}

/// Every set's denials of `files` (an environment's YAML files at `head`).
fn judge(sets: &[PolicySet], base: &Value, dest: &Destination, head: &str, files: &[(String, String)]) -> Result<Vec<String>, String> {
    let mut input = base.clone();
    let value =
        files.iter().find(|(f, _)| *f == dest.file).and_then(|(_, text)| crate::git::edit::read(&dest.file, text, dest.target.as_target()).ok().flatten());
    crate::stages::policies::add_change(&mut input, &dest.file, None, value.as_deref().unwrap_or(""), head, files);
    let input = crate::providers::policy::to_value(&input);
    let mut deny = Vec::new();
    for set in sets {
        deny.extend(set.evaluate(input.clone())?.deny);
    }
    Ok(deny)
}

/// Whether `v` is an exception in force under the policies `digest` that names every one of
/// `deny` (the same files' denials, whatever commit they are at now).
fn covers(v: &ViolationRecord, digest: &str, deny: &[String], now: i64) -> bool {
    v.state == ViolationState::Accepted && v.policies == digest && v.until.is_some_and(|u| u > now) && deny.iter().all(|d| v.deny.0.contains(d))
}

/// The denials of `deny` that no exception in force of `environment` names (for a drift's
/// judgement: a drift is not reverted for what a person excepted).
pub async fn unexcepted(store: &Store, pipeline: &str, environment: &str, deny: Vec<String>) -> Result<Vec<String>, OpsError> {
    if deny.is_empty() {
        return Ok(deny);
    }
    let now = crate::clock::now_ms();
    let filter = ViolationFilter { pipeline: Some(pipeline), environment: Some(environment), state: Some(ViolationState::Accepted), id: None };
    let excepted: Vec<ViolationRecord> = store.violations(filter).await?.into_iter().filter(|v| v.until.is_some_and(|u| u > now)).collect();
    Ok(deny.into_iter().filter(|d| !excepted.iter().any(|v| v.deny.0.contains(d))).collect())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

/// Where a look is asked from, and what it tells.
pub struct Look<'a> {
    /// The state.
    pub store: &'a Store,
    /// The git writer.
    pub writer: &'a Arc<Writer>,
    /// The pipeline.
    pub plan: &'a Plan,
    /// Its file's folder (relative repos and policies).
    pub base: &'a Path,
    /// The server's public URL, the base of the notes' links.
    pub public_url: Option<&'a str>,
    /// Only this environment (`None`: every one).
    pub only: Option<&'a str>,
}

/// Judges every environment of the pipeline (whose `compliance.action` is not `ignore`) by its
/// policies: records each new violation (with its entry and a `compliance` note), reverts it at
/// once where the action says `revert`, opens again an exception that expired, and resolves the
/// violations of an environment whose files now comply. `sweep` keeps compiled policies and the
/// environments found clean between looks.
pub async fn check(look: &Look<'_>, sweep: &Sweep) -> Result<Vec<Judged>, OpsError> {
    let Look { store, plan, base, only, .. } = *look;
    let pipeline = &plan.pipeline;
    let name = pipeline.name.value.clone();
    let Some(digest) = Sweep::digest(plan, base) else { return Ok(Vec::new()) };
    let sets = sweep.sets(plan, base, &digest).map_err(|e| OpsError::Refused(format!("{name}: the policies do not load: {e}")))?;
    let recorded = store.violations(ViolationFilter { pipeline: Some(&name), ..Default::default() }).await?;
    let now = crate::clock::now_ms();
    let envs: Vec<&Environment> = pipeline.environments.iter().filter(|e| only.is_none_or(|o| o == e.name.value)).collect();
    let mut out = Vec::with_capacity(envs.len());
    for chunk in envs.chunks(PARALLEL) {
        let mut judging = Vec::with_capacity(chunk.len());
        for env in chunk {
            judging.push(one(look, sweep, &sets, &digest, &recorded, now, env));
        }
        for judged in futures_util::future::join_all(judging).await {
            out.push(judged?);
        }
    }
    Ok(out)
}

/// Environments judged at once (their fetches and evaluations overlap).
const PARALLEL: usize = 8;

/// Judges one environment (see [`check`]).
async fn one(
    look: &Look<'_>,
    sweep: &Sweep,
    sets: &Arc<Vec<PolicySet>>,
    digest: &str,
    recorded: &[ViolationRecord],
    now: i64,
    env: &Environment,
) -> Result<Judged, OpsError> {
    let Look { store, writer, plan, base, public_url, .. } = *look;
    let pipeline = &plan.pipeline;
    let name = pipeline.name.value.clone();
    let digest = digest.to_string();
    let env_name = env.name.value.clone();
    let spec = pipeline.compliance_of(env);
    if spec.action == DriftAction::Ignore {
        return Ok(Judged {
            environment: env_name.clone(),
            head: String::new(),
            standing: Standing::Unjudged,
            violation: None,
            line: format!("{env_name}: not judged (compliance.action: ignore)"),
        });
    }
    let dest = Destination::of(env, base);
    let key = (name.clone(), env_name.clone());
    let mine: Vec<&ViolationRecord> = recorded.iter().filter(|v| v.environment == env_name).collect();
    // Found compliant at a head under these policies: the remote's refs (as `git ls-remote`)
    // say whether the head moved; unmoved, nothing is fetched or judged again.
    let clean = sweep.clean.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
    if let Some((head, judged_by)) = clean
        && judged_by == digest
        && !mine.iter().any(|v| v.state.is_open())
    {
        let (w, remote, want) = (writer.clone(), dest.remote.clone(), format!("refs/heads/{}", dest.branch));
        let now_at =
            tokio::task::spawn_blocking(move || w.list_refs(&remote).map(|refs| refs.into_iter().find(|(r, _)| *r == want).map(|(_, o)| o.to_string())))
                .await
                .map_err(|e| OpsError::Stopped(format!("the git writer stopped: {e}")))?;
        if let Ok(Some(now_at)) = now_at
            && now_at == head
        {
            return Ok(Judged {
                environment: env_name.clone(),
                standing: Standing::Compliant,
                violation: None,
                line: format!("{env_name}: compliant (head {})", short(&head)),
                head,
            });
        }
    }
    let (w, d2) = (writer.clone(), dest.clone());
    let read = tokio::task::spawn_blocking(move || w.manifests(&d2)).await.map_err(|e| OpsError::Stopped(format!("the git writer stopped: {e}")))?;
    let (head, files) = match read {
        Ok(x) => x,
        Err(e) => {
            return Ok(Judged {
                environment: env_name.clone(),
                head: String::new(),
                standing: Standing::Unjudged,
                violation: None,
                line: format!("{env_name}: cannot be read: {e}"),
            });
        }
    };
    let base_input = input(pipeline, env, None);
    let (s2, d3, h2) = (sets.clone(), dest.clone(), head.clone());
    let denied = tokio::task::spawn_blocking(move || judge(&s2, &base_input, &d3, &h2, &files))
        .await
        .map_err(|e| OpsError::Stopped(format!("the policies stopped: {e}")))?;
    let deny = match denied {
        Ok(d) => d,
        Err(why) => {
            store
                .audit(None, None, crate::store::EntryKind::Policy, "promote", &format!("{name}: compliance of {env_name} could not be judged: {why}"))
                .await?;
            return Ok(Judged {
                environment: env_name.clone(),
                head,
                standing: Standing::Unjudged,
                violation: None,
                line: format!("{env_name}: could not be judged: {why}"),
            });
        }
    };
    // An exception still in force that names every denial of these files covers them, whatever
    // the head: a later commit (a README, a promotion) does not undo a person's exception.
    let covering = mine.iter().find(|v| v.head != head && covers(v, &digest, &deny, now)).map(|v| (*v).clone());
    // What was open of this environment at another head, or under other policies, is over.
    for v in mine.iter().filter(|v| {
        (v.head != head || v.policies != digest)
            && matches!(v.state, ViolationState::Open | ViolationState::Accepted)
            && covering.as_ref().is_none_or(|c| c.id != v.id)
    }) {
        let why = format!("{env_name} is at head {} now, judged by the policies as they are", short(&head));
        store
            .decide_violation(
                &v.id,
                v.state,
                ViolationDecision { state: ViolationState::Resolved, user: "promote", reason: Some(&why), until: None, revert_to: None, via: None },
            )
            .await?;
    }
    if deny.is_empty() {
        sweep.clean.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (head.clone(), digest.clone()));
        return Ok(Judged {
            environment: env_name.clone(),
            standing: Standing::Compliant,
            violation: None,
            line: format!("{env_name}: compliant (head {})", short(&head)),
            head,
        });
    }
    sweep.clean.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    let known = mine.iter().find(|v| v.head == head && v.policies == digest).map(|v| (*v).clone());
    if let (None, Some(c)) = (&known, covering) {
        let line = format!(
            "{env_name}: {} covered by the exception of violation {} ({} until {})",
            c.deny.0.join("; "),
            c.id,
            c.decided_by.as_deref().unwrap_or("?"),
            crate::clock::rfc3339(c.until.unwrap_or(0))
        );
        return Ok(Judged { environment: env_name, head, standing: Standing::Excepted, violation: Some(c), line });
    }
    let (mut v, fresh) = match known {
        Some(v) if v.state == ViolationState::Accepted && v.until.is_some_and(|u| u > now) => {
            let line = format!(
                "{env_name}: violation {} accepted as an exception by {} until {}",
                v.id,
                v.decided_by.as_deref().unwrap_or("?"),
                crate::clock::rfc3339(v.until.unwrap_or(0))
            );
            return Ok(Judged { environment: env_name, head, standing: Standing::Excepted, violation: Some(v), line });
        }
        Some(mut v) if matches!(v.state, ViolationState::Accepted | ViolationState::Resolved) => {
            // An exception that expired, or a violation resolved (the policies or the head had
            // moved on) whose head and policies are back: it opens again, and is told again.
            let why = if v.state == ViolationState::Accepted {
                format!("the exception ended {}", crate::clock::rfc3339(v.until.unwrap_or(0)))
            } else {
                format!("{env_name} is at head {} again, which the policies deny again", short(&head))
            };
            if store
                .decide_violation(
                    &v.id,
                    v.state,
                    ViolationDecision { state: ViolationState::Open, user: "promote", reason: Some(&why), until: None, revert_to: None, via: None },
                )
                .await?
            {
                v.state = ViolationState::Open;
                v.reason = Some(why);
                (v, true)
            } else {
                (v, false)
            }
        }
        Some(v) => (v, false),
        None => {
            let v = ViolationRecord {
                id: format!("c-{}", ulid::Ulid::new()),
                pipeline: name.clone(),
                environment: env_name.clone(),
                head: head.clone(),
                policies: digest.clone(),
                deny: Denials(deny.clone()),
                state: ViolationState::Open,
                decided_by: None,
                reason: None,
                until: None,
                revert_to: None,
                // Now, after the resolutions above: the trail's times stay in order.
                at: crate::clock::now_ms(),
                decided_at: None,
                seal: None,
            };
            match store.record_violation(v.clone()).await? {
                // Another process recorded it first: it tells of it.
                Some(first) => (store.violation(&first).await?.unwrap_or(v), false),
                None => (v, true),
            }
        }
    };
    let mut line = format!("{env_name}: violation {}: {}", v.id, v.deny.0.join("; "));
    if !fresh {
        line.push_str(&format!(" ({}, seen before)", v.state));
        let standing = if v.state == ViolationState::Reverted { Standing::Reverted } else { Standing::Violation };
        return Ok(Judged { environment: env_name, head, standing, violation: Some(v), line });
    }
    let notifier = notify(pipeline, &v, public_url);
    let mut standing = Standing::Violation;
    if spec.action == DriftAction::Revert {
        match revert(&Reverting { store, writer, plan, base, env, v: &v, user: "promote", reason: "compliance.action: revert", via: None }).await {
            Ok((done, to)) => {
                line.push_str(&format!("; reverted at once: {done}"));
                v.state = ViolationState::Reverted;
                v.revert_to = to;
                standing = Standing::Reverted;
            }
            Err(e) => line.push_str(&format!("; not reverted: {e}")),
        }
    } else {
        line.push_str(&format!("; waiting for a decision: promote compliance accept|revert {} --as USER", v.id));
    }
    if let Some(n) = notifier {
        n.finish_audited(store, None).await?;
    }
    Ok(Judged { environment: env_name, head, standing, violation: Some(v), line })
}

/// Tells the pipeline's channels of violation `v`, linking its page.
fn notify(pipeline: &Pipeline, v: &ViolationRecord, public_url: Option<&str>) -> Option<Arc<crate::governance::notify::Notifier>> {
    let n = Arc::new(crate::governance::notify::Notifier::new(&pipeline.notifications, vec![]).ok()?.linked(public_url));
    let name = &pipeline.name.value;
    n.send(crate::governance::notify::Note {
        event: "compliance".into(),
        pipeline: name.clone(),
        run: crate::store::NO_RUN.into(),
        version: String::new(),
        stage: None,
        message: format!("compliance violation {} in {}", v.id, v.describe()),
        headline: format!("{name} in {} breaks the company's policies: make an exception or put it back?", v.environment),
        page: Some(format!("/ui/compliance/{}", v.id)),
        ..Default::default()
    });
    Some(n)
}

struct Reverting<'a> {
    store: &'a Store,
    writer: &'a Arc<Writer>,
    plan: &'a Plan,
    base: &'a Path,
    env: &'a Environment,
    v: &'a ViolationRecord,
    user: &'a str,
    reason: &'a str,
    via: Option<&'a str>,
}

/// Reverts a violation: claimed (`reverting`) first, then a new commit restoring the newest
/// commit's files that the policies allow (through a request where the environment is
/// protected), then recorded `reverted`. Where no earlier commit complies, or the revert fails,
/// it is open again and the error says why. (line, the commit restored.)
async fn revert(r: &Reverting<'_>) -> Result<(String, Option<String>), OpsError> {
    let Reverting { store, writer, plan, base, env, v, user, reason, via } = *r;
    let claim = ViolationDecision { state: ViolationState::Reverting, user, reason: Some(reason), until: None, revert_to: None, via };
    // Open, or an exception ended early by a person.
    let from = if v.state == ViolationState::Accepted { ViolationState::Accepted } else { ViolationState::Open };
    if !store.decide_violation(&v.id, from, claim).await? {
        let now = store.violation(&v.id).await?;
        return Err(OpsError::Conflict(format!(
            "violation {} is {} already{}",
            v.id,
            now.as_ref().map_or("decided".into(), |n| n.state.to_string()),
            now.and_then(|n| n.decided_by).map(|u| format!(" (by {u})")).unwrap_or_default()
        )));
    }
    let reopen = |why: String| async move {
        store
            .decide_violation(
                &v.id,
                ViolationState::Reverting,
                ViolationDecision { state: ViolationState::Open, user, reason: Some(&why), until: None, revert_to: None, via },
            )
            .await?;
        Err::<(String, Option<String>), OpsError>(OpsError::Refused(why))
    };
    let digest = Sweep::digest(plan, base).unwrap_or_default();
    let sets = match Sweep::default().sets(plan, base, &digest) {
        Ok(s) => s,
        Err(e) => return reopen(format!("the policies do not load: {e}")).await,
    };
    let dest = Destination::of(env, base);
    // The value the environment's file holds now, and the one the allowed files hold: a revert
    // that also takes the release back says so.
    let value_in = |d: &Destination, files: &[(String, String)]| {
        files.iter().find(|(f, _)| *f == d.file).and_then(|(_, text)| crate::git::edit::read(&d.file, text, d.target.as_target()).ok().flatten())
    };
    let (w, d2, base_input) = (writer.clone(), dest.clone(), input(&plan.pipeline, env, None));
    let found = tokio::task::spawn_blocking(move || {
        let now_value = w.manifests(&d2).ok().and_then(|(_, files)| value_in(&d2, &files));
        let mut then_value = None;
        let found = w.newest_allowed(&d2, DEPTH, |commit, files| {
            let ok = judge(&sets, &base_input, &d2, commit, files).map(|d| d.is_empty());
            if matches!(ok, Ok(true)) {
                then_value = value_in(&d2, files);
            }
            ok
        });
        (found, now_value, then_value)
    })
    .await
    .map_err(|e| OpsError::Stopped(format!("the git writer stopped: {e}")))?;
    let (found, now_value, then_value) = found;
    let to = match found {
        Ok(Ok(Some(to))) => to,
        Ok(Ok(None)) => {
            return reopen(format!(
                "no earlier commit of {} (the last {DEPTH}) has files the policies allow: nothing to revert to, it stays open",
                env.name.value
            ))
            .await;
        }
        Ok(Err(why)) => return reopen(format!("an earlier commit could not be judged: {why}")).await,
        Err(e) => return reopen(format!("the history of {} cannot be read: {e}", env.name.value)).await,
    };
    let pipeline = &plan.pipeline.name.value;
    let request = match &env.spec.pull_request {
        Some(spec) => match crate::stages::pull_request::Request::of(
            spec,
            pipeline,
            &env.name.value,
            &dest.branch,
            base,
            &format!("compliance-{}", crate::clock::now_ms()),
        ) {
            Ok(r) => Some(r),
            Err(e) => return reopen(e.to_string()).await,
        },
        None => None,
    };
    let (w, key, d2, p, e, to2, branch) =
        (writer.clone(), store.key().clone(), dest.clone(), pipeline.clone(), env.name.value.clone(), to.clone(), request.as_ref().map(|r| r.branch.clone()));
    let written = tokio::task::spawn_blocking(move || match &branch {
        Some(b) => w.revert_to_via_branch(&d2, b, &key, &p, &e, &to2, RevertFor::Compliance),
        None => w.revert_to(&d2, &key, &p, &e, &to2, RevertFor::Compliance),
    })
    .await
    .map_err(|e| OpsError::Stopped(format!("the git writer stopped: {e}")))?;
    let report = match written {
        Ok(r) => r,
        Err(e) => return reopen(format!("the revert failed: {e}")).await,
    };
    let mut done = match &report.outcome {
        Outcome::Committed(w) => format!("commit {} restores the files of {}", short(&w.commit.to_string()), short(&to)),
        Outcome::AlreadyDone { commit } => format!("already restored in {}", short(&commit.to_string())),
        Outcome::Unchanged { .. } => format!("the branch already holds the files of {}", short(&to)),
    };
    if let (Some(r), Outcome::Committed(_)) = (&request, &report.outcome) {
        match crate::stages::pull_request::propose_rollback(r, &env.name.value, &format!("compliance violation {}", v.id)).await {
            Ok((_, pr)) => done = pr,
            Err(e) => return reopen(format!("the revert commit is on {}, but its request could not be opened: {e}", r.branch)).await,
        }
    }
    if let (Some(a), Some(b)) = (&now_value, &then_value)
        && a != b
    {
        done = format!("{done}; {} goes from {a} back to {b} (the newest allowed files are from before that release: promote the fix again)", dest.file);
    }
    let why = format!("{reason}; {done}");
    store
        .decide_violation(
            &v.id,
            ViolationState::Reverting,
            ViolationDecision { state: ViolationState::Reverted, user, reason: Some(&why), until: None, revert_to: Some(&to), via },
        )
        .await?;
    Ok((done, Some(to)))
}

/// A person's decision on a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the files as an exception until this time (Unix ms).
    Accept {
        /// The exception's end.
        until: i64,
    },
    /// Revert to the newest commit the policies allow.
    Revert,
}

/// Who decides what.
pub struct Decision<'a> {
    /// The violation.
    pub id: &'a str,
    /// Accept or revert.
    pub verdict: Verdict,
    /// Why (required to accept).
    pub reason: Option<&'a str>,
    /// Who: the environment's `drift.approvers` or the pipeline's admins (through the server), or
    /// a local command's user (the approvers; none listed: any user of the users file).
    pub caller: Caller<'a>,
}

/// Accepts (an exception with a reason and an end) or reverts an open violation of `plan`'s
/// pipeline. Of concurrent decisions exactly one is taken ([`OpsError::Conflict`] for the others).
pub async fn decide(store: &Store, writer: &Arc<Writer>, plan: &Plan, base: &Path, d: &Decision<'_>) -> Result<String, OpsError> {
    let refuse = |m: String| Err(OpsError::Refused(m));
    let Some(v) = store.violation(d.id).await? else {
        return refuse(format!("no compliance violation `{}` (promote compliance list shows them)", crate::diag::printable(d.id)));
    };
    if v.pipeline != plan.pipeline.name.value {
        return refuse(format!("violation {} is of pipeline {}, not {}", v.id, v.pipeline, plan.pipeline.name.value));
    }
    let Some(env) = plan.environment(&v.environment) else {
        return refuse(format!("pipeline {} has no environment `{}` any more", v.pipeline, v.environment));
    };
    let users = crate::governance::users_of(&plan.pipeline, base).map_err(|e| OpsError::Refused(format!("the users file: {e}")))?;
    match d.caller {
        Caller::Person(_) => {
            let what = format!("decide compliance in `{}`", env.name.value);
            super::access::allow_listed(&plan.pipeline, &env.spec.drift.approvers, "drift.approvers", &what, &d.caller)?;
        }
        Caller::Local { user, .. } => {
            if let Err(why) = super::drift::may_decide(env, users.as_ref(), user) {
                return refuse(why.replacen("decide drift", "decide compliance", 1));
            }
            super::decide::prove(&d.caller, users.as_ref())?;
        }
    }
    let ending_exception = v.state == ViolationState::Accepted && d.verdict == Verdict::Revert;
    if v.state != ViolationState::Open && !ending_exception {
        return Err(OpsError::Conflict(format!(
            "violation {} is {} already{}",
            v.id,
            v.state,
            v.decided_by.as_deref().map(|u| format!(" (by {u})")).unwrap_or_default()
        )));
    }
    if d.reason.is_some_and(|r| r.len() > super::decide::MAX_REASON) {
        return refuse(format!("the reason is at most {} bytes", super::decide::MAX_REASON));
    }
    let user = d.caller.login();
    let via = super::decide::vouched(&d.caller);
    match d.verdict {
        Verdict::Accept { until } => {
            let Some(reason) = d.reason.filter(|r| !r.trim().is_empty()) else {
                return refuse("an exception needs a reason (why these files may break the policies for now)".into());
            };
            let now = crate::clock::now_ms();
            if until <= now {
                return refuse("an exception ends in the future".into());
            }
            if until - now > MAX_EXCEPTION.as_millis() as i64 {
                return refuse("an exception lasts at most 366 days: it is decided again then".into());
            }
            let to =
                ViolationDecision { state: ViolationState::Accepted, user, reason: Some(reason), until: Some(until), revert_to: None, via: via.as_deref() };
            if !store.decide_violation(&v.id, ViolationState::Open, to).await? {
                return Err(OpsError::Conflict(format!("violation {} was decided already", v.id)));
            }
            Ok(format!("violation {} in {} accepted by {user} as an exception until {}", v.id, v.environment, crate::clock::rfc3339(until)))
        }
        Verdict::Revert => {
            let reason = d.reason.filter(|r| !r.trim().is_empty()).unwrap_or("reverted by a person");
            let (done, _) = revert(&Reverting { store, writer, plan, base, env, v: &v, user, reason, via: via.as_deref() }).await?;
            Ok(format!("violation {} in {} reverted by {user}: {done}", v.id, v.environment))
        }
    }
}
