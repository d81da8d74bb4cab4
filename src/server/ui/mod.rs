//! `/ui/`: the web pages (server-rendered, templates checked at compile time, assets in the
//! binary): the inbox of decisions, runs and their DAG drawn live, the environments matrix, the
//! audit trail. Every action goes through the same `ops` as the CLI and the API, as the signed-in
//! person, with the CSRF token of their session; nothing is allowed because a button was shown.

mod audit;
mod compliance;
mod dag;
mod decision;
mod drift;
mod environments;
mod inbox;
mod report;
mod runs;
pub mod session;
mod signin;
mod sso;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::Server;
use crate::ops::access::Caller;
use crate::ops::decide::Mode;
use crate::store::{RunRecord, StageState};
use session::Session;
use {audit::*, environments::*, inbox::*, runs::*, signin::*};

pub(super) fn routes() -> axum::Router<Server> {
    axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(inbox))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/auth/login", get(sso::login))
        .route("/ui/auth/callback", get(sso::callback))
        .route("/ui/decide", post(decide))
        .route("/ui/drift", post(decide_drift))
        .route("/ui/drifts/{id}", get(drift::page).post(drift::step))
        .route("/ui/compliance/{id}", get(compliance::page).post(compliance::step))
        .route("/ui/watch/clear", post(clear_watch))
        .route("/ui/runs", get(runs))
        .route("/ui/runs/{id}", get(run))
        .route("/ui/runs/{id}/report", get(report::page))
        .route("/ui/runs/{id}/decisions/{stage}", get(decision::page).post(decision::step))
        .route("/ui/runs/{id}/state", get(run_state))
        .route("/ui/runs/{id}/events", get(run_events))
        .route("/ui/environments", get(environments))
        .route("/ui/rollback", post(rollback))
        .route("/ui/audit", get(audit))
        .route("/ui/assets/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("app.css")) }))
        .route("/ui/assets/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("app.js")) }))
}

/// A page's answer when it cannot be shown: its status and why (in the page's frame).
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let page = Message {
            title: self.0.canonical_reason().unwrap_or("Error").to_string(),
            message: crate::redact::text(&self.1).into_owned(),
            user: None,
            csrf: String::new(),
        };
        (self.0, Html(page.render().unwrap_or_default())).into_response()
    }
}

type Page = Result<Response, Refusal>;

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Whether the pages are served over TLS (a proxy in front says so): cookies are `Secure` then.
fn over_tls(server: &Server, headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").is_some_and(|v| v == "https") || server.exec.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

/// The header through which the middleware tells handlers which trusted proxy a request came
/// from (removed from every request first: nobody can send it).
const PROXY_ADDR: &str = "x-promote-trusted-proxy";

/// Drops the identity headers of every request that does not come from a trusted proxy, so that
/// no handler can take them from anyone else; names the proxy for those that do.
pub(super) async fn only_trusted_identity(State(server): State<Server>, mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let peer = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    request.headers_mut().remove(PROXY_ADDR);
    match peer.filter(|ip| server.config.trusted_proxies.contains(ip)) {
        Some(ip) => {
            if let Ok(v) = axum::http::HeaderValue::from_str(&ip.to_string()) {
                request.headers_mut().insert(PROXY_ADDR, v);
            }
        }
        None => {
            for h in super::auth::PROXY_HEADERS {
                request.headers_mut().remove(h);
            }
        }
    }
    next.run(request).await
}

/// The signed-in person: named by a trusted proxy, else by the session kept on the server.
async fn session(server: &Server, headers: &HeaderMap) -> Option<Session> {
    let proxy = headers.get(PROXY_ADDR).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    super::auth::session(server, headers, proxy).await
}

/// The sign-in page, for who is not signed in.
fn to_login() -> Response {
    Redirect::to("/ui/login").into_response()
}

fn html(t: impl Template) -> Page {
    Ok(Html(t.render().map_err(internal)?).into_response())
}
