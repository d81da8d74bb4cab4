//! An OCI registry's tags, through the distribution API: `GET /v2/NAME/tags/list?n=` with `Link`
//! pagination, signed in by the `WWW-Authenticate: Bearer realm=,service=,scope=` token flow or
//! by basic auth, with the credentials of a docker `config.json` (`auths`).
//!
//! Bounded: each answer is read up to [`MAX_PAGE_BYTES`], a listing stops with an error past
//! [`MAX_TAGS`] tags or [`MAX_PAGES`] pages, each request times out after [`REQUEST_TIMEOUT`]. A
//! 429 or 5xx is [`RegistryError::Busy`] with the registry's `Retry-After`, for the caller to
//! back off. Credentials travel only in `Authorization` headers: the basic one is a
//! [`Secret`] (so redacted wherever it could appear), tokens are kept in [`Token`], which never
//! prints; no error carries a header or an answer's body beyond the registry's own message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use crate::secret::Secret;

/// The most bytes read of one answer (a page of tags, a token).
pub const MAX_PAGE_BYTES: usize = 4 << 20;
/// The most tags one listing takes; a repository with more is an error.
pub const MAX_TAGS: usize = 10_000;
/// The most pages one listing follows.
pub const MAX_PAGES: usize = 50;
/// Tags asked for per page.
pub const PAGE_SIZE: usize = 1000;
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The biggest docker config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a registry's tags could not be listed. No variant carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No answer (connection refused, timeout, TLS).
    #[error("{url}: {why}")]
    Request {
        /// What was asked, without credentials.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// The registry is overloaded or failing (429, 5xx): back off.
    #[error("{url} answered {status}{}", retry_after.map(|d| format!(" (Retry-After {}s)", d.as_secs())).unwrap_or_default())]
    Busy {
        /// What was asked.
        url: String,
        /// The status.
        status: u16,
        /// How long the registry asked to be left alone.
        retry_after: Option<Duration>,
    },
    /// The registry refused (404: no such repository, 403, 400).
    #[error("{url} answered {status}: {why}")]
    Refused {
        /// What was asked.
        url: String,
        /// The status.
        status: u16,
        /// The registry's own message (its `errors[0].message`), or nothing.
        why: String,
    },
    /// Signing in failed (no credentials for a registry that wants them, wrong ones, a token
    /// service that refused).
    #[error("{url}: not signed in: {why}")]
    Unauthorized {
        /// What was asked.
        url: String,
        /// Why.
        why: String,
    },
    /// A limit was reached (answer size, tags, pages).
    #[error("{url}: {why}")]
    TooBig {
        /// What was asked.
        url: String,
        /// Which limit.
        why: String,
    },
    /// An answer that is not the distribution API's JSON.
    #[error("{url}: the answer could not be read: {why}")]
    Decode {
        /// What was asked.
        url: String,
        /// What was wrong.
        why: String,
    },
    /// The docker config file could not be used.
    #[error("the docker config file {file}: {why}")]
    Config {
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
}

impl RegistryError {
    /// How long to wait at least before asking again, when the registry said so (`Busy`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether this is the registry asking to be left alone (429, 5xx).
    pub fn is_busy(&self) -> bool {
        matches!(self, RegistryError::Busy { .. })
    }
}

/// A page of `GET /v2/NAME/tags/list`.
#[derive(Debug, Deserialize)]
struct TagList {
    /// The repository (not checked: some registries answer with their own spelling).
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    /// Its tags on this page (`null` for a repository with none).
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// A token service's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    /// Seconds (default 60, the distribution spec's).
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The distribution API's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A docker `config.json` (only what promote reads).
#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    /// base64 of `user:password`.
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// A bearer token: never printed.
struct Token {
    value: String,
    /// The scope it was asked for, and when it lapses.
    until: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The basic credential for `host` in a docker config file (`user:password`, base64), as a
/// [`Secret`]; `None` when the file has none for that host.
pub fn basic_from_config(file: &std::path::Path, host: &str) -> Result<Option<Secret>, RegistryError> {
    let shown = file.display().to_string();
    let err = |why: String| RegistryError::Config { file: shown.clone(), why };
    let meta = std::fs::metadata(file).map_err(|e| err(e.kind().to_string()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(err(format!("bigger than {MAX_CONFIG_BYTES} bytes")));
    }
    let text = std::fs::read(file).map_err(|e| err(e.kind().to_string()))?;
    // serde's message names a position, never the value.
    let config: DockerConfig = serde_json::from_slice(&text).map_err(|e| err(format!("not a docker config.json: {}", e.classify_name())))?;
    let host_of = |key: &str| {
        let k = key.split_once("://").map_or(key, |(_, rest)| rest);
        k.split('/').next().unwrap_or("").to_ascii_lowercase()
    };
    let wanted = host.to_ascii_lowercase();
    let docker_hub = |h: &str| matches!(h, "index.docker.io" | "docker.io" | "registry-1.docker.io");
    let entry = config
        .auths
        .iter()
        .find(|(k, _)| host_of(k) == wanted)
        .or_else(|| docker_hub(&wanted).then(|| config.auths.iter().find(|(k, _)| docker_hub(&host_of(k)))).flatten());
    let Some((_, a)) = entry else { return Ok(None) };
    let pair = match (&a.auth, &a.username, &a.password) {
        (Some(b64), _, _) if !b64.trim().is_empty() => {
            let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| err(format!("the `auth` of {host} is not base64")))?;
            let pair = String::from_utf8(raw).map_err(|_| err(format!("the `auth` of {host} is not text")))?;
            if !pair.contains(':') {
                return Err(err(format!("the `auth` of {host} is not base64 of `user:password`")));
            }
            pair
        }
        (_, Some(u), Some(p)) => format!("{u}:{p}"),
        _ => return Err(err(format!("the entry of {host} has neither `auth` nor `username` and `password`"))),
    };
    let (user, password) = pair.split_once(':').expect("checked");
    crate::redact::register_basic(user, password);
    Ok(Some(Secret::new(base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()))))
}

trait ClassifyName {
    fn classify_name(&self) -> String;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> String {
        format!("{:?} error at line {} column {}", self.classify(), self.line(), self.column())
    }
}

/// One repository of one registry, with the token it was last given.
pub struct Repository {
    client: reqwest::Client,
    /// `https://HOST` (or `http://` when insecure).
    base: String,
    /// The repository's name in the registry (`acme/checkout`).
    name: String,
    token: Option<Token>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({}/{})", self.base, self.name)
    }
}

impl Repository {
    /// The repository `name` at `host`, over https (or http when `insecure`).
    pub fn new(host: &str, name: &str, insecure: bool) -> Repository {
        let scheme = if insecure { "http" } else { "https" };
        Repository { client: super::http_client(), base: format!("{scheme}://{host}"), name: name.to_string(), token: None }
    }

    /// Where the tags are listed (for messages).
    pub fn url(&self) -> String {
        format!("{}/v2/{}/tags/list", self.base, self.name)
    }

    /// Every tag of the repository (in the registry's order), through every page, within the
    /// limits; `basic` signs in where the registry asks.
    pub async fn tags(&mut self, basic: Option<&Secret>) -> Result<Vec<String>, RegistryError> {
        let mut next = format!("{}?n={PAGE_SIZE}", self.url());
        let mut all: Vec<String> = Vec::new();
        for _ in 0..MAX_PAGES {
            let (body, link) = self.get(&next, basic).await?;
            let page: TagList = serde_json::from_slice(&body).map_err(|e| RegistryError::Decode { url: self.url(), why: e.to_string() })?;
            all.extend(page.tags.unwrap_or_default());
            if all.len() > MAX_TAGS {
                return Err(RegistryError::TooBig { url: self.url(), why: format!("more than {MAX_TAGS} tags: promote follows at most {MAX_TAGS}") });
            }
            match link.and_then(|l| next_link(&l)) {
                Some(path) => next = self.same_origin(&path)?,
                None => {
                    all.sort();
                    all.dedup();
                    return Ok(all);
                }
            }
        }
        Err(RegistryError::TooBig { url: self.url(), why: format!("more than {MAX_PAGES} pages of tags") })
    }

    /// A `Link` target on this registry (a relative one is resolved against it; another host is
    /// refused: credentials go nowhere else).
    fn same_origin(&self, target: &str) -> Result<String, RegistryError> {
        let base = url::Url::parse(&self.base).map_err(|e| RegistryError::Decode { url: self.url(), why: e.to_string() })?;
        let u = base.join(target).map_err(|_| RegistryError::Decode { url: self.url(), why: "a `Link` that is not a URL".into() })?;
        if u.origin() != base.origin() || !u.path().starts_with("/v2/") {
            return Err(RegistryError::Decode { url: self.url(), why: "a `Link` to another host or outside /v2/".into() });
        }
        Ok(u.to_string())
    }

    /// One GET with the token or basic auth; a 401 with a bearer challenge gets a token and
    /// asks once more. Answers (body, `Link`).
    async fn get(&mut self, url: &str, basic: Option<&Secret>) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let mut asked_token = false;
        loop {
            let mut req = self.client.get(url).timeout(REQUEST_TIMEOUT);
            if let Some(t) = self.token.as_ref().filter(|t| t.until > Instant::now()) {
                req = req.header(reqwest::header::AUTHORIZATION, format!("Bearer {}", t.value));
            } else if let Some(b) = basic {
                req = req.header(reqwest::header::AUTHORIZATION, format!("Basic {}", b.expose()));
            }
            let resp = req.send().await.map_err(|e| RegistryError::Request { url: self.url(), why: super::describe(e) })?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                let challenge = resp.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                if !asked_token && let Some(params) = bearer_challenge(&challenge) {
                    self.token = Some(self.fetch_token(&params, basic).await?);
                    asked_token = true;
                    continue;
                }
                let why = if basic.is_none() { "the registry wants credentials: give `auth: {dockerConfigFile}`" } else { "the credentials were refused" };
                return Err(RegistryError::Unauthorized { url: self.url(), why: why.into() });
            }
            if super::may_pass_later(status) {
                let retry_after = resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
                return Err(RegistryError::Busy { url: self.url(), status: status.as_u16(), retry_after });
            }
            let link = resp.headers().get(reqwest::header::LINK).and_then(|v| v.to_str().ok()).map(String::from);
            let body = read_bounded(resp, &self.url()).await?;
            if !status.is_success() {
                let why = serde_json::from_slice::<ErrorBody>(&body)
                    .ok()
                    .and_then(|b| b.errors.into_iter().next())
                    .map(|e| crate::diag::printable(&format!("{} {}", e.code, e.message)).chars().take(200).collect::<String>())
                    .unwrap_or_default();
                return Err(RegistryError::Refused { url: self.url(), status: status.as_u16(), why: crate::redact::text(&why).into_owned() });
            }
            return Ok((body, link));
        }
    }

    /// A token from the challenge's realm for pulling this repository.
    async fn fetch_token(&self, params: &HashMap<String, String>, basic: Option<&Secret>) -> Result<Token, RegistryError> {
        let realm = params.get("realm").cloned().unwrap_or_default();
        let unauthorized = |why: String| RegistryError::Unauthorized { url: self.url(), why };
        let mut realm_url = url::Url::parse(&realm).map_err(|_| unauthorized("the token realm is not a URL".into()))?;
        if !matches!(realm_url.scheme(), "https" | "http") {
            return Err(unauthorized("the token realm is not http(s)".into()));
        }
        {
            let mut q = realm_url.query_pairs_mut();
            if let Some(s) = params.get("service") {
                q.append_pair("service", s);
            }
            q.append_pair("scope", &format!("repository:{}:pull", self.name));
        }
        let mut req = self.client.get(realm_url).timeout(REQUEST_TIMEOUT);
        if let Some(b) = basic {
            req = req.header(reqwest::header::AUTHORIZATION, format!("Basic {}", b.expose()));
        }
        let resp = req.send().await.map_err(|e| RegistryError::Request { url: self.url(), why: format!("the token service: {}", super::describe(e)) })?;
        let status = resp.status();
        if super::may_pass_later(status) {
            let retry_after = resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
            return Err(RegistryError::Busy { url: self.url(), status: status.as_u16(), retry_after });
        }
        if !status.is_success() {
            return Err(unauthorized(format!("the token service answered {}", status.as_u16())));
        }
        let body = read_bounded(resp, &self.url()).await?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| unauthorized("the token service's answer is not a token".into()))?;
        let value = answer.token.or(answer.access_token).filter(|t| !t.is_empty()).ok_or_else(|| unauthorized("the token service gave no token".into()))?;
        // Asked again a little before it lapses.
        let life = Duration::from_secs(answer.expires_in.unwrap_or(60).clamp(10, 3600));
        Ok(Token { value, until: Instant::now() + life - Duration::from_secs(5) })
    }
}

