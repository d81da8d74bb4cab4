//! Polling registries (image triggers with `poll`): each repository's tags are listed through the
//! OCI distribution API ([`crate::providers::registry`]) every `poll`, and compared with those
//! kept in the state (`polled`, as a git trigger's refs are). The first look only learns what is
//! there; each new tag the trigger admits starts one run, oldest first, through the same record
//! as a webhook: a delivery of provider `registry` whose run is one per pipeline and version, so
//! a webhook and a poll of the same tag start one run between them.
//!
//! One process looks at a repository each time: a look is claimed in the state first
//! ([`crate::store::Store::claim_poll`], a conditional write on both backends). A 429 or 5xx backs
//! off (exponentially from `poll`, at least the registry's `Retry-After`, at most an hour), for
//! every replica ([`crate::store::Store::defer_poll`]), and says so in `/api/v1/pipelines`
//! (`polling`) and `/metrics`.

use crate::ops::start::Delivered;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Server;
use super::pipelines::Loaded;
use crate::model::triggers::{ImageTrigger, Trigger, registry_of};
use crate::providers::registry::{self, Repository};
use crate::store::Delivery;

/// The longest a busy registry is left alone.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Looks made at once by one server.
const CONCURRENT_LOOKS: usize = 16;
/// The longest one look (every page, the runs it starts) may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// What a server knows of one polled repository (`GET /api/v1/pipelines`: `polling`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollStatus {
    /// The repository, as the trigger names it.
    pub repository: String,
    /// How often it is looked at (`1m`).
    pub every: String,
    /// When this server last looked (Unix ms), if it did.
    pub last_look_at: Option<i64>,
    /// When this server looks next (Unix ms; another replica may look first).
    pub next_look_at: i64,
    /// Whether the last look found the tags.
    pub ok: Option<bool>,
    /// What went wrong at the last look, redacted.
    pub last_error: Option<String>,
    /// Looks failed in a row.
    pub failures: u32,
    /// Whether the registry asked to be left alone (429, 5xx) and is being backed off.
    pub backing_off: bool,
    /// The tags seen at the last look.
    pub tags: Option<usize>,
    /// Runs started by this server's looks.
    pub runs_started: u64,
}

/// Every polled repository's status, by pipeline then source.
#[derive(Default)]
pub struct Polls(Mutex<BTreeMap<String, BTreeMap<String, PollStatus>>>);

impl Polls {
    /// The polled repositories of `pipeline`.
    pub fn of(&self, pipeline: &str) -> Vec<PollStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(pipeline).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    fn update(&self, pipeline: &str, source: &str, f: impl FnOnce(&mut PollStatus)) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.get_mut(pipeline).and_then(|m| m.get_mut(source)) {
            f(s);
        }
    }
}

/// One followed repository between looks.
struct Follower {
    /// `None` while a look has it.
    repo: Option<Repository>,
    next: Instant,
    failures: u32,
    backing_off: bool,
}

/// What a look hands back.
struct Looked {
    source: String,
    repo: Repository,
    next: Instant,
    failures: u32,
    backing_off: bool,
}

/// The source a trigger's polls are kept under: the pipeline and the repository's URL.
pub fn source_of(pipeline: &str, i: &ImageTrigger) -> Option<String> {
    let (host, name) = registry_of(&i.repository.value).ok()?;
    let scheme = if i.insecure { "http" } else { "https" };
    Some(format!("{pipeline}\n{scheme}://{host}/v2/{name}"))
}

