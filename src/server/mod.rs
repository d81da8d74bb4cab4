//! `promote serve`: webhooks that start runs, the API, the runner's metrics; the executor in
//! process, driving every run it starts or finds interrupted.
//!
//! [`serve`] takes its listener and its shutdown as arguments (tests run it on 127.0.0.1:0). On
//! shutdown it stops accepting, cancels the runs it drives (each stops at a durable point and is
//! resumed by the next start, by this or another replica) and waits for the audit heads.

mod api;
pub mod auth;
mod compliance;
mod hooks;
mod imagepoll;
pub mod listen;
pub mod oidc;
mod openapi;
mod pipelines;
mod poll;
mod shapes;
pub mod ui;
pub mod verify;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

pub use hooks::{Event, MAX_BODY, parse, version_for};
pub use pipelines::Pipelines;

use crate::exec::Executor;
use crate::store::RunState;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listener failed.
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
    /// The state failed at start.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What a server serves.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Folders of pipeline files.
    pub pipelines: Vec<PathBuf>,
    /// Git repos of pipeline files (`--pipelines URL`).
    pub repos: Vec<PipelinesRepo>,
    /// How often the folders are read again and the repos fetched (default 10 s).
    pub reload: Duration,
    /// How often every environment is looked at for drift (besides each push webhook to its
    /// repo); zero: every minute.
    pub drift_poll: Duration,
    /// Proxies whose identity headers (`X-Forwarded-User`, `X-Forwarded-Email`) sign a person in
    /// to the web pages; from anyone else those headers are dropped before any handler sees them.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The directory of people (`--users FILE`), read again at every reload; `None`: the loaded
    /// pipelines' users files merged ([`crate::governance::Directory::merge`]).
    pub users: Option<PathBuf>,
    /// How connections are bounded (a cap, header and request time limits).
    pub limits: listen::Limits,
    /// Single sign-on by OpenID Connect (`--oidc-issuer`, `--oidc-client-id`, ...): the pages'
    /// "Sign in with SSO" and the API's bearer JWTs.
    pub oidc: Option<Arc<oidc::Oidc>>,
}

/// A Git repo of pipeline files: its branch's files are written out to `checkout` and loaded
/// from there; fetched again at every reload, and at once when a verified push to it arrives.
#[derive(Debug, Clone)]
pub struct PipelinesRepo {
    /// The repo (a URL, or a path).
    pub url: String,
    /// The branch (`URL#BRANCH`; default `main`).
    pub branch: String,
    /// Where its files are written out.
    pub checkout: PathBuf,
}

impl PipelinesRepo {
    /// `URL[#BRANCH]`, written out under `cache` (one folder per repo and branch).
    pub fn parse(given: &str, cache: &std::path::Path) -> PipelinesRepo {
        let (url, branch) = given.rsplit_once('#').map_or((given, "main"), |(u, b)| (u, b));
        let remote = crate::git::Remote::resolve(url, std::path::Path::new("."));
        let name = format!("{}-{branch}", remote.cache_name().trim_end_matches(".git"));
        PipelinesRepo { url: url.to_string(), branch: branch.to_string(), checkout: cache.join("pipelines").join(name) }
    }

    /// Whether `given` names a repo rather than a folder (`scheme://`, `user@host:path`, `*.git`).
    pub fn is_repo(given: &str) -> bool {
        let plain = given.rsplit_once('#').map_or(given, |(u, _)| u);
        plain.contains("://") || plain.trim_end_matches('/').ends_with(".git") || (plain.contains('@') && plain.contains(':'))
    }

    /// Whether a push event's repo (`acme/pipelines`) is this one.
    pub fn is(&self, repo: &str) -> bool {
        same_repo(&self.url, repo)
    }
}

/// Whether the repo at `url` (a URL or a path) is the one a push event names (`acme/checkout`).
pub fn same_repo(url: &str, repo: &str) -> bool {
    let path = url.trim_end_matches('/').trim_end_matches(".git").to_ascii_lowercase();
    let repo = repo.trim_matches('/').trim_end_matches(".git").to_ascii_lowercase();
    !repo.is_empty() && (path == repo || path.ends_with(&format!("/{repo}")) || path.ends_with(&format!(":{repo}")))
}

