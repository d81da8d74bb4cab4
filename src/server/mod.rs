//! `promote serve`: webhooks that start runs, the API, the runner's metrics; the executor in
//! process, driving every run it starts or finds interrupted.
//!
//! [`serve`] takes its listener and its shutdown as arguments (tests run it on 127.0.0.1:0). On
//! shutdown it stops accepting, cancels the runs it drives (each stops at a durable point and is
//! resumed by the next start, by this or another replica) and waits for the audit heads.

mod api;
mod hooks;
mod pipelines;
mod poll;
pub mod verify;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
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
#[derive(Debug, Clone)]
pub struct Config {
    /// Folders of pipeline files.
    pub pipelines: Vec<PathBuf>,
    /// How often the folders are read again (default 10 s).
    pub reload: Duration,
}

/// The server's shared state: cheap to clone.
#[derive(Clone)]
pub struct Server {
    exec: Arc<Executor>,
    pipelines: Arc<RwLock<Pipelines>>,
    config: Arc<Config>,
    stop: CancellationToken,
    drivers: Arc<tokio::sync::Mutex<tokio::task::JoinSet<()>>>,
}

impl Server {
    /// The pipelines now loaded.
    pub fn pipelines(&self) -> Pipelines {
        self.pipelines.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reload(&self) {
        let previous = self.pipelines();
        let next = Pipelines::load(&self.config.pipelines, &previous);
        for (file, errors) in &next.errors {
            if previous.errors.get(file) != Some(errors) {
                for e in errors {
                    tracing::error!(file = %file, "{e}");
                }
            }
        }
        *self.pipelines.write().unwrap_or_else(|e| e.into_inner()) = next;
    }

    /// Drives run `id` in the background until it ends or the server stops.
    fn drive(&self, id: String) {
        let (exec, stop, drivers) = (self.exec.clone(), self.stop.clone(), self.drivers.clone());
        tokio::spawn(async move {
            drivers.lock().await.spawn(async move {
                match exec.drive_until(&id, Arc::new(|_| {}), stop.child_token()).await {
                    Ok(s) => tracing::info!(run = %id, state = %s.run.state, "run ended"),
                    Err(crate::exec::ExecError::Stopped { .. }) => tracing::info!(run = %id, "run stopped with the server; resumed at the next start"),
                    Err(e @ crate::exec::ExecError::Driven { .. }) => tracing::info!(run = %id, "{e}"),
                    Err(e) => tracing::error!(run = %id, error = %e, "run failed to drive"),
                }
            });
        });
    }
}

/// The router of a server (also used by tests that bind their own listener).
pub fn router(server: Server) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(api::ready))
        .route("/metrics", get(api::metrics))
        .route("/hooks/{*path}", post(hooks::receive))
        .route("/callbacks/{run}/{stage}/{token}", post(api::callback))
        .nest("/api/v1", api::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(server)
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
        pipelines: Arc::new(RwLock::new(Pipelines::default())),
        config: Arc::new(config),
        stop: CancellationToken::new(),
        drivers: Arc::new(tokio::sync::Mutex::new(tokio::task::JoinSet::new())),
    };
    server.reload();
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
    let stop = server.stop.clone();
    let app = router(server.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop.cancel();
        })
        .await?;
    server.stop.cancel();
    reloader.abort();
    poller.abort();
    let mut drivers = std::mem::take(&mut *server.drivers.lock().await);
    while drivers.join_next().await.is_some() {}
    crate::exec::settle_heads().await;
    server.exec.store.close().await;
    Ok(())
}