/// Looks at every polled repository when it is due, until the server stops.
pub(super) async fn run(server: Server) {
    let mut followers: HashMap<String, Follower> = HashMap::new();
    let mut looks: tokio::task::JoinSet<Looked> = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LOOKS));
    loop {
        while let Some(done) = looks.try_join_next() {
            if let Ok(l) = done
                && let Some(f) = followers.get_mut(&l.source)
            {
                (f.repo, f.next, f.failures, f.backing_off) = (Some(l.repo), l.next, l.failures, l.backing_off);
            }
        }
        let pipelines = server.pipelines();
        let mut live: HashSet<String> = HashSet::new();
        let now = Instant::now();
        for loaded in pipelines.by_name.values() {
            let pipeline = &loaded.plan.pipeline.name.value;
            for t in &loaded.plan.pipeline.triggers {
                let Some(i) = &t.value.image else { continue };
                let Some(every) = &i.poll else { continue };
                let Some(source) = source_of(pipeline, i) else { continue };
                let every = every.value.0.max(Duration::from_secs(1));
                live.insert(source.clone());
                let f = followers.entry(source.clone()).or_insert_with(|| {
                    let (host, name) = registry_of(&i.repository.value).expect("checked by source_of");
                    let mut all = server.polls.0.lock().unwrap_or_else(|e| e.into_inner());
                    all.entry(pipeline.clone()).or_default().insert(
                        source.clone(),
                        PollStatus {
                            repository: i.repository.value.clone(),
                            every: crate::model::Duration(every).to_string(),
                            last_look_at: None,
                            next_look_at: crate::clock::now_ms(),
                            ok: None,
                            last_error: None,
                            failures: 0,
                            backing_off: false,
                            tags: None,
                            runs_started: 0,
                        },
                    );
                    Follower { repo: Some(Repository::new(&host, &name, i.insecure)), next: now, failures: 0, backing_off: false }
                });
                if now < f.next {
                    continue;
                }
                let Some(repo) = f.repo.take() else { continue };
                let (server, loaded, trigger, source, limit) = (server.clone(), loaded.clone(), t.value.clone(), source.clone(), limit.clone());
                let (failures, backing_off) = (f.failures, f.backing_off);
                looks.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let mut state = Looked { source, repo, next: Instant::now() + every, failures, backing_off };
                    if tokio::time::timeout(LOOK_TIMEOUT, look(&server, &loaded, &trigger, every, &mut state)).await.is_err() {
                        let pipeline = &loaded.plan.pipeline.name.value;
                        tracing::warn!(pipeline = %pipeline, repository = %state.repo.url(), "a registry look took longer than {}s", LOOK_TIMEOUT.as_secs());
                        server.polls.update(pipeline, &state.source, |s| s.last_error = Some("the look timed out".into()));
                    }
                    state
                });
            }
        }
        // Triggers gone from the files are forgotten (their runs in flight end as they end).
        followers.retain(|source, f| {
            let keep = live.contains(source);
            if !keep && f.backing_off {
                let pipeline = source.split('\n').next().unwrap_or_default();
                server.exec.metrics.registry_backing_off(pipeline, -1);
            }
            keep
        });
        {
            let mut all = server.polls.0.lock().unwrap_or_else(|e| e.into_inner());
            for m in all.values_mut() {
                m.retain(|source, _| live.contains(source));
            }
            all.retain(|_, m| !m.is_empty());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = server.stop.cancelled() => {
                looks.abort_all();
                return;
            }
        }
    }
}

/// One look at one repository: claimed, listed, compared, runs started, what was seen kept.
async fn look(server: &Server, loaded: &Loaded, t: &Trigger, every: Duration, state: &mut Looked) {
    let pipeline = loaded.plan.pipeline.name.value.as_str();
    let i = t.image.as_ref().expect("an image trigger");
    let store = &server.exec.store;
    let every_ms = every.as_millis() as i64;
    match store.claim_poll(&state.source, crate::clock::now_ms() + every_ms).await {
        Ok(true) => {}
        // Another replica looks this time.
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(pipeline, error = %e, "could not claim a registry look");
            return;
        }
    }
    let started = crate::clock::now_ms();
    let result = match basic_of(loaded, t).await {
        Ok(basic) => state.repo.tags(basic.as_ref()).await,
        Err(e) => Err(e),
    };
    let outcome = match result {
        Ok(tags) => match admit(server, loaded, i, &state.source, &tags).await {
            Ok(started_runs) => Ok((tags.len(), started_runs)),
            Err(e) => Err((e, None)),
        },
        Err(e) => {
            let busy = e.is_busy().then(|| backoff(every, state.failures + 1, e.retry_after()));
            Err((e.to_string(), busy))
        }
    };
    server.exec.metrics.registry_polled(pipeline, outcome.is_err());
    let was_backing_off = state.backing_off;
    match outcome {
        Ok((count, started_runs)) => {
            state.failures = 0;
            state.backing_off = false;
            state.next = Instant::now() + every;
            server.polls.update(pipeline, &state.source, |s| {
                s.last_look_at = Some(started);
                s.ok = Some(true);
                s.last_error = None;
                s.failures = 0;
                s.backing_off = false;
                s.tags = Some(count);
                s.runs_started += started_runs;
                s.next_look_at = crate::clock::now_ms() + every_ms;
            });
        }
        Err((why, busy)) => {
            let why = crate::redact::text(&why).into_owned();
            state.failures += 1;
            state.backing_off = busy.is_some();
            let wait = busy.unwrap_or(every);
            state.next = Instant::now() + wait;
            let next_at = crate::clock::now_ms() + wait.as_millis() as i64;
            if busy.is_some() {
                tracing::warn!(pipeline, failures = state.failures, wait_s = wait.as_secs(), "a registry is busy, backing off: {why}");
                if let Err(e) = store.defer_poll(&state.source, next_at).await {
                    tracing::warn!(pipeline, error = %e, "could not defer a registry look");
                }
            } else {
                tracing::warn!(pipeline, failures = state.failures, "could not poll a registry: {why}");
            }
            server.polls.update(pipeline, &state.source, |s| {
                s.last_look_at = Some(started);
                s.ok = Some(false);
                s.last_error = Some(why);
                s.failures = state.failures;
                s.backing_off = state.backing_off;
                s.next_look_at = next_at;
            });
        }
    }
    match (was_backing_off, state.backing_off) {
        (false, true) => server.exec.metrics.registry_backing_off(pipeline, 1),
        (true, false) => server.exec.metrics.registry_backing_off(pipeline, -1),
        _ => {}
    }
}