/// The server's shared state: cheap to clone.
#[derive(Clone)]
pub struct Server {
    exec: Arc<Executor>,
    /// Swapped whole at each reload: a request takes the `Arc`, never a copy.
    pipelines: Arc<RwLock<Arc<Pipelines>>>,
    /// The directory of people, swapped whole at each reload (shared with the executor, whose
    /// approval stages count decisions by it).
    directory: crate::governance::SharedDirectory,
    config: Arc<Config>,
    stop: CancellationToken,
    /// The drivers' tasks (a plain mutex: a driver is added to the set as its run is started, not
    /// by a task that may run after the server's shutdown took the set).
    drivers: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    /// The runs this server drives now (the others' are taken over when their lease lapses).
    driving: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Plans of the pipeline sources stored with runs, by the source's hash (the pages draw runs
    /// of the same few sources again and again; a 5,000-stage plan takes ~50 ms to make).
    plans: Arc<std::sync::Mutex<std::collections::HashMap<u64, Arc<crate::plan::Plan>>>>,
    /// What this server knows of each polled registry repository (`/api/v1/pipelines`).
    polls: Arc<imagepoll::Polls>,
    /// Compiled policies and the environments found compliant, between compliance sweeps.
    compliance: Arc<crate::ops::compliance::Sweep>,
}

