//! The audit trail's chain, shared by every backend: the hash of an entry, what an entry is, and
//! what a verification found.
//!
//! Every entry's `hash` is an HMAC-SHA256, under the key of [`crate::seal`] (kept outside the
//! state), over the previous entry's hash and the entry's own fields (sequence number, run, stage,
//! time, kind, actor, detail), each length-prefixed. A backend computes it with [`chain_hash`] as
//! it appends, keeps the head, and verifies with the same function. Without the key nobody can
//! add, change or recompute an entry that verifies; a cut tail or a wipe is caught by the head
//! promote also keeps in Git (`refs/promote/audit` of the pipeline's first environment repo).

use crate::seal::Key;

/// The hash of an entry: the key's MAC (domain `audit`) over `prev` and each field (a tag byte,
/// 0 = NULL, 1 = text, then its length and bytes). Integers are in decimal.
pub fn chain_hash(key: &Key, prev: &str, fields: &[Option<&[u8]>]) -> String {
    let mut all = Vec::with_capacity(fields.len() + 1);
    all.push(Some(prev.as_bytes()));
    all.extend_from_slice(fields);
    key.mac("audit", &all)
}

/// One entry of the trail.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its sequence number (the events table's id).
    pub seq: i64,
    /// When, Unix milliseconds.
    pub at: i64,
    /// When, RFC 3339 in UTC.
    pub time: String,
    /// The run it belongs to.
    pub run: String,
    /// The stage, if any.
    pub stage: Option<String>,
    /// What kind of entry.
    pub kind: String,
    /// Who.
    pub actor: String,
    /// What happened.
    pub detail: String,
    /// The previous entry's hash (empty for the first).
    pub prev_hash: Option<String>,
    /// This entry's hash.
    pub hash: Option<String>,
}

impl Entry {
    /// The hash this entry should have after `prev`.
    pub fn expected_hash(&self, key: &Key, prev: &str) -> String {
        self.expected_hash_at(key, prev, self.seq)
    }

    /// The hash this entry would have had as entry `seq` (to tell a moved entry from an altered one).
    pub fn expected_hash_at(&self, key: &Key, prev: &str, seq: i64) -> String {
        entry_hash(key, prev, seq, &self.run, self.stage.as_deref(), self.at, &self.kind, &self.actor, &self.detail)
    }
}

/// The hash of entry `seq` after `prev`: what every backend writes and verification recomputes.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(key: &Key, prev: &str, seq: i64, run: &str, stage: Option<&str>, at: i64, kind: &str, actor: &str, detail: &str) -> String {
    let (seq, at) = (seq.to_string(), at.to_string());
    chain_hash(
        key,
        prev,
        &[
            Some(seq.as_bytes()),
            Some(run.as_bytes()),
            stage.map(str::as_bytes),
            Some(at.as_bytes()),
            Some(kind.as_bytes()),
            Some(actor.as_bytes()),
            Some(detail.as_bytes()),
        ],
    )
}

/// What is wrong with a trail: the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "problem")]
pub enum Tamper {
    /// The entry's content no longer matches its hash.
    Altered {
        /// The entry.
        seq: i64,
    },
    /// Entries before this one are gone.
    Removed {
        /// The entry that does not follow its predecessor.
        seq: i64,
        /// The entry now before it (0: none).
        after: i64,
    },
    /// The entry does not follow the one before it, though none is missing: rows were reordered
    /// or replaced.
    Reordered {
        /// The entry.
        seq: i64,
        /// The entry before it.
        after: i64,
    },
    /// The entry's content is intact but stands at another place than the one it was written at:
    /// rows were swapped or moved.
    Moved {
        /// Where it is now.
        seq: i64,
        /// Where promote wrote it.
        written_as: i64,
    },
    /// The entry was written without the chain (by hand, with the trigger removed).
    Unhashed {
        /// The entry.
        seq: i64,
    },
    /// A head kept elsewhere is no longer in the trail: it was rewritten and every hash
    /// recomputed.
    Rewritten {
        /// The head given.
        known: String,
    },
    /// The head kept in Git is past the trail's end: entries at the end were removed (or all).
    HeadAhead {
        /// Where the head is kept.
        kept_in: String,
        /// The entry it names.
        head: i64,
        /// The last entry there now (0: none).
        last: i64,
    },
    /// The entry the head kept in Git names has another hash now: the trail was rewritten.
    HeadDiverged {
        /// Where the head is kept.
        kept_in: String,
        /// The entry.
        seq: i64,
    },
    /// The state has lost its id, while Git keeps sealed heads: it was emptied by hand.
    NoStateId {
        /// Where heads are kept.
        kept_in: String,
    },
    /// Git keeps sealed heads of another state and none of this one: this state replaced it.
    Replaced {
        /// Where heads are kept.
        kept_in: String,
        /// The state whose head is kept.
        state: String,
        /// Its last entry.
        seq: i64,
    },
    /// Entries at the end are gone: the head promote wrote last is not the last entry.
    TailCut {
        /// The last entry promote wrote.
        head: i64,
        /// The last entry there now (0: none).
        last: i64,
    },
}

