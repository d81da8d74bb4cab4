//! A batch's frequent writes, judged once for both writers. The writes most runs make (stage
//! transitions, new runs, drivers' claims on runs, runs' ends: [`Group`]) are judged here, in
//! Rust, against what the writer read of the leases, and become rows (a row per stage, run or
//! lease) that each backend sends by a few statements whatever their number: PostgreSQL as
//! `UNNEST` arrays, SQLite as one JSON array read by `jsonb_each(jsonb(?))`. The trail's entries a
//! transaction appends wait in [`Entries`] and are chained at its end ([`Entries::chain`]).
//!
//! The writes of a batch were all asked for at once, none after another's answer, so any order
//! of them is one they could have had; within a group, each is judged after the ones before it
//! (a stage's transitions folded in order, a run's claims one after the other).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::chain::entry_hash;
use super::{Claim, EntryKind, StageState, Transition, Write, Written, seals, texts};
use crate::seal::Key;

/// The kinds of write a batch sends together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// [`Write::Transitions`].
    Transitions,
    /// [`Write::CreateRun`] without a delivery (a delivery is checked for duplicates on its own).
    NewRuns,
    /// [`Write::Drive`].
    Claims,
    /// [`Write::FinishRun`].
    Ends,
}

impl Group {
    /// The group `write` goes in, if any.
    pub(crate) fn of(write: &Write) -> Option<Group> {
        match write {
            Write::Transitions { .. } => Some(Group::Transitions),
            Write::CreateRun { delivery: None, .. } => Some(Group::NewRuns),
            Write::Drive { .. } => Some(Group::Claims),
            Write::FinishRun { .. } => Some(Group::Ends),
            _ => None,
        }
    }
}

/// An entry appended in this transaction and not yet chained.
struct Pending {
    run: String,
    stage: Option<String>,
    at: i64,
    kind: &'static str,
    actor: String,
    detail: String,
}

/// The trail's entries a transaction appends, in order.
#[derive(Default)]
pub(crate) struct Entries(Vec<Pending>);

/// An entry chained: its place in the chain and its text.
#[derive(Serialize)]
pub(crate) struct EntryRow {
    pub id: i64,
    pub run: String,
    pub stage: Option<String>,
    pub at: i64,
    pub kind: &'static str,
    pub actor: String,
    pub detail: String,
    pub prev: String,
    pub hash: String,
}

impl Entries {
    /// Appends the next entry.
    pub(crate) fn push(&mut self, run: &str, stage: Option<&str>, at: i64, kind: EntryKind, actor: &str, detail: &str) {
        self.0.push(Pending {
            run: run.to_string(),
            stage: stage.map(str::to_string),
            at,
            kind: kind.as_str(),
            actor: actor.to_string(),
            detail: detail.to_string(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Chains the entries, in order, after the entry (`id`, `hash`), which are left at the last
    /// one; the rows to insert.
    pub(crate) fn chain(&mut self, key: &Key, id: &mut i64, hash: &mut String) -> Vec<EntryRow> {
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|e| {
                *id += 1;
                let next = entry_hash(key, hash, *id, &e.run, e.stage.as_deref(), e.at, e.kind, &e.actor, &e.detail);
                let prev = std::mem::replace(hash, next.clone());
                EntryRow { id: *id, run: e.run, stage: e.stage, at: e.at, kind: e.kind, actor: e.actor, detail: e.detail, prev, hash: next }
            })
            .collect()
    }
}

/// The (run, driver) pairs the fenced writes among `writes` need to hold: a driver still drives
/// its run and the run is running.
pub(crate) fn fenced<'a>(writes: &[&'a Write]) -> Vec<(&'a str, &'a str)> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::Transitions { run, fence: Some(holder), .. } | Write::FinishRun { run, fence: Some(holder), .. } => Some((run.as_str(), holder.as_str())),
            _ => None,
        })
        .collect()
}

/// Whether a fenced write of `run` by `fence` may go on, `driving` being the (run, holder) pairs
/// that hold.
fn holds(driving: &HashSet<(String, String)>, run: &str, fence: &Option<String>) -> bool {
    match fence {
        Some(holder) => driving.contains(&(run.to_string(), holder.clone())),
        None => true,
    }
}

/// A column a transition may keep, set or clear.
enum Change<T> {
    Keep,
    Set(T),
    Clear,
}

impl<T> Change<T> {
    /// Keep (0), set (1) or clear (2), as the statements read it.
    fn mode(&self) -> i16 {
        match self {
            Change::Keep => 0,
            Change::Set(_) => 1,
            Change::Clear => 2,
        }
    }

