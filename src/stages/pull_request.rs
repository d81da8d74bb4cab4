//! The deploy kind's pull-request path (`environments.NAME.pullRequest`): the promotion commit
//! goes on a branch `promote/PIPELINE/ENVIRONMENT/VERSION`, a request is opened on the host with
//! the run's evidence and a link to its page, newer promotions close stale requests, and the
//! stage waits (polling with backoff) until the request is merged (the merge commit is the
//! promotion) or closed (the stage fails); a pull-request webhook to `promote serve` wakes it
//! at once.

use super::{StageContext, StageError, Wait, Wake};
use crate::model::{PrMerge, PullRequest};
use crate::providers::pullrequest::{Host, Merge, PrState, PullRequests};

/// The audit entry kind that records a stage's request.
const KIND: crate::store::EntryKind = crate::store::EntryKind::PullRequest;

/// One deploy's request, on its host.
pub struct Request {
    /// The branch the promotion commit goes on.
    pub branch: String,
    /// The environment branch it merges into.
    pub base: String,
    merge: PrMerge,
    host: Host,
    client: PullRequests,
    /// The branches of this pipeline's requests into this environment: `promote/P/E/`.
    prefix: String,
    /// The host's repository (`OWNER/NAME`), lowercased: what its webhook events name.
    repo: String,
}

/// How a pull request's webhook event and the deploy waiting on it name the request:
/// `owner/name#12` (the repository lowercased: hosts treat it so).
pub fn request_key(repo: &str, number: u64) -> String {
    format!("{}#{number}", repo.to_lowercase())
}

/// A request as a deploy's output shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shown {
    /// `github`, `gitlab` or `gitea`.
    pub host: String,
    /// Its number on the host.
    pub number: u64,
    /// Its page.
    pub url: String,
    /// The branch it merges.
    pub branch: String,
}

/// Where a request stands for the deploy.
pub enum Follow {
    /// Merged: the merge commit, and what to show of the request.
    Merged(String, Shown),
    /// Not yet: wait.
    Wait(Wait),
}

impl Request {
    /// The request of the deploy of `ctx` into `env` (the token read from its variable now).
    pub fn new(spec: &PullRequest, ctx: &StageContext, env: &str, base: &str) -> Result<Request, StageError> {
        Request::of(spec, &ctx.run.pipeline, env, base, &ctx.base_dir, &ctx.run.version)
    }

