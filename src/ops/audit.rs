//! Reading the audit trail: verification (against the heads kept in Git and heads kept
//! elsewhere), and its pages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::OpsError;
use crate::exec::Executor;
use crate::git::{KeptHead, Remote};
use crate::store::{Entry, Store, Tamper, Verdict};

/// Verifies the whole trail: every hash and link (keyed, so no entry can be forged or
/// recomputed without the key); then against the heads kept in Git, in the head repo of each
/// pipeline in `against` (pipeline files) or, without it, of each pipeline this state has run
/// (which a wiped state no longer knows: name the pipeline then); then against heads kept
/// elsewhere (`known`). The first problem is the verdict's.
pub async fn verify(exec: &Executor, known: &[String], against: &[PathBuf]) -> Result<Verdict, OpsError> {
    let store = &exec.store;
    let mut v = store.verify_audit().await?;
    let remotes = head_remotes(store, against).await?;
    let state = store.state_id().await?;
    let last = store.last_entry().await?;
    for (shown, remote) in remotes {
        let (writer, key) = (exec.writer.clone(), store.key().clone());
        let heads = tokio::task::spawn_blocking(move || writer.kept_heads(&remote, &key))
            .await
            .map_err(|e| OpsError::Stopped(format!("the git writer stopped: {e}")))??;
        let (sealed, forged): (Vec<&KeptHead>, Vec<&KeptHead>) = heads.iter().partition(|h| h.sealed);
        if !forged.is_empty() {
            v.kept.push(format!("{shown}: {} head(s) without this key's seal ignored (pushed by someone without the key)", forged.len()));
        }
        let mine = state.as_ref().and_then(|s| sealed.iter().filter(|h| &h.state == s).max_by_key(|h| h.seq));
        let problem = match (&state, mine, sealed.first()) {
            (_, Some(h), _) => {
                let at = store.audit_entries(None, h.seq - 1, 1).await?.into_iter().next().filter(|e| e.seq == h.seq);
                match at {
                    None if last < h.seq => Some(Tamper::HeadAhead { kept_in: shown.clone(), head: h.seq, last }),
                    Some(e) if e.hash.as_deref() == Some(h.hash.as_str()) => {
                        v.kept.push(format!("{shown}: the head kept there (#{}) is in the trail", h.seq));
                        None
                    }
                    _ => Some(Tamper::HeadDiverged { kept_in: shown.clone(), seq: h.seq }),
                }
            }
            (None, None, Some(_)) => Some(Tamper::NoStateId { kept_in: shown.clone() }),
            (Some(_), None, Some(other)) => Some(Tamper::Replaced { kept_in: shown.clone(), state: other.state.clone(), seq: other.seq }),
            (_, None, None) => {
                v.kept.push(format!("{shown}: keeps no head yet (one is kept when a run ends)"));
                None
            }
        };
        if v.tamper.is_none() {
            v.tamper = problem;
        }
    }
    if v.tamper.is_none() {
        for h in known {
            if store.audit_entry_with_hash(h).await?.is_none() {
                v.tamper = Some(Tamper::Rewritten { known: h.clone() });
                break;
            }
        }
    }
    Ok(v)
}

/// The head repos to compare with, by their shown form: those of the pipeline files given, or
/// of the pipelines this state has run (their newest run's sealed source).
async fn head_remotes(store: &Store, against: &[PathBuf]) -> Result<BTreeMap<String, Remote>, OpsError> {
    let mut out = BTreeMap::new();
    let mut add = |source: &str, file: &Path, what: &str| -> Result<(), OpsError> {
        let mut diags = crate::diag::Diagnostics::new(file.display().to_string());
        let Some(p) = crate::model::load(source, &mut diags) else {
            return Err(OpsError::Refused(format!("{what} does not load as a pipeline: {}", file.display())));
        };
        let base = file.parent().unwrap_or(Path::new("."));
        if let Some(r) = crate::exec::head_remote(&p, base) {
            out.insert(r.to_string(), r);
        }
        Ok(())
    };
    if !against.is_empty() {
        for f in against {
            let text = crate::files::read_text(f, crate::files::MAX_TEXT).map_err(|e| OpsError::Refused(format!("--against {}: {}", f.display(), e.why)))?;
            add(&text, &std::path::absolute(f).unwrap_or_else(|_| f.clone()), "--against")?;
        }
        return Ok(out);
    }
    let mut seen = std::collections::HashSet::new();
    for r in store.runs(10_000).await? {
        if !seen.insert(r.pipeline.clone()) {
            continue;
        }
        // A run whose seal fails is reported by the chain's verdict, not followed here.
        if let Ok(run) = store.run(&r.id).await {
            add(&run.source, Path::new(&run.file), "a stored pipeline")?;
        }
    }
    Ok(out)
}

/// The trail, oldest first (optionally one run's), in pages of `page` entries after `after`.
pub async fn entries(store: &Store, run: Option<&str>, after: i64, page: i64) -> Result<Vec<Entry>, OpsError> {
    Ok(store.audit_entries(run, after, page).await?)
}