    fn value(self) -> Option<T> {
        match self {
            Change::Set(v) => Some(v),
            _ => None,
        }
    }
}

/// Every transition of one stage in the batch, folded in order into one row: what the stage's
/// statements, one after the other, would have left.
#[derive(Serialize)]
pub(crate) struct StageRow {
    pub run: String,
    pub name: String,
    pub state: Option<&'static str>,
    pub attempt: Option<i64>,
    pub started_at: Option<i64>,
    /// Keep (0), set (1) or clear (2) `finished_at`.
    pub finished_mode: i16,
    pub finished_at: Option<i64>,
    /// Keep (0), set (1) or clear (2) `message`.
    pub message_mode: i16,
    pub message: Option<String>,
    pub output: Option<String>,
    pub seal: Option<String>,
}

/// A stage's transitions being folded.
struct Folded {
    run: String,
    stage: String,
    state: Option<&'static str>,
    attempt: Option<i64>,
    started_at: Option<i64>,
    finished_at: Change<i64>,
    message: Change<String>,
    output: Option<String>,
    seal: Option<String>,
}

impl Folded {
    fn new(run: &str, stage: &str) -> Folded {
        Folded {
            run: run.to_string(),
            stage: stage.to_string(),
            state: None,
            attempt: None,
            started_at: None,
            finished_at: Change::Keep,
            message: Change::Keep,
            output: None,
            seal: None,
        }
    }

    /// What `t` does on top of what came before it (the single statement's meaning, in order).
    fn then(&mut self, t: &Transition, seal: Option<String>) {
        self.state = t.state.map(StageState::as_str).or(self.state);
        self.attempt = t.attempt.or(self.attempt);
        self.started_at = t.started_at.or(self.started_at);
        match (t.finished_at, t.state) {
            (Some(f), _) => self.finished_at = Change::Set(f),
            (None, Some(StageState::Running)) => self.finished_at = Change::Clear,
            (None, _) => {}
        }
        match t.message.as_deref() {
            None => {}
            Some("") => self.message = Change::Clear,
            Some(m) => self.message = Change::Set(m.to_string()),
        }
        if let Some(o) = &t.output {
            self.output = Some(o.to_string());
        }
        if seal.is_some() {
            self.seal = seal;
        }
    }

    fn row(self) -> StageRow {
        StageRow {
            run: self.run,
            name: self.stage,
            state: self.state,
            attempt: self.attempt,
            started_at: self.started_at,
            finished_mode: self.finished_at.mode(),
            finished_at: self.finished_at.value(),
            message_mode: self.message.mode(),
            message: self.message.value(),
            output: self.output,
            seal: self.seal,
        }
    }
}

/// What the batch's transitions do.
pub(crate) struct Moved {
    /// Each write's answer, in order.
    pub out: Vec<Written>,
    /// A row per stage moved.
    pub rows: Vec<StageRow>,
    /// The (run, stage) of each deployment whose DORA figures the moves may change, once each.
    pub dora: Vec<(String, String)>,
}

/// The batch's transitions: a fenced one refused unless its pair is `driving`, every stage's
/// transitions folded into one row, an entry each (at `now`), each stage state sealed.
pub(crate) fn transitions(writes: &[&Write], driving: &HashSet<(String, String)>, key: &Key, now: i64, entries: &mut Entries) -> Moved {
    let mut out = Vec::with_capacity(writes.len());
    let mut folded: Vec<Folded> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut dora: Vec<(String, String)> = Vec::new();
    for write in writes {
        let Write::Transitions { run, items, fence } = write else { unreachable!("only transitions are grouped here") };
        if !holds(driving, run, fence) {
            out.push(Written::Fenced);
            continue;
        }
        for item in items {
            let t = &item.transition;
            entries.push(run, Some(&item.stage), now, EntryKind::Stage, "promote", &item.event);
            let seal = t.state.map(|s| seals::stage(key, run, &item.stage, s.as_str()));
            let i = *index.entry((run.as_str(), item.stage.as_str())).or_insert_with(|| {
                folded.push(Folded::new(run, &item.stage));
                folded.len() - 1
            });
            folded[i].then(t, seal);
            if super::dora::may_change(t) && !dora.iter().any(|(r, s)| r == run && *s == item.stage) {
                dora.push((run.clone(), item.stage.clone()));
            }
        }
        out.push(Written::Done);
    }
    Moved { out, rows: folded.into_iter().map(Folded::row).collect(), dora }
}

