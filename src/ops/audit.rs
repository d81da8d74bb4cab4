//! Reading the audit trail: verification (with heads kept elsewhere), and its pages.

use super::OpsError;
use crate::store::{Entry, Store, Tamper, Verdict};

/// Verifies the whole trail; a head kept from an earlier verification (`known`) that is no longer
/// in it means the trail was rewritten and every hash recomputed.
pub async fn verify(store: &Store, known: &[String]) -> Result<Verdict, OpsError> {
    let mut v = store.verify_audit().await?;
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

/// The trail, oldest first (optionally one run's), in pages of `page` entries after `after`.
pub async fn entries(store: &Store, run: Option<&str>, after: i64, page: i64) -> Result<Vec<Entry>, OpsError> {
    Ok(store.audit_entries(run, after, page).await?)
}