impl Tamper {
    /// The first bad entry's number.
    pub fn seq(&self) -> i64 {
        match self {
            Tamper::Altered { seq } | Tamper::Removed { seq, .. } | Tamper::Reordered { seq, .. } | Tamper::Moved { seq, .. } | Tamper::Unhashed { seq } => {
                *seq
            }
            Tamper::TailCut { last, .. } | Tamper::HeadAhead { last, .. } => *last + 1,
            Tamper::HeadDiverged { seq, .. } => *seq,
            Tamper::NoStateId { .. } | Tamper::Replaced { .. } => 0,
            Tamper::Rewritten { .. } => 0,
        }
    }
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tamper::Altered { seq } => write!(f, "entry #{seq} was altered: its content does not match its hash"),
            Tamper::Removed { seq, after: 0 } => write!(f, "entries before #{seq} were removed: it does not follow the start of the trail"),
            Tamper::Removed { seq, after } => write!(f, "entries between #{after} and #{seq} were removed: #{seq} does not follow #{after}"),
            Tamper::Reordered { seq, after } => write!(f, "entry #{seq} does not follow #{after}: entries were reordered or replaced"),
            Tamper::Moved { seq, written_as } => write!(f, "entry #{seq} was written as #{written_as}: entries were reordered (swapped or moved)"),
            Tamper::Unhashed { seq } => write!(f, "entry #{seq} has no hash: it was written outside promote's chain"),
            Tamper::HeadAhead { kept_in, head, last } => {
                write!(f, "the trail ends at #{last} but the head kept in {kept_in} ({HEAD}) is #{head}: entries at the end were removed")
            }
            Tamper::HeadDiverged { kept_in, seq } => {
                write!(f, "entry #{seq} is not the one whose hash {kept_in} keeps ({HEAD}): the trail was rewritten")
            }
            Tamper::NoStateId { kept_in } => {
                write!(f, "the state has lost its id while {kept_in} ({HEAD}) keeps sealed heads: the state was emptied by hand")
            }
            Tamper::Replaced { kept_in, state, seq } => write!(
                f,
                "{kept_in} ({HEAD}) keeps the head #{seq} of state {state} and none of this one: this state replaced that one (was it wiped?); once a run of this state ends, its own head is kept and this is no longer reported"
            ),
            Tamper::TailCut { head, last } => write!(f, "the trail ends at #{last} but promote last wrote #{head}: entries at the end were removed"),
            Tamper::Rewritten { known } => {
                write!(f, "the head {known} kept from an earlier verify is not in the trail: it was rewritten and its hashes recomputed")
            }
        }
    }
}

/// Where the heads are kept in Git, for messages.
const HEAD: &str = "refs/promote/audit";

/// The outcome of a verification.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Entries in the trail.
    pub entries: i64,
    /// The last entry's hash (keep it elsewhere to catch a wholesale rewrite).
    pub head: Option<String>,
    /// The first problem found, if any.
    pub tamper: Option<Tamper>,
    /// What the heads kept in Git said, a line per repo.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_counts_and_boundaries_are_kept() {
        let k = Key::from_bytes([1; 32]);
        let a = chain_hash(&k, "", &[Some(b"1"), Some(b"ab"), Some(b"c")]);
        let b = chain_hash(&k, "", &[Some(b"1"), Some(b"a"), Some(b"bc")]);
        let c = chain_hash(&k, "", &[Some(b"1"), None, Some(b"abc")]);
        let d = chain_hash(&k, "x", &[Some(b"1"), Some(b"ab"), Some(b"c")]);
        let e = chain_hash(&Key::from_bytes([2; 32]), "", &[Some(b"1"), Some(b"ab"), Some(b"c")]);
        assert_eq!(a.len(), 64);
        assert!(a != b && a != c && a != d && b != c && a != e);
        assert_eq!(a, chain_hash(&k, "", &[Some(b"1"), Some(b"ab"), Some(b"c")]));
    }
}