/// A new run's row.
#[derive(Serialize)]
pub(crate) struct RunRow<'a> {
    pub id: &'a str,
    pub pipeline: &'a str,
    pub file: &'a str,
    pub source: &'a str,
    pub version: &'a str,
    pub state: &'static str,
    pub triggered_by: &'a str,
    pub created_at: i64,
    pub authenticated: bool,
    pub seal: String,
}

/// A new run's stage, pending.
#[derive(Serialize)]
pub(crate) struct NewStageRow<'a> {
    pub run: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub position: i64,
    pub seal: String,
}

/// The batch's new runs: their rows, their stages' rows, an entry each.
pub(crate) struct NewRuns<'a> {
    pub runs: Vec<RunRow<'a>>,
    pub stages: Vec<NewStageRow<'a>>,
    /// The leases taken with them (their drivers start at once).
    pub leases: Vec<LeaseRow>,
}

/// The batch's new runs ([`NewRuns`]).
pub(crate) fn new_runs<'a>(writes: &[&'a Write], key: &Key, entries: &mut Entries) -> NewRuns<'a> {
    let mut runs = Vec::with_capacity(writes.len());
    let mut stages = Vec::new();
    let mut leases = Vec::new();
    for write in writes {
        let Write::CreateRun { run, stages: named, driver, .. } = write else { unreachable!("only new runs are grouped here") };
        let r = &**run;
        if let Some((holder, expires_at)) = driver {
            leases.push(LeaseRow { run: r.id.clone(), holder: holder.clone(), expires_at: *expires_at });
        }
        for (position, (name, kind)) in named.iter().enumerate() {
            stages.push(NewStageRow { run: &r.id, name, kind, position: position as i64, seal: seals::stage(key, &r.id, name, StageState::Pending.as_str()) });
        }
        entries.push(&r.id, None, r.created_at, EntryKind::Trigger, &r.triggered_by, &texts::run_started(r));
        runs.push(RunRow {
            id: &r.id,
            pipeline: &r.pipeline,
            file: &r.file,
            source: &r.source,
            version: &r.version,
            state: r.state.as_str(),
            triggered_by: &r.triggered_by,
            created_at: r.created_at,
            authenticated: r.authenticated,
            seal: seals::run(key, &r.id, &r.pipeline, &r.file, &r.source, &r.version, &r.triggered_by, r.authenticated, r.created_at),
        });
    }
    NewRuns { runs, stages, leases }
}

/// The runs the batch's drivers claim.
pub(crate) fn claimed<'a>(writes: &[&'a Write]) -> Vec<&'a str> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::Drive { run, .. } => Some(run.as_str()),
            _ => None,
        })
        .collect()
}

/// A lease to write: its run, holder and end.
#[derive(Serialize)]
pub(crate) struct LeaseRow {
    pub run: String,
    pub holder: String,
    pub expires_at: i64,
}

/// What the batch's claims do.
pub(crate) struct Claimed {
    /// Each claim's answer, in order.
    pub out: Vec<Written>,
    /// The leases taken, once per run (its last holder), in the order of their runs (SQLite's
    /// writer appends the new runs' leases after them).
    pub taken: Vec<LeaseRow>,
}

/// The batch's drivers' claims, each judged ([`Claim::of`]) against the leases `held` (run ->
/// holder, end) as the claims before it left them; a takeover's entry each. `held` is left with
/// the leases after the claims.
pub(crate) fn claims(writes: &[&Write], held: &mut HashMap<String, (String, i64)>, entries: &mut Entries) -> Claimed {
    let mut out = Vec::with_capacity(writes.len());
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for write in writes {
        let Write::Drive { run, holder, at, expires_at } = write else { unreachable!("only drivers' claims are grouped here") };
        match Claim::of(held.get(run).cloned(), holder, *at) {
            Claim::Held(other, until) => {
                out.push(Written::Holder(Some((other, until))));
                continue;
            }
            Claim::Take(Some((other, until))) => {
                entries.push(run, None, *at, EntryKind::DriverTakeover, "promote", &texts::driver_taken_over(&other, until));
            }
            Claim::Take(None) => {}
        }
        held.insert(run.clone(), (holder.clone(), *expires_at));
        taken.insert(run.clone());
        out.push(Written::Holder(None));
    }
    let taken = taken
        .into_iter()
        .map(|run| {
            let (holder, expires_at) = held[&run].clone();
            LeaseRow { run, holder, expires_at }
        })
        .collect();
    Claimed { out, taken }
}