impl Server {
    /// The plan of the pipeline stored with `run`, made once per source.
    pub fn plan_of(&self, run: &crate::store::RunRecord) -> Option<Arc<crate::plan::Plan>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&run.file, &run.source).hash(&mut h);
        let key = h.finish();
        if let Some(p) = self.plans.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Some(p.clone());
        }
        let plan = Arc::new(crate::stages::plan_of(run)?);
        let mut cache = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, plan.clone());
        Some(plan)
    }

    /// The pipelines now loaded.
    pub fn pipelines(&self) -> Arc<Pipelines> {
        self.pipelines.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The directory of people now loaded.
    pub fn directory(&self) -> Arc<crate::governance::Directory> {
        self.directory.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the directory again: `--users FILE` (a broken file keeps the last good directory,
    /// with its error among the pipelines' errors), or the pipelines' users files merged.
    fn reload_directory(&self, pipelines: &mut Pipelines) {
        let previous = self.directory();
        let next = match &self.config.users {
            Some(path) => {
                let shown = path.display().to_string();
                match crate::governance::Users::load(path) {
                    Ok(u) => crate::governance::Directory::of_file(u),
                    Err(e) => {
                        pipelines.errors.insert(shown, vec![e.to_string()]);
                        return;
                    }
                }
            }
            None => {
                let files: Vec<(String, Arc<crate::governance::Users>)> =
                    pipelines.by_name.values().filter_map(|l| Some((l.file.display().to_string(), l.users.clone()?))).collect();
                let d = crate::governance::Directory::merge(files.iter().map(|(f, u)| (f.as_str(), &**u)));
                if !d.problems.is_empty() {
                    pipelines.errors.insert("users".into(), d.problems.clone());
                }
                d
            }
        };
        if next.problems != previous.problems {
            for p in &next.problems {
                tracing::error!("{p}");
            }
        }
        *self.directory.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }

    /// Fetches the pipelines repos and reads every folder again (blocking work: call it off the
    /// async threads).
    fn reload(&self) {
        let previous = self.pipelines();
        let mut dirs = self.config.pipelines.clone();
        let mut fetch_errors = Vec::new();
        for repo in &self.config.repos {
            let remote = crate::git::Remote::resolve(&repo.url, std::path::Path::new("."));
            match self.exec.writer.snapshot(&remote, &repo.branch, &repo.checkout) {
                Ok(_) => dirs.push(repo.checkout.clone()),
                Err(e) => {
                    // The last files fetched keep serving.
                    if repo.checkout.exists() {
                        dirs.push(repo.checkout.clone());
                    }
                    fetch_errors.push((format!("{}#{}", remote.shown(), repo.branch), vec![crate::redact::text(&e.to_string()).into_owned()]));
                }
            }
        }
        let mut next = Pipelines::load(&dirs, &previous);
        next.errors.extend(fetch_errors);
        self.reload_directory(&mut next);
        for (file, errors) in &next.errors {
            if previous.errors.get(file) != Some(errors) {
                for e in errors {
                    tracing::error!(file = %file, "{e}");
                }
            }
        }
        *self.pipelines.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }

    /// Reloads at once when `repo` (a push event's) is one of the pipelines repos.
    fn pushed(&self, repo: &str) {
        if self.config.repos.iter().any(|r| r.is(repo)) {
            tracing::info!(repo, "a push to a pipelines repo: reloading");
            let s = self.clone();
            tokio::task::spawn_blocking(move || s.reload());
        }
    }

    /// Looks for drift in every environment of the pipelines whose environment repo is `repo`
    /// (a push event's), at once, in the background.
    fn env_pushed(&self, repo: &str) {
        let pipelines = self.pipelines();
        let hit: Vec<_> =
            pipelines.by_name.values().filter(|l| l.plan.pipeline.environments.iter().any(|e| same_repo(&e.spec.repo.value, repo))).cloned().collect();
        for loaded in hit {
            let s = self.clone();
            tokio::spawn(async move { s.check_drift(&loaded).await });
        }
    }

    /// Looks for drift in one pipeline's environments; logs what it found.
    async fn check_drift(&self, loaded: &pipelines::Loaded) {
        let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
        match crate::ops::drift::check(&self.exec.store, &self.exec.writer, &loaded.plan, base, self.exec.public_url.as_deref()).await {
            Ok(found) => {
                for f in found.iter().filter(|f| f.drift.is_some()) {
                    tracing::warn!(pipeline = %loaded.plan.pipeline.name.value, environment = %f.environment, "{}", f.line);
                }
                // A drift's files are judged by the policies at once.
                for f in found.iter().filter(|f| f.drift.as_ref().is_some_and(|d| d.state == crate::store::DriftState::Open)) {
                    self.check_compliance(loaded, Some(&f.environment)).await;
                }
            }
            Err(e) => tracing::warn!(pipeline = %loaded.plan.pipeline.name.value, error = %e, "could not look for drift"),
        }
    }

    /// Drives run `id` in the background until it ends or the server stops (once: a run this
    /// server drives already is left alone).
    fn drive(&self, id: String) {
        self.drive_planned(id, None, None)
    }

    /// [`drive`](Self::drive) a run this server has just started from `loaded`, with its lease
    /// (`driven`): its driver uses the loaded plan (the run's stored text is the one it was made
    /// from) instead of planning the text again, and the record instead of reading it back.
    fn drive_started(&self, run: crate::store::RunRecord, loaded: &pipelines::Loaded) {
        self.drive_planned(run.id.clone(), Some(run), Some(loaded.planned()))
    }

    fn drive_planned(&self, id: String, fresh: Option<crate::store::RunRecord>, planned: Option<crate::exec::Planned>) {
        if !self.driving.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone()) {
            return;
        }
        let (exec, stop, drivers, driving) = (self.exec.clone(), self.stop.clone(), self.drivers.clone(), self.driving.clone());
        {
            let mut drivers = drivers.lock().unwrap_or_else(|e| e.into_inner());
            // The drivers that ended are let go here (the set keeps a finished task until it is
            // joined: a server that ran a million runs would keep a million).
            while drivers.try_join_next().is_some() {}
            drivers.spawn(async move {
                let _done = Forget(driving, id.clone());
                let driven = match fresh {
                    Some(run) => exec.drive_started(run, planned, Arc::new(|_| {}), stop.child_token()).await,
                    None => exec.drive_planned(&id, planned, Arc::new(|_| {}), stop.child_token()).await,
                };
                match driven {
                    Ok(state) => tracing::info!(run = %id, state = %state, "run ended"),
                    Err(crate::exec::ExecError::Stopped { .. }) => tracing::info!(run = %id, "run stopped with the server; resumed at the next start"),
                    // Another replica drives it, took it over, or ended it meanwhile: not an error.
                    Err(e @ (crate::exec::ExecError::Driven { .. } | crate::exec::ExecError::LeaseLost { .. } | crate::exec::ExecError::Finished { .. })) => {
                        tracing::info!(run = %id, "{e}")
                    }
                    Err(e) => tracing::error!(run = %id, error = %e, "run failed to drive"),
                }
            });
        }
    }
}

/// Takes a run out of the set of those a server drives when its driving ends, however it ends.
struct Forget(Arc<std::sync::Mutex<std::collections::HashSet<String>>>, String);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

/// Runs left by a replica that stopped (killed, its machine gone): every half lease, the running
/// runs nobody drives, or whose driver's lease lapsed, are taken over. Taking one over is the
/// store's conditional claim (`Write::Drive`): of several replicas that try at once one wins,
/// the trail records the takeover, and the run resumes from its last durable step. A replica
/// takes at most [`ADOPT_PER_LOOK`] runs a look, the oldest first, so that a restarted replica does
/// not take every orphan at once and the others share them.
async fn adopt(server: Server) {
    let every = crate::store::lease_duration() / 2;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = server.stop.cancelled() => return,
        }
        // One query, whatever the history: the running runs whose lease lapsed, oldest first
        // (those this process is about to drive again are among them: skipped, not counted).
        let driving = server.driving.lock().unwrap_or_else(|e| e.into_inner()).len() as i64;
        let Ok(orphans) = server.exec.store.orphans(crate::clock::now_ms(), ADOPT_PER_LOOK as i64 + driving).await else { continue };
        let mut taken = 0;
        for id in orphans {
            if taken >= ADOPT_PER_LOOK {
                break;
            }
            if server.driving.lock().unwrap_or_else(|e| e.into_inner()).contains(&id) {
                continue;
            }
            tracing::info!(run = %id, "taking over a run whose driver stopped");
            server.drive(id);
            taken += 1;
        }
    }
}

