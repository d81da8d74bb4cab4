//! The change feed: every entry written to the state (a transition, a decision, a run's end), by
//! this process or another, reaches whoever waits for it, without anyone polling a table.
//!
//! The audit trail is the feed's source: every write adds an entry with an increasing id. One task
//! per open state reads the entries after the last one it sent and broadcasts them. It is woken by
//! this process's own commits at once, and by other processes' commits through the backend's
//! watch (SQLite: inotify on the state file's folder, since a commit in WAL mode writes
//! `state.db-wal`), within milliseconds. It reads only when woken and while someone listens.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use super::{Backend, StoreError};

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
        self.run == run && self.stage.as_deref() == Some(stage) && matches!(self.kind.as_str(), "decision" | "break-glass" | "callback")
    }

    /// Whether a run ended (its environment locks were released with it).
    pub fn is_run_end(&self) -> bool {
        self.kind == crate::store::EntryKind::Run.as_str()
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
    _watcher: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// How many entries the feed holds for a slow subscriber before it tells it to look again.
const CAPACITY: usize = 4096;
/// How many entries one read takes.
const BATCH: i64 = 5000;
/// Another process's commit is seen through the file system as its bytes are written, which can
/// be a moment before the commit is visible to readers (SQLite publishes it in the shared-memory
/// index, which raises no event): a poke that finds nothing is followed by looks after these
/// delays, and the first that finds the commit ends them.
const FOLLOW_UP: [Duration; 4] = [Duration::from_millis(2), Duration::from_millis(10), Duration::from_millis(50), Duration::from_millis(250)];
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
    pub(crate) async fn subscribe(self: &Arc<Feed>, backend: &Arc<dyn Backend>) -> Result<Subscription, StoreError> {
        self.start(backend);
        let mut last = self.last.lock().await;
        if last.is_none() {
            *last = Some(backend.last_change().await?);
        }
        Ok(Subscription { rx: self.tx.subscribe() })
    }

    fn start(self: &Arc<Feed>, backend: &Arc<dyn Backend>) {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if started.is_some() {
            return;
        }
        let watcher = backend.watch(self.poke.clone());
        let fallback = watcher.is_none().then_some(FALLBACK);
        tokio::spawn(run(Arc::downgrade(self), Arc::downgrade(backend), self.poke.clone(), fallback));
        *started = Some(Started { _watcher: watcher });
    }
}

/// The feed's task: on each poke, sends the entries after the last one sent. Ends with the store.
async fn run(feed: Weak<Feed>, backend: Weak<dyn Backend>, poke: Arc<Notify>, fallback: Option<Duration>) {
    // Follow-up looks left after a poke that found nothing new (see `FOLLOW_UP`).
    let mut follow = 0usize;
    loop {
        let wait = match follow {
            0 => fallback,
            n => Some(FOLLOW_UP[FOLLOW_UP.len() - n]),
        };
        let poked = match wait {
            Some(d) => tokio::time::timeout(d, poke.notified()).await.is_ok(),
            None => {
                poke.notified().await;
                true
            }
        };
        let (Some(feed), Some(backend)) = (feed.upgrade(), backend.upgrade()) else { return };
        let mut last = feed.last.lock().await;
        if feed.tx.receiver_count() == 0 {
            *last = None;
            continue;
        }
        let Some(from) = *last else { continue };
        let changes = match backend.changes_after(from, BATCH).await {
            Ok(c) => c,
            Err(StoreError::Closed { .. }) => return,
            Err(e) => {
                tracing::warn!(error = %e, "the change feed could not read the trail; it tries again on the next change");
                continue;
            }
        };
        follow = match (changes.is_empty(), poked) {
            (false, _) => 0,
            (true, true) => FOLLOW_UP.len(),
            (true, false) => follow.saturating_sub(1),
        };
        let full = changes.len() as i64 == BATCH;
        for change in changes {
            *last = Some(change.id);
            let _ = feed.tx.send(Arc::new(change));
        }
        if full {
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
                let left = Duration::from_millis((d - crate::clock::now_ms()).max(0) as u64);
                tokio::time::timeout(left, changes).await.unwrap_or(Woken::Deadline)
            }
        }
    }
}
