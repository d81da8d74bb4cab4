//! `health.http`: an endpoint that must answer with the expected status.

use std::time::Duration;

use super::{describe, http_client, shown_url};

/// Whether `url` answers `expect` now: `Ok(None)` yes, `Ok(Some(why))` not yet, with what it said.
pub async fn http_ok(url: &str, expect: u16, timeout: Duration) -> Option<String> {
    match http_client().get(url).timeout(timeout).send().await {
        Ok(r) if r.status().as_u16() == expect => None,
        Ok(r) => Some(format!("{} answered HTTP {} (expected {expect})", shown_url(url), r.status())),
        Err(e) => Some(format!("{}: {}", shown_url(url), describe(e))),
    }
}