/// The most runs one look of [`adopt`] takes over.
const ADOPT_PER_LOOK: usize = 64;

/// How often the server asks for the watches' due looks.
const WATCH_TICK: Duration = Duration::from_millis(500);

/// The router of a server (also used by tests that bind their own listener).
pub fn router(server: Server) -> Router {
    let (routes, _) = openapi::described().split_for_parts();
    routes
        .merge(ui::routes().layer(axum::middleware::from_fn_with_state(server.clone(), ui::only_trusted_identity)))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(protective_headers))
        .layer(axum::middleware::from_fn(close_unread))
        .with_state(server)
}

/// A request body larger than what the server reads ahead, refused before it was read (413, or
/// a route or method that does not exist): its connection is closed after the answer, and the
/// answer says so, or a client would send its next request on a connection about to close and
/// lose it.
async fn close_unread(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let large = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or(request.headers().contains_key(axum::http::header::TRANSFER_ENCODING), |n| n > 16 * 1024);
    let mut response = next.run(request).await;
    let status = response.status();
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE || (large && status.is_client_error()) {
        response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response
}

/// Headers every answer carries: no page of promote's is framed by another site (clickjacking a
/// decision button), and no answer is read as another type than it says.
async fn protective_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::HeaderValue;
    let h = response.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if !h.contains_key("content-security-policy") {
        h.insert("content-security-policy", HeaderValue::from_static("frame-ancestors 'none'"));
    }
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    response
}