/// How long to leave a busy registry alone after `failures` busy answers in a row: `poll`
/// doubled each time, at least its `Retry-After`, at most [`MAX_BACKOFF`].
pub fn backoff(every: Duration, failures: u32, retry_after: Option<Duration>) -> Duration {
    let doubled = every.saturating_mul(1u32 << failures.min(16));
    doubled.min(MAX_BACKOFF).max(retry_after.unwrap_or_default().min(MAX_BACKOFF)).max(every.min(MAX_BACKOFF))
}

/// The basic credential of the trigger's `auth`, read now (a rotated file applies at once).
async fn basic_of(loaded: &Loaded, t: &Trigger) -> Result<Option<crate::secret::Secret>, registry::RegistryError> {
    let (Some(auth), Some(i)) = (&t.auth, &t.image) else { return Ok(None) };
    let base = loaded.file.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
    let file = base.join(&auth.docker_config_file.value);
    let (host, _) = registry_of(&i.repository.value).map_err(|why| registry::RegistryError::Config { file: file.display().to_string(), why })?;
    tokio::task::spawn_blocking(move || registry::basic_from_config(&file, &host))
        .await
        .unwrap_or_else(|_| Err(registry::RegistryError::Config { file: String::new(), why: "could not be read".into() }))
}

/// Compares the tags with those seen before: the first look learns; each new admitted tag starts
/// one run, oldest first. Answers the runs started.
async fn admit(server: &Server, loaded: &Loaded, i: &ImageTrigger, source: &str, tags: &[String]) -> Result<u64, String> {
    let store = &server.exec.store;
    let before = store.polled(source).await.map_err(|e| e.to_string())?;
    let mut started = 0;
    let seen: HashSet<&str> = before.iter().flatten().map(|(t, _)| t.as_str()).collect();
    if before.is_some() {
        let filter = i.filter();
        for tag in filter.admitted(tags.iter().map(String::as_str).filter(|t| !seen.contains(t))) {
            // Keyed so that a webhook of the same push collides: one run per pipeline and version.
            let delivery = Delivery { provider: "registry".into(), id: format!("{}:{tag}", i.repository.value), body_hash: String::new(), origin_at: None };
            match crate::ops::start::delivered(&server.exec, &loaded.file, &loaded.source, &loaded.plan, tag, "poll", delivery).await {
                Ok(Delivered::Refused(why)) => tracing::warn!(tag = %crate::diag::printable(tag), "a registry's tag is refused: {why}"),
                Ok(Delivered::Started(run)) => {
                    tracing::info!(run = %run.id, version = tag, repository = %i.repository.value, "a registry poll found a new tag");
                    server.exec.metrics.delivery("registry", "started");
                    server.drive_started(run, loaded);
                    started += 1;
                }
                Ok(Delivered::Duplicate(_)) => {}
                Ok(Delivered::Held(why)) => tracing::info!(version = tag, "a polled tag names a held version: {why}"),
                // Not kept as seen: the next look tries again (what started is not started twice).
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    // Written only when the list changed (most looks find what the last one found).
    let unchanged = before.as_ref().is_some_and(|b| b.len() == tags.len() && tags.iter().all(|t| seen.contains(t.as_str())));
    if !unchanged {
        let now: Vec<(String, String)> = tags.iter().map(|t| (t.clone(), String::new())).collect();
        store.set_polled(source, now).await.map_err(|e| e.to_string())?;
    }
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_registry_is_left_alone_longer_each_time() {
        let m = Duration::from_secs(60);
        assert_eq!(backoff(m, 1, None), Duration::from_secs(120));
        assert_eq!(backoff(m, 3, None), Duration::from_secs(480));
        assert_eq!(backoff(m, 30, None), MAX_BACKOFF);
        assert_eq!(backoff(m, 1, Some(Duration::from_secs(900))), Duration::from_secs(900));
        assert_eq!(backoff(m, 1, Some(Duration::from_secs(86_400))), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(1), 1, None), Duration::from_secs(2));
    }
}
