//! The change feed: every entry written to the state (a transition, a decision, a run's end), by
//! this process or another, reaches whoever waits for it, without anyone polling a table.
//!
//! The audit trail is the feed's source: every write adds an entry with an increasing id. One task
//! per open state reads the entries after the last one it sent and broadcasts them. It is woken by
//! this process's own commits at once, and by other processes' commits through the file system
//! (inotify on the state file's folder: a commit in WAL mode writes `state.db-wal`), within
//! milliseconds. The task runs only while someone is subscribed, and reads only when woken.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{Notify, broadcast};

/// One entry of the trail, as the feed announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The entry's id (increasing).
    pub id: i64,
    /// The run it belongs to.
    pub run: String,
    /// The stage, if any.
    pub stage: Option<String>,
    /// `stage`, `decision`, `break-glass`, `run`, `trigger`, ...
    pub kind: String,
}

impl Change {
    /// Whether this is a person's decision (or a break-glass) on `stage` of `run`.
    pub fn is_decision_on(&self, run: &str, stage: &str) -> bool {
        self.run == run && self.stage.as_deref() == Some(stage) && matches!(self.kind.as_str(), "decision" | "break-glass")
    }

    /// Whether a run ended (its environment locks were released with it).
    pub fn is_run_end(&self) -> bool {
        self.kind == "run"
    }
}

/// What a waiter was woken by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A change it waits for (or the feed fell behind: look again).
    Change,
    /// Its deadline.
    Deadline,
}

/// The feed of one open state (shared by the store's clones).
pub(crate) struct Feed {
    tx: broadcast::Sender<Arc<Change>>,
    /// Woken after every commit of this process and by the file watcher.
    poke: Arc<Notify>,
    /// The last entry sent; `None` while nobody listens.
    last: tokio::sync::Mutex<Option<i64>>,
    /// The task and the file watcher, once someone subscribed.
    started: Mutex<Option<Started>>,
}

struct Started {
    /// Kept for its thread: dropping it stops watching.
    _watcher: Option<notify::RecommendedWatcher>,
}

/// How many entries the feed holds for a slow subscriber before it tells it to look again.
const CAPACITY: usize = 4096;
/// How many entries one read takes.
const BATCH: i64 = 5000;
/// Where the file system cannot be watched, how often the task looks for other processes' writes.
const FALLBACK: Duration = Duration::from_secs(1);

impl Feed {
    pub(crate) fn new() -> Feed {
        Feed { tx: broadcast::channel(CAPACITY).0, poke: Arc::new(Notify::new()), last: tokio::sync::Mutex::new(None), started: Mutex::new(None) }
    }

    /// Wakes the task: something was committed.
    pub(crate) fn poke(&self) {
        self.poke.notify_one();
    }

    /// A subscription from now on: every entry committed after this returns is announced.
    pub(crate) async fn subscribe(self: &Arc<Feed>, pool: &SqlitePool, path: &Path) -> Result<Subscription, sqlx::Error> {
        self.start(pool, path);
        let mut last = self.last.lock().await;
        if last.is_none() {
            let max: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events").fetch_one(pool).await?;
            *last = Some(max);
        }
        Ok(Subscription { rx: self.tx.subscribe() })
    }

    fn start(self: &Arc<Feed>, pool: &SqlitePool, path: &Path) {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if started.is_some() {
            return;
        }
        let watcher = watch(path, self.poke.clone());
        let fallback = watcher.is_none().then_some(FALLBACK);
        tokio::spawn(run(Arc::downgrade(self), pool.clone(), self.poke.clone(), fallback));
        *started = Some(Started { _watcher: watcher });
    }
}

/// Watches the state file's folder; every change to the file or its WAL pokes the feed.
fn watch(path: &Path, poke: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let name = path.file_name()?.to_string_lossy().into_owned();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && e.kind.is_modify()
            && e.paths.iter().any(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&name)))
        {
            poke.notify_one();
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the state file: other processes' decisions are seen within {FALLBACK:?}");
            return None;
        }
    };
    match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the state folder: other processes' decisions are seen within {FALLBACK:?}");
            None
        }
    }
}

/// The feed's task: on each poke, sends the entries after the last one sent. Ends with the store.
async fn run(feed: Weak<Feed>, pool: SqlitePool, poke: Arc<Notify>, fallback: Option<Duration>) {
    loop {
        match fallback {
            Some(every) => {
                let _ = tokio::time::timeout(every, poke.notified()).await;
            }
            None => poke.notified().await,
        }
        let Some(feed) = feed.upgrade() else { return };
        let mut last = feed.last.lock().await;
        if feed.tx.receiver_count() == 0 {
            *last = None;
            continue;
        }
        let Some(from) = *last else { continue };
        let rows = sqlx::query("SELECT id, run_id, stage, kind FROM events WHERE id > ? ORDER BY id LIMIT ?").bind(from).bind(BATCH).fetch_all(&pool).await;
        let rows = match rows {
            Ok(r) => r,
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "the change feed could not read the trail; it tries again on the next change");
                continue;
            }
        };
        for r in &rows {
            let change = Change { id: r.get(0), run: r.get(1), stage: r.get(2), kind: r.get(3) };
            *last = Some(change.id);
            let _ = feed.tx.send(Arc::new(change));
        }
        if rows.len() as i64 == BATCH {
            poke.notify_one();
        }
    }
}

/// A subscriber's end of the feed.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Change>>,
}

impl Subscription {
    /// Waits until a change that `wanted` accepts is announced, or until `deadline` (Unix ms) if
    /// one is given. A subscriber that fell behind is told to look again ([`Woken::Change`]).
    pub async fn wait(&mut self, wanted: impl Fn(&Change) -> bool, deadline: Option<i64>) -> Woken {
        let changes = async {
            loop {
                match self.rx.recv().await {
                    Ok(c) if wanted(&c) => return Woken::Change,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return Woken::Change,
                    // The store is gone: nothing will come; the deadline (or the caller) decides.
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        match deadline {
            None => changes.await,
            Some(d) => {
                let left = Duration::from_millis((d - super::now_ms()).max(0) as u64);
                tokio::time::timeout(left, changes).await.unwrap_or(Woken::Deadline)
            }
        }
    }
}