    /// The request of `pipeline` into `env` on branch `promote/PIPELINE/ENV/LABEL` (a version,
    /// or `rollback-...`), with the pipeline file in `base_dir`.
    pub fn of(spec: &PullRequest, pipeline: &str, env: &str, base: &str, base_dir: &std::path::Path, label: &str) -> Result<Request, StageError> {
        let host =
            Host::parse(&spec.provider.value).ok_or_else(|| StageError::Terminal(format!("pullRequest.provider `{}` is unknown", spec.provider.value)))?;
        let api = match &spec.api {
            Some(a) => a.value.clone(),
            None => {
                PullRequests::default_api(host).map(String::from).ok_or_else(|| StageError::Terminal("pullRequest.api is required for this host".into()))?
            }
        };
        let token = match (&spec.token_env, &spec.token_file) {
            (Some(var), _) => std::env::var(&var.value).ok().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
                StageError::Terminal(format!("the token for `{env}`'s pull requests is not set: export {} (pullRequest.tokenEnv)", var.value))
            })?,
            (None, Some(file)) => {
                let path = base_dir.join(&file.value);
                crate::files::read_text(&path, crate::files::MAX_SMALL)
                    .map_err(|e| StageError::Terminal(format!("the token for `{env}`'s pull requests: {}: {}", path.display(), e.why)))?
            }
            (None, None) => return Err(StageError::Terminal("pullRequest has no tokenEnv or tokenFile".into())),
        };
        let prefix = format!("promote/{pipeline}/{env}/");
        Ok(Request {
            branch: format!("{prefix}{label}"),
            base: base.to_string(),
            merge: spec.merge,
            host,
            client: PullRequests::new(host, &api, &spec.repo.value, crate::secret::Secret::new(token)),
            prefix,
            repo: spec.repo.value.to_lowercase(),
        })
    }

    /// The request an earlier attempt of this stage opened, from the run's trail.
    pub async fn recorded(&self, ctx: &StageContext) -> Result<Option<u64>, StageError> {
        let stage = &ctx.stage().name.value;
        let events = ctx.store.events(&ctx.run.id).await?;
        Ok(events
            .iter()
            .rev()
            .filter(|e| e.kind == KIND.as_str() && e.stage.as_deref() == Some(stage) && e.detail.starts_with("opened "))
            .find_map(|e| e.detail.split_once('#').and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())))
    }

    /// Opens the request for the branch (or finds the one open), records it, and closes this
    /// environment's stale requests with a comment.
    pub async fn open(&self, ctx: &StageContext, env: &str, body: &str) -> Result<u64, StageError> {
        let host_err = |e: crate::providers::pullrequest::PrError| StageError::Transient(e.to_string());
        let pr = match self.client.find_open(&self.branch, &self.base).await.map_err(host_err)? {
            Some(pr) => pr,
            None => {
                let title = format!("promote {} {} to {env}", ctx.run.pipeline, ctx.run.version);
                self.client.open(&self.branch, &self.base, &title, body).await.map_err(host_err)?
            }
        };
        let stage = ctx.stage().name.value.clone();
        ctx.store
            .audit(
                Some(&ctx.run.id),
                Some(&stage),
                KIND,
                "promote",
                &format!("opened {} #{} for {} into `{}`: {}", self.host.noun(), pr.number, self.branch, self.base, pr.url),
            )
            .await?;
        for stale in self.client.list_open(&self.base).await.map_err(host_err)? {
            if stale.number != pr.number && stale.head.starts_with(&self.prefix) {
                let note = format!(
                    "Superseded by {} #{} ({} {}, run {}): closed by promote.",
                    self.host.noun(),
                    pr.number,
                    ctx.run.pipeline,
                    ctx.run.version,
                    ctx.run.id
                );
                self.client.comment(stale.number, &note).await.map_err(host_err)?;
                self.client.close(stale.number).await.map_err(host_err)?;
                ctx.store
                    .audit(
                        Some(&ctx.run.id),
                        Some(&stage),
                        KIND,
                        "promote",
                        &format!("closed stale {} #{} ({}): {note}", self.host.noun(), stale.number, stale.head),
                    )
                    .await?;
            }
        }
        Ok(pr.number)
    }

    /// Where request `number` stands: merged (with `merge: auto`, merged by promote when the host
    /// lets it), still open (wait, polled with backoff), or closed (the stage fails).
    pub async fn follow(&self, ctx: &StageContext, number: u64) -> Result<Follow, StageError> {
        let host_err = |e: crate::providers::pullrequest::PrError| StageError::Transient(e.to_string());
        let pr = self.client.get(number).await.map_err(host_err)?;
        let shown = Shown { host: format!("{:?}", self.host).to_lowercase(), number: pr.number, url: pr.url.clone(), branch: self.branch.clone() };
        let noun = self.host.noun();
        let mut why_not = String::new();
        match pr.state {
            PrState::Merged(sha) => return Ok(Follow::Merged(sha, shown)),
            PrState::Closed => {
                return Err(StageError::Terminal(format!("{noun} #{number} ({}) was closed without a merge: nothing was promoted", pr.url)));
            }
            PrState::Open if self.merge == PrMerge::Auto => match self.client.merge(number).await.map_err(host_err)? {
                Merge::Merged(sha) => return Ok(Follow::Merged(sha, shown)),
                Merge::NotYet(why) => why_not = format!(" ({why})"),
            },
            PrState::Open => {}
        }
        // Polled: every 2 s at first, then a quarter of the time waited so far, at most a minute.
        let waited = (crate::clock::now_ms() - ctx.started_at).max(0);
        let next = (waited / 4).clamp(2_000, 60_000);
        let who = if self.merge == PrMerge::Auto { "its checks to pass" } else { "a merge" };
        Ok(Follow::Wait(Wait {
            why: format!("{noun} #{number} waits for {who}: {}{why_not}", pr.url),
            wake: Wake::PullRequest(request_key(&self.repo, number)),
            until: Some(crate::clock::now_ms() + next),
            notify: None,
        }))
    }
}

