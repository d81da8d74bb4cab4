//! `/ui/auth/login` and `/ui/auth/callback`: single sign-on by OpenID Connect
//! ([`crate::server::oidc`]). The sign-in under way is kept in the browser, in a short-lived
//! `HttpOnly`, `SameSite=Lax` cookie sealed with the server's key (state, nonce, PKCE verifier):
//! nothing is kept on the server until the person is known.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect};

use super::{Message, PROXY_ADDR, Page, Refusal, internal, over_tls, session};
use crate::server::Server;
use crate::server::oidc::{self, OidcError};

/// The redirect URI registered at the IdP: `{--public-url}/ui/auth/callback`.
fn redirect_uri(server: &Server) -> String {
    format!("{}/ui/auth/callback", server.exec.public_url.as_deref().unwrap_or_default().trim_end_matches('/'))
}

fn peer(headers: &HeaderMap) -> Option<std::net::IpAddr> {
    headers.get(PROXY_ADDR).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// A page that says why the sign-in did not happen (the flow's cookie is cleared).
fn refused(status: StatusCode, message: String, tls: bool) -> Page {
    let page = Message { title: "Not signed in".into(), message, user: None, csrf: String::new() };
    Ok((status, AppendHeaders([(header::SET_COOKIE, oidc::clear_flow_cookie(tls))]), Html(page.render().map_err(internal)?)).into_response())
}

/// Sends the browser to the IdP (authorization code, PKCE S256, state and nonce).
pub(super) async fn login(State(server): State<Server>, headers: HeaderMap) -> Page {
    let Some(oidc) = server.config.oidc.clone() else {
        return Err(Refusal(StatusCode::NOT_FOUND, "single sign-on is not set up on this server (`promote serve --oidc-issuer`): sign in with a token".into()));
    };
    let tls = over_tls(&server, &headers);
    match oidc.begin(&redirect_uri(&server), server.exec.store.key()).await {
        Ok((location, flow)) => Ok((AppendHeaders([(header::SET_COOKIE, oidc::set_flow_cookie(&flow, tls))]), Redirect::to(&location)).into_response()),
        Err(e) => {
            tracing::warn!(issuer = %oidc.issuer(), error = %e, "a single sign-on could not start");
            Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("Single sign-on is not available right now ({e}). Sign in with a token meanwhile.")))
        }
    }
}

#[derive(serde::Deserialize)]
pub(super) struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Where the IdP sends the browser back: the code is exchanged, the ID token verified, the
/// person found, and a session opened on the server.
pub(super) async fn callback(State(server): State<Server>, headers: HeaderMap, Query(q): Query<Callback>) -> Page {
    let Some(oidc) = server.config.oidc.clone() else {
        return Err(Refusal(StatusCode::NOT_FOUND, "single sign-on is not set up on this server".into()));
    };
    let (tls, peer) = (over_tls(&server, &headers), peer(&headers));
    if let Some(e) = &q.error {
        let e: String = e.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        crate::server::auth::refused_sign_in(&server, peer, &format!("the identity provider {} answered `{e}` to a single sign-on", oidc.issuer())).await;
        return refused(StatusCode::UNAUTHORIZED, format!("The identity provider did not sign you in (`{e}`)."), tls);
    }
    let (Some(code), Some(state)) = (q.code.as_deref(), q.state.as_deref()) else {
        return refused(StatusCode::BAD_REQUEST, "The identity provider sent no code and state back: start the sign-in again.".into(), tls);
    };
    let flow = crate::server::auth::cookie(&headers, oidc::FLOW_COOKIE);
    let claims = match oidc.finish(&redirect_uri(&server), server.exec.store.key(), flow.as_deref(), code, state, q.iss.as_deref()).await {
        Ok(c) => c,
        Err(e @ OidcError::Flow) => return refused(StatusCode::BAD_REQUEST, format!("Not signed in: {e}."), tls),
        Err(e) => {
            crate::server::auth::refused_sign_in(&server, peer, &format!("a single sign-on with {} failed: {e}", oidc.issuer())).await;
            let status = if matches!(e, OidcError::Token(_)) { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_GATEWAY };
            return refused(status, format!("Not signed in: {e}."), tls);
        }
    };
    let (person, groups) = match oidc.person(&server.directory().users, &claims) {
        Ok(p) => p,
        Err(e) => {
            let why = format!("OIDC subject {} of {}: {e}", claims.subject, oidc.issuer());
            crate::server::auth::refused_sign_in(&server, peer, &why).await;
            return refused(StatusCode::FORBIDDEN, format!("Not signed in: {e}."), tls);
        }
    };
    let cookie = crate::server::auth::open_session(&server, &person, None, &groups).await.map_err(internal)?;
    // A page, not a redirect, takes the browser on to the inbox: it arrived here by a cross-site
    // navigation from the IdP, and a redirect chain that began cross-site would not carry the
    // session's SameSite=Strict cookie to /ui/.
    let page = SignedIn { user: person.login.clone() };
    Ok((
        AppendHeaders([(header::SET_COOKIE, session::set_cookie(&cookie, tls)), (header::SET_COOKIE, oidc::clear_flow_cookie(tls))]),
        Html(page.render().map_err(internal)?),
    )
        .into_response())
}

#[derive(Template)]
#[template(
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/ui/"><title>Signed in</title></head>
<body><p>Signed in as {{ user }}. <a href="/ui/">Continue to the inbox</a>.</p></body></html>
"#,
    ext = "html"
)]
struct SignedIn {
    user: String,
}
