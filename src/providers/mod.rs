//! Where evidence comes from: metric providers behind one trait (Prometheus, web JSON), and the
//! health probes of a deploy (HTTP, Argo CD Applications and Deployments through kube).

pub mod auth;
pub mod kubernetes;
mod prometheus;
mod web;

pub use health::http_ok;
mod health;
pub mod logsource;
pub mod policy;
pub mod pullrequest;
pub mod registry;

use std::future::Future;
use std::time::{Duration, SystemTime};

pub use auth::Credential;
pub use prometheus::Prometheus;
pub use web::{Vars, Web, json_path};

use crate::analysis::Sample;

/// Why a provider could not answer. Every message names the query (or URL) and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request did not get an answer (connection refused, timeout, TLS).
    #[error("query `{query}` to {url} failed: {why}")]
    Request {
        /// The query (or URL for web checks).
        query: String,
        /// The endpoint, credentials removed.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// The endpoint answered with an error (bad query, server error).
    #[error("query `{query}` was refused by {url}: {why}")]
    Refused {
        /// The query.
        query: String,
        /// The endpoint.
        url: String,
        /// The status and the server's own message.
        why: String,
    },
    /// The answer was not what the provider speaks.
    #[error("query `{query}`: the answer from {url} could not be read: {why}")]
    Decode {
        /// The query.
        query: String,
        /// The endpoint.
        url: String,
        /// What was wrong with it.
        why: String,
    },
    /// Credentials named in the pipeline are missing.
    #[error("credentials: {0}")]
    Auth(String),
    /// This provider cannot do what was asked (a range from a web endpoint).
    #[error("{0}")]
    Unsupported(String),
    /// A log source that cannot be read (no file matches, a file or pod that cannot be read).
    #[error("{0}")]
    Unreadable(String),
}

/// A source of measurements.
pub trait MetricProvider: Send + Sync {
    /// One measurement of `query`, now.
    fn instant(&self, query: &str) -> impl Future<Output = Result<Sample, ProviderError>> + Send;

    /// The values of `query` from `start` to `end` every `step` (for comparisons). Several series
    /// are pooled.
    fn range(&self, query: &str, start: SystemTime, end: SystemTime, step: Duration) -> impl Future<Output = Result<Vec<f64>, ProviderError>> + Send;
}

/// Any of the providers a pipeline can name.
pub enum AnyProvider {
    /// Prometheus' HTTP API.
    Prometheus(Prometheus),
    /// A JSON endpoint.
    Web(Web),
}

impl AnyProvider {
    /// Builds the provider a pipeline describes; `vars` interpolates URLs.
    pub fn new(p: &crate::model::Provider, vars: &Vars) -> Result<AnyProvider, ProviderError> {
        Ok(match p {
            crate::model::Provider::Prometheus(p) => AnyProvider::Prometheus(Prometheus::new(&p.address.value, p.auth.as_ref(), p.timeout.0)?),
            crate::model::Provider::Web(w) => AnyProvider::Web(Web::new(w, vars)?),
        })
    }
}

impl MetricProvider for AnyProvider {
    async fn instant(&self, query: &str) -> Result<Sample, ProviderError> {
        match self {
            AnyProvider::Prometheus(p) => p.instant(query).await,
            AnyProvider::Web(w) => w.instant(query).await,
        }
    }

    async fn range(&self, query: &str, start: SystemTime, end: SystemTime, step: Duration) -> Result<Vec<f64>, ProviderError> {
        match self {
            AnyProvider::Prometheus(p) => p.range(query, start, end, step).await,
            AnyProvider::Web(w) => w.range(query, start, end, step).await,
        }
    }
}

/// Installs the process's one TLS crypto provider (ring) before any client is built.
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Whether an HTTP answer of `status` may differ if asked again: a request timeout (408), a rate
/// limit (429) or a server's error (5xx). Any other refusal answers the same again.
pub fn may_pass_later(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT || status == reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// The process's HTTP client (one connection pool, one TLS setup); callers set a timeout per
/// request.
pub fn http_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            install_crypto();
            reqwest::Client::builder().user_agent(concat!("promote/", env!("CARGO_PKG_VERSION"))).build().expect("the HTTP client builds")
        })
        .clone()
}

/// Sends `req` with the credential, and reads the answer: (status, body). Errors name the query
/// and the endpoint (`shown`), never the secret.
async fn send(req: reqwest::RequestBuilder, credential: Option<&Credential>, query: &str, shown: &str) -> Result<(reqwest::StatusCode, String), ProviderError> {
    let req = match credential {
        Some(c) => c.apply(req),
        None => req,
    };
    let scrub = |s: String| credential.map_or(s.clone(), |c| c.scrub(&s));
    let failed = |e| ProviderError::Request { query: query.into(), url: shown.into(), why: scrub(describe(e)) };
    let resp = req.send().await.map_err(failed)?;
    let status = resp.status();
    let body = resp.text().await.map_err(failed)?;
    Ok((status, body))
}

/// An answer that is not a success: its status and the start of its body.
fn refused(credential: Option<&Credential>, query: &str, shown: String, status: reqwest::StatusCode, body: &str) -> ProviderError {
    let text: String = body.chars().take(200).collect();
    let why = format!("HTTP {status}: {}", text.trim());
    ProviderError::Refused { query: query.into(), url: shown, why: credential.map_or(why.clone(), |c| c.scrub(&why)) }
}

/// A URL fit to show: user info replaced by `***`, query string kept.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("***");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => url.to_string(),
    }
}

/// The words of a reqwest error, with its causes, and without the URL (shown separately).
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut words = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !words.contains(&text) {
            words.push_str(": ");
            words.push_str(&text);
        }
        source = s.source();
    }
    words
}