impl Request {
    /// Opens (or finds) the request for the branch, and with `merge: auto` asks the host to merge
    /// it at once: the request, and its merge commit when merged. For what is not a deploy
    /// waiting (a rollback): nobody follows it after this.
    pub async fn propose(
        &self,
        title: &str,
        body: &str,
    ) -> Result<(crate::providers::pullrequest::Pr, Option<String>), crate::providers::pullrequest::PrError> {
        let pr = match self.client.find_open(&self.branch, &self.base).await? {
            Some(pr) => pr,
            None => self.client.open(&self.branch, &self.base, title, body).await?,
        };
        let merged = match self.merge {
            PrMerge::Auto => match self.client.merge(pr.number).await? {
                Merge::Merged(sha) => Some(sha),
                Merge::NotYet(_) => None,
            },
            PrMerge::Wait => None,
        };
        Ok((pr, merged))
    }

    /// What a person calls a request on this host.
    pub fn noun(&self) -> &'static str {
        self.host.noun()
    }
}

/// A rollback of `env` through a request: its branch (`promote/PIPELINE/ENV/rollback-LABEL`) is
/// written by the caller with [`crate::git::Writer::rollback_via_branch`]; this opens the request and
/// says, in one line, what became of it: merged (`Ok(Some(sha), line)`) or proposed.
pub async fn propose_rollback(r: &Request, env: &str, what: &str) -> Result<(Option<String>, String), String> {
    let title = format!("roll {env} back: {what}");
    let body = format!("{what}.\n\nMerging this restores the value; promote opened it (its rollback commit carries `Promote-Rollback-Of`).\n");
    match r.propose(&title, &body).await {
        Ok((pr, Some(sha))) => Ok((Some(sha.clone()), format!("{what} through {} #{} ({}), merged as {}", r.noun(), pr.number, pr.url, super::short(&sha)))),
        Ok((pr, None)) => Ok((None, format!("{what}: proposed in {} #{} ({}); merging it restores the value", r.noun(), pr.number, pr.url))),
        Err(e) => Err(e.to_string()),
    }
}

/// The request's description: the run's evidence so far (each stage before this one, its state
/// and message) and a link to the run's page.
pub async fn body(ctx: &StageContext) -> Result<String, StageError> {
    let mut text = format!("Promotion of **{}** `{}` by run `{}`.\n\n", ctx.run.pipeline, ctx.run.version, ctx.run.id);
    if let Some(url) = &ctx.public_url {
        text.push_str(&format!("Run page: {}/ui/runs/{}\n\n", url.trim_end_matches('/'), ctx.run.id));
    }
    text.push_str("| stage | state | evidence |\n| --- | --- | --- |\n");
    for s in ctx.store.stages(&ctx.run.id).await? {
        if s.name == ctx.stage().name.value || s.state == crate::store::StageState::Pending {
            continue;
        }
        let msg = s.message.as_deref().unwrap_or("").replace('|', "\\|").replace('\n', " ");
        let msg: String = msg.chars().take(300).collect();
        text.push_str(&format!("| {} | {} | {msg} |\n", s.name, s.state));
    }
    text.push_str("\nMerging this is the promotion: promote records the merge commit and carries the run on.\n");
    Ok(text)
}
