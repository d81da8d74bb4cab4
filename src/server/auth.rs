//! Who is asking: a token of the server's directory (the API), a web session kept on the server
//! (the pages), or a trusted proxy's identity headers. Each gives an [`ops::access::Person`]
//! with who vouched for them; sign-ins, sign-outs, refused sign-ins and revokes are recorded in
//! the trail.
//!
//! [`ops::access::Person`]: crate::ops::access::Person

use axum::http::{HeaderMap, header};

use super::Server;
use super::ui::session::{self, Session};
use crate::ops::access::{Person, Via};
use crate::store::{EntryKind, SessionRecord, StoreError};

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The OS's random generator failed.
    #[error("no random bytes for a session: {0}")]
    Random(#[from] std::io::Error),
    /// The state failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The person whose directory token `token` is (compared in constant time with every hash).
pub fn person_by_token(server: &Server, token: &str) -> Option<Person> {
    let d = server.directory();
    let login = d.users.by_token(token)?;
    Person::of(&d.users, login, Via::Token, [])
}

/// Opens a session for `person` (with their directory token's hash when they signed in with it,
/// and their IdP's groups), recorded in the trail; the cookie's value.
pub async fn open_session(server: &Server, person: &Person, token_hash: Option<String>, idp_groups: &[String]) -> Result<String, AuthError> {
    let (value, id_hash) = session::new_cookie()?;
    let now = crate::clock::now_ms();
    let record = SessionRecord {
        id_hash,
        login: person.login.clone(),
        via: person.via.encode(),
        token_hash,
        groups: serde_json::to_string(idp_groups).unwrap_or_else(|_| "[]".into()),
        created_at: now,
        seen_at: now,
        expires_at: now + session::LIFETIME_MS,
        ended_at: None,
        detail: format!("{} signed in to the web pages ({})", person.login, person.via),
    };
    server.exec.store.open_session(record).await?;
    tracing::info!(user = %person.login, via = %person.via, "signed in to the web pages");
    Ok(value)
}

/// The person a session cookie names, if the session is open: not ended, not past its end or
/// idle time, its person still in the directory and enabled, their token unchanged.
async fn from_cookie(server: &Server, value: &str) -> Option<Session> {
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id_hash = session::hash(value);
    let record = server.exec.store.session(&id_hash).await.ok()??;
    let now = crate::clock::now_ms();
    if record.ended_at.is_some() || record.expires_at <= now || record.seen_at + session::IDLE_MS <= now {
        return None;
    }
    let via = Via::decode(&record.via)?;
    let d = server.directory();
    if via == Via::Token && d.users.token_hash(&record.login) != record.token_hash.as_deref() {
        // The token it was opened with changed (or was taken away): it ends with it.
        return None;
    }
    let idp: Vec<String> = serde_json::from_str(&record.groups).unwrap_or_default();
    let person = match Person::of(&d.users, &record.login, via.clone(), idp.clone()) {
        Some(p) => p,
        // An IdP's person who is not in the directory: as the IdP described them at sign-in,
        // unless the directory has a disabled person of that login.
        None if matches!(via, Via::Oidc { .. }) && !d.users.users.contains_key(&record.login) => {
            Person { login: record.login.clone(), signature: record.login.clone(), groups: idp.into_iter().collect(), via }
        }
        None => return None,
    };
    if now - record.seen_at > 60_000 {
        let _ = server.exec.store.seen_session(&id_hash).await;
    }
    Some(Session { user: person.login.clone(), person, nonce: id_hash.clone(), id_hash: Some(id_hash) })
}

/// The identity headers a trusted proxy sets (oauth2-proxy's names).
pub const PROXY_HEADERS: [&str; 4] = ["x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-preferred-username"];

/// The person a trusted proxy names (by login or email), if they are in the directory. (The
/// headers of anyone else were dropped before any handler.)
fn proxied(server: &Server, headers: &HeaderMap, peer: Option<std::net::IpAddr>) -> Option<Session> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let (login, email) = (get("x-forwarded-preferred-username").or(get("x-forwarded-user")), get("x-forwarded-email"));
    if login.is_none() && email.is_none() {
        return None;
    }
    let d = server.directory();
    let user = login.and_then(|u| d.users.login(u)).or_else(|| email.and_then(|e| d.users.by_email(e)))?.to_string();
    let addr = peer.map(|p| p.to_string()).unwrap_or_default();
    let person = Person::of(&d.users, &user, Via::Proxy { addr }, [])?;
    let nonce = server.exec.store.key().mac("proxy-session", &[Some(user.as_bytes())]);
    Some(Session { user, person, id_hash: None, nonce })
}

/// The signed-in person of a page's request: named by a trusted proxy, else by the session cookie.
pub async fn session(server: &Server, headers: &HeaderMap, peer: Option<std::net::IpAddr>) -> Option<Session> {
    if let Some(s) = proxied(server, headers, peer) {
        return Some(s);
    }
    let value = cookie(headers, session::COOKIE)?;
    from_cookie(server, &value).await
}

/// A cookie's value.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(&prefix).map(String::from))
}

/// Ends a session (sign-out), recorded in the trail.
pub async fn sign_out(server: &Server, s: &Session) -> Result<(), StoreError> {
    if let Some(h) = &s.id_hash {
        server.exec.store.end_sessions(Some(h), None, EntryKind::SignOut, &s.user, &format!("{} signed out of the web pages", s.user)).await?;
        tracing::info!(user = %s.user, "signed out of the web pages");
    }
    Ok(())
}

/// Ends every open session of `login` (by `by`), recorded in the trail; whether any was open.
pub async fn revoke(server: &Server, login: &str, by: &Person) -> Result<bool, StoreError> {
    let detail = format!("{}'s web sessions ended by {}", login, by.actor());
    server.exec.store.end_sessions(None, Some(login), EntryKind::SessionsRevoked, &by.login, &detail).await
}

/// At most this many refused sign-ins a minute are recorded in the trail (the rest only in the
/// log): a form anyone may post must not let anyone grow the trail without bound.
const REFUSALS_PER_MINUTE: u32 = 30;

/// Records a refused sign-in (in the trail, within [`REFUSALS_PER_MINUTE`]; always in the log).
pub async fn refused_sign_in(server: &Server, peer: Option<std::net::IpAddr>, why: &str) {
    use std::sync::Mutex;
    static WINDOW: Mutex<(i64, u32)> = Mutex::new((0, 0));
    let addr = peer.map(|p| p.to_string()).unwrap_or_else(|| "an unknown address".into());
    tracing::warn!(from = %addr, "a sign-in was refused: {why}");
    let minute = crate::clock::now_ms() / 60_000;
    let record = {
        let mut w = WINDOW.lock().unwrap_or_else(|e| e.into_inner());
        if w.0 != minute {
            *w = (minute, 0);
        }
        w.1 += 1;
        w.1 <= REFUSALS_PER_MINUTE
    };
    if record {
        let detail = format!("a sign-in from {addr} was refused: {why}");
        if let Err(e) = server.exec.store.audit(None, None, EntryKind::SignInRefused, "-", &detail).await {
            tracing::warn!(error = %e, "a refused sign-in could not be recorded in the trail");
        }
    }
}