/// The body, up to [`MAX_PAGE_BYTES`].
async fn read_bounded(mut resp: reqwest::Response, shown: &str) -> Result<Vec<u8>, RegistryError> {
    let too_big = || RegistryError::TooBig { url: shown.to_string(), why: format!("an answer bigger than {MAX_PAGE_BYTES} bytes") };
    if resp.content_length().is_some_and(|n| n > MAX_PAGE_BYTES as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| RegistryError::Request { url: shown.to_string(), why: super::describe(e) })? {
        if body.len() + chunk.len() > MAX_PAGE_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The parameters of a `Bearer realm="...",service="...",scope="..."` challenge.
fn bearer_challenge(header: &str) -> Option<HashMap<String, String>> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = HashMap::new();
    let mut s = params.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, rest) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.insert(key, value.to_string());
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    out.contains_key("realm").then_some(out)
}

/// The target of a `Link: <...>; rel="next"` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| p.trim().replace(' ', "").eq_ignore_ascii_case("rel=\"next\"") || p.trim().eq_ignore_ascii_case("rel=next"))
            .then(|| target.to_string())
    })
}

/// A `Retry-After`: seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let ms = at.as_millisecond() - jiff::Timestamp::now().as_millisecond();
    Some(Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_links_and_retry_after_are_read() {
        let c = bearer_challenge(r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#).unwrap();
        assert_eq!(c["realm"], "https://auth.example.com/token");
        assert_eq!(c["service"], "registry.example.com");
        assert!(bearer_challenge(r#"Basic realm="Registry Realm""#).is_none());
        assert_eq!(next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(), Some("/v2/a/tags/list?n=2&last=b"));
        assert_eq!(next_link(r#"<https://x/y>; rel="prev""#), None);
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT").is_some());
    }

    #[test]
    fn docker_configs_give_basic_credentials_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("robot:s3cret-pass");
        std::fs::write(
            &f,
            format!(r#"{{"auths": {{"https://reg.example.com/v1/": {{"auth": "{b64}"}}, "other:5000": {{"username": "u", "password": "pw-123456"}}}}}}"#),
        )
        .unwrap();
        assert_eq!(basic_from_config(&f, "reg.example.com").unwrap().unwrap().expose(), b64);
        let other = basic_from_config(&f, "other:5000").unwrap().unwrap();
        assert_eq!(other.expose(), base64::engine::general_purpose::STANDARD.encode("u:pw-123456"));
        assert!(basic_from_config(&f, "nope.example.com").unwrap().is_none());
        std::fs::write(&f, r#"{"auths": {"reg.example.com": {"auth": "not base64!"}}}"#).unwrap();
        let e = basic_from_config(&f, "reg.example.com").unwrap_err().to_string();
        assert!(!e.contains("not base64!") && e.contains("is not base64"), "{e}");
        assert!(!format!("{other:?}").contains("pw-123456"));
    }
}