/// A run's end.
#[derive(Serialize)]
pub(crate) struct EndRow<'a> {
    pub run: &'a str,
    pub state: &'static str,
    pub at: i64,
    pub message: Option<&'a str>,
}

/// The batch's runs' ends: a fenced one refused unless its pair is `driving` and the run was not
/// ended before it in the batch (no longer running, as one by one); a run ended twice keeps its
/// last end; an entry each; in the order of their runs.
pub(crate) fn ends<'a>(writes: &[&'a Write], driving: &HashSet<(String, String)>, entries: &mut Entries) -> (Vec<Written>, Vec<EndRow<'a>>) {
    let mut out = Vec::with_capacity(writes.len());
    let mut ended: BTreeMap<&str, EndRow<'a>> = BTreeMap::new();
    for write in writes {
        let Write::FinishRun { run, fence, state, message, at } = write else { unreachable!("only runs' ends are grouped here") };
        if !holds(driving, run, fence) || (fence.is_some() && ended.contains_key(run.as_str())) {
            out.push(Written::Fenced);
            continue;
        }
        ended.insert(run, EndRow { run, state: state.as_str(), at: *at, message: message.as_deref() });
        entries.push(run, None, *at, EntryKind::Run, "promote", &texts::run_finished(*state, message.as_deref()));
        out.push(Written::Done);
    }
    (out, ended.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RunState, StageWrite};

    fn end(run: &str, fence: Option<&str>, state: RunState) -> Write {
        Write::FinishRun { run: run.into(), fence: fence.map(str::to_string), state, message: None, at: 5 }
    }

    fn moved(stage: &str, state: StageState, finished_at: Option<i64>) -> StageWrite {
        StageWrite {
            stage: stage.into(),
            transition: Transition { state: Some(state), finished_at, ..Transition::default() },
            event: state.as_str().to_string(),
        }
    }

    #[test]
    fn a_run_ended_twice_by_its_driver_in_one_batch_is_ended_once_as_one_after_the_other() {
        let driving: HashSet<(String, String)> = [("r".to_string(), "me".to_string())].into();
        let (a, b, c) = (end("r", Some("me"), RunState::Failed), end("r", Some("me"), RunState::Succeeded), end("x", Some("me"), RunState::Failed));
        let mut entries = Entries::default();
        let (out, rows) = ends(&[&a, &b, &c], &driving, &mut entries);
        assert_eq!(out, [Written::Done, Written::Fenced, Written::Fenced]);
        assert_eq!(rows.iter().map(|r| (r.run, r.state)).collect::<Vec<_>>(), [("r", "failed")]);
        assert_eq!(entries.0.len(), 1);
    }

    #[test]
    fn a_stage_moved_twice_in_one_batch_is_one_row_with_both_changes_in_order_and_an_entry_each() {
        let key = Key::from_bytes([7; 32]);
        let driving: HashSet<(String, String)> = [("r".to_string(), "me".to_string())].into();
        let first = Write::Transitions { run: "r".into(), items: vec![moved("s", StageState::Running, None)], fence: Some("me".into()) };
        let second = Write::Transitions { run: "r".into(), items: vec![moved("s", StageState::Succeeded, Some(9))], fence: Some("me".into()) };
        let stale = Write::Transitions { run: "r".into(), items: vec![moved("t", StageState::Running, None)], fence: Some("gone".into()) };
        let mut entries = Entries::default();
        let m = transitions(&[&first, &second, &stale], &driving, &key, 1, &mut entries);
        assert_eq!(m.out, [Written::Done, Written::Done, Written::Fenced]);
        assert_eq!(m.rows.len(), 1);
        let row = &m.rows[0];
        assert_eq!((row.name.as_str(), row.state, row.finished_mode, row.finished_at), ("s", Some("succeeded"), 1, Some(9)));
        assert_eq!(row.seal, Some(seals::stage(&key, "r", "s", "succeeded")));
        let (mut id, mut hash) = (0, String::new());
        let chained = entries.chain(&key, &mut id, &mut hash);
        assert_eq!(chained.iter().map(|e| (e.id, e.detail.as_str())).collect::<Vec<_>>(), [(1, "running"), (2, "succeeded")]);
        assert_eq!(chained[1].prev, chained[0].hash);
        assert_eq!((id, hash.as_str()), (2, chained[1].hash.as_str()));
    }
}