/// Serves on `listener` until `shutdown` completes: loads the pipelines, resumes the runs left
/// running, reloads the pipelines every `config.reload`, then stops as described above.
pub async fn serve(
    listener: tokio::net::TcpListener,
    exec: Executor,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let mut exec = exec;
    let directory: crate::governance::SharedDirectory = Arc::default();
    exec.directory = Some(directory.clone());
    if exec.public_url.is_none() {
        // Reached as it listens unless told otherwise (`--public-url`).
        let addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            tracing::warn!(%addr, "no --public-url: webhook stages with `callback: true` give http://{addr} to the systems they call");
        }
        exec.public_url = Some(format!("http://{addr}"));
    }
    let server = Server {
        exec: Arc::new(exec),
        pipelines: Arc::default(),
        directory,
        config: Arc::new(config),
        stop: CancellationToken::new(),
        drivers: Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new())),
        driving: Arc::default(),
        plans: Arc::default(),
        polls: Arc::default(),
        compliance: Arc::default(),
    };
    {
        let s = server.clone();
        let _ = tokio::task::spawn_blocking(move || s.reload()).await;
    }
    if let Some(o) = &server.config.oidc {
        // In the background: a server whose IdP is down still starts, with sign-in by token.
        o.start(server.stop.clone());
    }
    let loaded = server.pipelines();
    tracing::info!(pipelines = loaded.by_name.len(), invalid = loaded.errors.len(), addr = %listener.local_addr()?, "promote serve");
    // Runs left running by an earlier server (or a killed CLI) are carried on.
    for r in server.exec.store.runs(10_000).await? {
        if r.state == RunState::Running {
            server.drive(r.id);
        }
    }
    let reloader = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(server.config.reload.max(Duration::from_millis(100)));
            tick.tick().await;
            loop {
                tokio::select! {
                    // Reading and checking files is blocking work: off the async threads.
                    _ = tick.tick() => {
                        let s = server.clone();
                        let _ = tokio::task::spawn_blocking(move || s.reload()).await;
                    }
                    _ = server.stop.cancelled() => return,
                }
            }
        })
    };
    let poller = tokio::spawn(poll::run(server.clone()));
    let registry_poller = tokio::spawn(imagepoll::run(server.clone()));
    let adopter = tokio::spawn(adopt(server.clone()));
    let sweeper = tokio::spawn(compliance::run(server.clone()));
    // Promoted releases under a `watch`: their looks, resumed from the state after a restart.
    let watcher = {
        let (exec, stop) = (server.exec.clone(), server.stop.clone());
        tokio::spawn(async move {
            let said = |l: &crate::exec::Looked| {
                let message = crate::diag::printable(&l.message);
                use crate::store::WatchState;
                match l.state {
                    WatchState::Watching => tracing::debug!(watch = %l.watch, environment = %l.environment, version = %l.version, "looked: {message}"),
                    WatchState::Failed | WatchState::Error => {
                        tracing::warn!(watch = %l.watch, environment = %l.environment, version = %l.version, state = %l.state, "{message}")
                    }
                    _ => tracing::info!(watch = %l.watch, environment = %l.environment, version = %l.version, state = %l.state, "{message}"),
                }
            };
            exec.watch_until(stop, WATCH_TICK, said).await
        })
    };
    let stop = server.stop.clone();
    let app = router(server.clone());
    let files = listen::raise_file_limit();
    tracing::debug!(files, max_connections = server.config.limits.max_connections, "connection limits");
    let shutdown = async move {
        shutdown.await;
        stop.cancel();
    };
    listen::serve(listener, app, server.config.limits, shutdown, Duration::from_secs(10)).await?;
    server.stop.cancel();
    reloader.abort();
    poller.abort();
    registry_poller.abort();
    adopter.abort();
    sweeper.abort();
    // The tasks that start and adopt runs are gone before the drivers are taken below: a run one
    // of them started is driven (or, cut off mid-start, left to its lease) and never spawned
    // into a set nobody waits for.
    let _ = (poller.await, registry_poller.await, adopter.await);
    let _ = watcher.await;
    let mut drivers = std::mem::take(&mut *server.drivers.lock().unwrap_or_else(|e| e.into_inner()));
    while drivers.join_next().await.is_some() {}
    crate::exec::settle_heads().await;
    server.exec.store.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_events_repo_is_matched_to_urls_and_paths_by_its_trailing_path() {
        for url in [
            "https://github.com/acme/checkout-env.git",
            "git@github.com:acme/checkout-env.git",
            "/srv/git/acme/checkout-env.git",
            "ssh://git@host/acme/checkout-env",
        ] {
            assert!(same_repo(url, "acme/checkout-env"), "{url}");
            assert!(same_repo(url, "ACME/Checkout-Env"), "case: {url}");
        }
        assert!(!same_repo("https://github.com/acme/checkout-env.git", "acme/checkout"), "a prefix is not the repo");
        assert!(!same_repo("https://github.com/other/checkout-env.git", "acme/checkout-env"));
        assert!(!same_repo("https://github.com/acme/x.git", ""));
        assert!(PipelinesRepo::is_repo("https://git.example.com/acme/pipelines.git#release"));
        assert!(PipelinesRepo::is_repo("git@github.com:acme/pipelines"));
        assert!(PipelinesRepo::is_repo("/srv/pipelines.git"));
        assert!(!PipelinesRepo::is_repo("pipelines/") && !PipelinesRepo::is_repo("./deploy"));
        let r = PipelinesRepo::parse("https://git.example.com/acme/pipelines.git#release", std::path::Path::new("/var/cache"));
        assert_eq!((r.url.as_str(), r.branch.as_str()), ("https://git.example.com/acme/pipelines.git", "release"));
        assert!(r.checkout.starts_with("/var/cache/pipelines"), "{:?}", r.checkout);
        assert_eq!(PipelinesRepo::parse("/srv/p.git", std::path::Path::new("/c")).branch, "main");
    }
}
