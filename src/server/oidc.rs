//! Single sign-on by OpenID Connect: the authorization code flow with PKCE (S256), `state` and
//! `nonce` for the web pages, and bearer JWTs of the same issuer for the API.
//!
//! The provider is found by discovery (`{issuer}/.well-known/openid-configuration`) at start,
//! retried in the background while it does not answer (the server serves token sign-in
//! meanwhile). Its signing keys (JWKS) are cached, read again for a key id they do not have (at
//! most once a minute) and when an hour old.
//!
//! A token is accepted when it is signed by one of those keys with an asymmetric algorithm
//! (never `none` or an HMAC), its `iss` is the issuer exactly, its `aud` holds the client id (and
//! `azp` is the client id when there are several audiences), it has not expired (and is not
//! before its `nbf`), within a minute of clock skew, and, for an ID token of the pages' flow,
//! its `nonce` is the one sent. The person is then found by [`Oidc::person`]: a login of the
//! server's directory only with the directory's email, verified by the IdP; else an IdP person
//! with the IdP's groups.
//!
//! Every answer of the IdP is bounded in time (10 s) and size; no secret (the client secret, a
//! code, a token) is ever logged, shown or written to the trail.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::governance::Users;
use crate::ops::access::{Person, Via};
use crate::seal::Key;

/// Why single sign-on failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// A setting is wrong (at start).
    #[error("{0}")]
    Config(String),
    /// The IdP did not answer, or answered with an error status.
    #[error("the identity provider {issuer} did not answer {what}: {why}")]
    Unreachable {
        /// The issuer.
        issuer: String,
        /// Which request.
        what: &'static str,
        /// Why (never a secret).
        why: String,
    },
    /// The IdP answered something unusable.
    #[error("the identity provider's {what} is not usable: {why}")]
    BadAnswer {
        /// Which answer.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// The IdP has not been reached yet.
    #[error("the identity provider {0} has not been reached yet")]
    NotDiscovered(String),
    /// The sign-in was not started here, or too long ago.
    #[error("this sign-in was not started from this browser, or too long ago: start it again")]
    Flow,
    /// A token is not accepted.
    #[error("the token is not accepted: {0}")]
    Token(String),
    /// The IdP's person is not the directory's person of that login (or no person at all).
    #[error("{0}")]
    NotThatPerson(String),
}

/// How single sign-on is set up (`promote serve --oidc-...`).
#[derive(Clone)]
pub struct Settings {
    /// The issuer URL, exactly as the IdP writes it in its tokens' `iss`.
    pub issuer: String,
    /// This server's client id at the IdP (the audience of its tokens).
    pub client_id: String,
    /// The client secret (`None`: a public client, PKCE only).
    pub client_secret: Option<String>,
    /// The claim with the person's login (`preferred_username`).
    pub username_claim: String,
    /// The claim with the person's groups (`groups`).
    pub groups_claim: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "(hidden)"))
            .field("username_claim", &self.username_claim)
            .field("groups_claim", &self.groups_claim)
            .finish()
    }
}

impl Settings {
    /// Settings with the default claims.
    pub fn new(issuer: &str, client_id: &str, client_secret: Option<String>) -> Settings {
        Settings {
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            client_secret,
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
        }
    }
}

/// How long an IdP request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest discovery document, JWKS or token response read.
const MAX_ANSWER: usize = 256 * 1024;
/// The longest token taken.
pub const MAX_TOKEN: usize = 16 * 1024;
/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY: u64 = 60;
/// How long a started sign-in may take.
const FLOW_MS: i64 = 10 * 60 * 1000;
/// At most one JWKS fetch for an unknown key id in this time.
const REFETCH: Duration = Duration::from_secs(60);
/// Keys older than this are read again before use.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Discovery asked by a request (not the background retry) at most this often.
const ASK_AGAIN: Duration = Duration::from_secs(5);
/// The most groups taken from a token, and the longest group name.
const MAX_GROUPS: usize = 256;
const MAX_NAME: usize = 256;
/// The algorithms accepted: asymmetric only.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What discovery found.
#[derive(Debug)]
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    /// The scopes asked for.
    scope: String,
    /// Whether the client authenticates with HTTP Basic (else in the form).
    basic: bool,
}

/// A signing key of the IdP.
struct SigningKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

struct Keys {
    keys: Vec<SigningKey>,
    fetched: Instant,
}

/// Single sign-on with one OpenID Provider: discovery, keys, the pages' flow, token checks.
pub struct Oidc {
    settings: Settings,
    http: reqwest::Client,
    provider: RwLock<Option<Arc<Provider>>>,
    keys: RwLock<Option<Arc<Keys>>>,
    /// The last JWKS fetch asked for by an unknown key id.
    refetched: Mutex<Option<Instant>>,
    /// The last discovery asked for by a request.
    asked: Mutex<Option<Instant>>,
    /// One discovery at a time.
    discovering: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The claims promote reads from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`.
    pub subject: String,
    /// The username claim.
    pub username: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `email_verified`.
    pub email_verified: bool,
    /// The groups claim.
    pub groups: Vec<String>,
}

/// Whether an http URL is allowed: https, or http to a loopback host (tests, a local IdP).
fn secure_enough(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

fn random() -> Result<String, OidcError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| OidcError::Config(format!("no random bytes: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// The S256 code challenge of a PKCE verifier.
fn challenge(verifier: &str) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// Constant-time equality of two strings.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A sign-in under way: kept in the browser in a cookie sealed with the server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
}

impl Flow {
    fn new() -> Result<Flow, OidcError> {
        Ok(Flow { state: random()?, nonce: random()?, verifier: random()? })
    }

    fn mac(key: &Key, expires: &str, state: &str, nonce: &str, verifier: &str) -> String {
        key.mac("oidc-sign-in", &[Some(expires.as_bytes()), Some(state.as_bytes()), Some(nonce.as_bytes()), Some(verifier.as_bytes())])
    }

    /// `EXPIRES.STATE.NONCE.VERIFIER.MAC`.
    fn seal(&self, key: &Key, expires_ms: i64) -> String {
        let expires = expires_ms.to_string();
        let mac = Flow::mac(key, &expires, &self.state, &self.nonce, &self.verifier);
        format!("{expires}.{}.{}.{}.{mac}", self.state, self.nonce, self.verifier)
    }

    fn unseal(key: &Key, value: &str, now_ms: i64) -> Option<Flow> {
        let mut parts = value.split('.');
        let (expires, state, nonce, verifier, mac) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !key.verify_hex(&Flow::mac(key, expires, state, nonce, verifier), Some(mac)) {
            return None;
        }
        if expires.parse::<i64>().ok()? <= now_ms {
            return None;
        }
        Some(Flow { state: state.into(), nonce: nonce.into(), verifier: verifier.into() })
    }
}

/// The name of the cookie that keeps a sign-in under way.
pub const FLOW_COOKIE: &str = "promote_oidc";

/// The `Set-Cookie` of a sign-in under way: `SameSite=Lax`, as the IdP sends the browser back
/// with a cross-site navigation.
pub fn set_flow_cookie(value: &str, secure: bool) -> String {
    format!("{FLOW_COOKIE}={value}; Path=/ui/auth; HttpOnly; SameSite=Lax; Max-Age={}{}", FLOW_MS / 1000, if secure { "; Secure" } else { "" })
}

/// The `Set-Cookie` that ends it.
pub fn clear_flow_cookie(secure: bool) -> String {
    format!("{FLOW_COOKIE}=; Path=/ui/auth; HttpOnly; SameSite=Lax; Max-Age=0{}", if secure { "; Secure" } else { "" })
}

/// Whether a bearer token has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.len() <= MAX_TOKEN
        && token.starts_with("eyJ")
        && token.split('.').count() == 3
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A claim's text, if it is a string.
fn text<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// Whether a name is fit for a login or group: printable, no spaces, bounded.
fn fit(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

impl Claims {
    fn read(claims: &Map<String, Value>, settings: &Settings) -> Result<Claims, OidcError> {
        let subject = text(claims, "sub").filter(|s| fit(s)).ok_or_else(|| OidcError::Token("its `sub` claim is missing or not a plain name".into()))?;
        let groups = match claims.get(&settings.groups_claim) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::trim).filter(|g| fit(g)).take(MAX_GROUPS).map(String::from).collect(),
            Some(Value::String(g)) if fit(g.trim()) => vec![g.trim().to_string()],
            _ => Vec::new(),
        };
        let email_verified = match claims.get("email_verified") {
            Some(Value::Bool(b)) => *b,
            // Some IdPs (Cognito) send it as a string.
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        Ok(Claims {
            subject: subject.to_string(),
            username: text(claims, &settings.username_claim).map(str::trim).map(String::from),
            email: text(claims, "email").map(str::trim).map(String::from),
            email_verified,
            groups,
        })
    }
}

/// Reads at most `limit` bytes of an answer.
async fn bounded(mut response: reqwest::Response, limit: usize, what: &'static str) -> Result<Vec<u8>, OidcError> {
    let too_large = || OidcError::BadAnswer { what, why: format!("larger than {limit} bytes") };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| OidcError::BadAnswer { what, why: e.without_url().to_string() })? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The discovery document's fields promote uses.
#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    scopes_supported: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

impl Oidc {
    /// Single sign-on with `settings` (checked; nothing is asked of the IdP yet).
    pub fn new(settings: Settings) -> Result<Oidc, OidcError> {
        let issuer = url::Url::parse(&settings.issuer).map_err(|e| OidcError::Config(format!("--oidc-issuer {}: {e}", settings.issuer)))?;
        if !secure_enough(&issuer) || issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(OidcError::Config(format!(
                "--oidc-issuer {}: an https URL without query or fragment is needed (http only to a loopback address)",
                settings.issuer
            )));
        }
        if settings.client_id.trim().is_empty() {
            return Err(OidcError::Config("--oidc-client-id: the client id is empty".into()));
        }
        if settings.username_claim.trim().is_empty() || settings.groups_claim.trim().is_empty() {
            return Err(OidcError::Config("--oidc-username-claim and --oidc-groups-claim must name claims".into()));
        }
        if let Some(s) = &settings.client_secret {
            crate::redact::register(s);
        }
        crate::providers::install_crypto();
        let http = reqwest::Client::builder()
            .user_agent(concat!("promote/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT / 2)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Config(format!("the HTTP client for the identity provider: {e}")))?;
        Ok(Oidc {
            settings,
            http,
            provider: RwLock::default(),
            keys: RwLock::default(),
            refetched: Mutex::default(),
            asked: Mutex::default(),
            discovering: tokio::sync::Mutex::new(()),
        })
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Discovers the provider in the background, again and again (1 s, doubling to a minute)
    /// while it does not answer, until it does or `stop`.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                if me.current().is_some() {
                    return;
                }
                match me.discover().await {
                    Ok(_) => {
                        tracing::info!(issuer = %me.settings.issuer, "single sign-on: the identity provider's configuration and keys were read");
                        return;
                    }
                    Err(e) => tracing::warn!(
                        issuer = %me.settings.issuer,
                        error = %e,
                        "single sign-on is not available yet (sign-in with a token works); the identity provider is asked again in {} s",
                        wait.as_secs()
                    ),
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        });
    }

    fn current(&self) -> Option<Arc<Provider>> {
        self.provider.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn unreachable(&self, what: &'static str, why: impl std::fmt::Display) -> OidcError {
        OidcError::Unreachable { issuer: self.settings.issuer.clone(), what, why: why.to_string() }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str, what: &'static str) -> Result<T, OidcError> {
        let r = self.http.get(url).header("accept", "application/json").send().await.map_err(|e| self.unreachable(what, e.without_url()))?;
        if !r.status().is_success() {
            return Err(self.unreachable(what, format!("HTTP {}", r.status())));
        }
        let body = bounded(r, MAX_ANSWER, what).await?;
        serde_json::from_slice(&body).map_err(|e| OidcError::BadAnswer { what, why: e.to_string() })
    }

    /// Reads the discovery document and the keys.
    async fn discover(&self) -> Result<Arc<Provider>, OidcError> {
        let _one = self.discovering.lock().await;
        if let Some(p) = self.current() {
            return Ok(p);
        }
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let d: Discovery = self.get_json(&url, "its discovery document").await?;
        let bad = |why: String| OidcError::BadAnswer { what: "discovery document", why };
        if d.issuer != self.settings.issuer {
            return Err(bad(format!("its issuer is {}, not {} (give --oidc-issuer exactly as the provider names itself)", d.issuer, self.settings.issuer)));
        }
        for (name, u) in [("authorization_endpoint", &d.authorization_endpoint), ("token_endpoint", &d.token_endpoint), ("jwks_uri", &d.jwks_uri)] {
            let parsed = url::Url::parse(u).map_err(|e| bad(format!("{name} {u}: {e}")))?;
            if !secure_enough(&parsed) {
                return Err(bad(format!("{name} {u} is not https")));
            }
        }
        if d.code_challenge_methods_supported.as_ref().is_some_and(|m| !m.iter().any(|m| m == "S256")) {
            return Err(bad("it does not take PKCE's S256 code challenges".into()));
        }
        let supported = |s: &str| d.scopes_supported.as_ref().is_none_or(|l| l.iter().any(|x| x == s));
        let mut scope = vec!["openid"];
        scope.extend(["profile", "email"].into_iter().filter(|s| supported(s)));
        // Dex and others give groups only for a `groups` scope; ask for it when it is offered.
        if d.scopes_supported.as_ref().is_some_and(|l| l.iter().any(|x| x == "groups")) {
            scope.push("groups");
        }
        let basic = d.token_endpoint_auth_methods_supported.as_ref().is_none_or(|m| m.iter().any(|m| m == "client_secret_basic"));
        let provider = Arc::new(Provider {
            authorization_endpoint: d.authorization_endpoint,
            token_endpoint: d.token_endpoint,
            jwks_uri: d.jwks_uri,
            scope: scope.join(" "),
            basic,
        });
        self.fetch_keys(&provider).await?;
        *self.provider.write().unwrap_or_else(|e| e.into_inner()) = Some(provider.clone());
        Ok(provider)
    }

    /// The provider, discovered now if it was not yet (at most every few seconds on behalf of
    /// requests: nobody can make the server hammer an IdP that is down).
    async fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        if let Some(p) = self.current() {
            return Ok(p);
        }
        {
            let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
            if asked.is_some_and(|a| a.elapsed() < ASK_AGAIN) {
                return Err(OidcError::NotDiscovered(self.settings.issuer.clone()));
            }
            *asked = Some(Instant::now());
        }
        self.discover().await
    }

    /// Reads the JWKS: its signature keys of accepted algorithms (HMAC keys are never taken).
    async fn fetch_keys(&self, provider: &Provider) -> Result<(), OidcError> {
        #[derive(serde::Deserialize)]
        struct Jwks {
            keys: Vec<Value>,
        }
        let set: Jwks = self.get_json(&provider.jwks_uri, "its keys (jwks_uri)").await?;
        let mut keys = Vec::new();
        for v in set.keys.into_iter().take(64) {
            if v.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") || v.get("kty").and_then(Value::as_str) == Some("oct") {
                continue;
            }
            let alg = match v.get("alg").and_then(Value::as_str) {
                Some(a) => match a.parse::<Algorithm>() {
                    Ok(a) if ALGORITHMS.contains(&a) => Some(a),
                    _ => continue,
                },
                None => None,
            };
            let kid = v.get("kid").and_then(Value::as_str).map(String::from);
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(v) else { continue };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
            keys.push(SigningKey { kid, alg, key });
        }
        if keys.is_empty() {
            return Err(OidcError::BadAnswer { what: "keys (jwks_uri)", why: "no signature key of an accepted algorithm".into() });
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Keys { keys, fetched: Instant::now() }));
        Ok(())
    }

    /// The key that signed a token of this header, if it is known.
    fn key_for(&self, header: &jsonwebtoken::Header) -> Option<DecodingKey> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        let fits = |k: &&SigningKey| k.alg.is_none_or(|a| a == header.alg) && k.key.family() == family(header.alg);
        match &header.kid {
            Some(kid) => keys.keys.iter().filter(fits).find(|k| k.kid.as_deref() == Some(kid)).map(|k| k.key.clone()),
            None => {
                let mut fitting = keys.keys.iter().filter(fits);
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Some(k.key.clone()),
                    _ => None,
                }
            }
        }
    }

    /// Reads the keys again, at most once a minute for unknown key ids, and when an hour old.
    async fn refresh_keys(&self, provider: &Provider, unknown_kid: bool) {
        let old = self.keys.read().unwrap_or_else(|e| e.into_inner()).as_ref().is_none_or(|k| k.fetched.elapsed() > KEYS_MAX_AGE);
        let go = {
            let mut last = self.refetched.lock().unwrap_or_else(|e| e.into_inner());
            let may = last.is_none_or(|l| l.elapsed() >= REFETCH);
            if may && (unknown_kid || old) {
                *last = Some(Instant::now());
            }
            may && (unknown_kid || old)
        };
        if go && let Err(e) = self.fetch_keys(provider).await {
            tracing::warn!(issuer = %self.settings.issuer, error = %e, "the identity provider's keys could not be read again");
        }
    }

    /// Verifies a token of this issuer for this client: signature, issuer, audience, expiry,
    /// and the nonce when one was sent.
    pub async fn verify(&self, token: &str, nonce: Option<&str>) -> Result<Claims, OidcError> {
        if token.len() > MAX_TOKEN {
            return Err(OidcError::Token(format!("it is longer than {MAX_TOKEN} bytes")));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::Token("it is not a JWT".into()))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(OidcError::Token(format!("it is signed with {:?}, which is not accepted (only asymmetric algorithms are)", header.alg)));
        }
        if let Some(t) = &header.typ
            && !matches!(t.to_ascii_lowercase().as_str(), "jwt" | "at+jwt" | "application/at+jwt")
        {
            return Err(OidcError::Token("its type is not an ID token's or an access token's".into()));
        }
        let provider = self.provider().await?;
        self.refresh_keys(&provider, false).await;
        let key = match self.key_for(&header) {
            Some(k) => k,
            None => {
                self.refresh_keys(&provider, true).await;
                self.key_for(&header).ok_or_else(|| OidcError::Token("it is signed by a key the identity provider does not publish".into()))?
            }
        };
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.settings.issuer]);
        v.set_audience(&[&self.settings.client_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = LEEWAY;
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            OidcError::Token(match e.kind() {
                K::ExpiredSignature => "it has expired".into(),
                K::ImmatureSignature => "it is not valid yet (nbf)".into(),
                K::InvalidAudience => format!("it is not for this server's client id {}", self.settings.client_id),
                K::InvalidIssuer => format!("it was not issued by {}", self.settings.issuer),
                K::InvalidSignature => "its signature does not verify".into(),
                K::MissingRequiredClaim(c) => format!("it has no `{c}` claim"),
                _ => "it is malformed".into(),
            })
        })?;
        let claims = data.claims;
        if let Some(Value::Array(aud)) = claims.get("aud")
            && aud.len() > 1
            && text(&claims, "azp") != Some(self.settings.client_id.as_str())
        {
            return Err(OidcError::Token("it has several audiences and its `azp` is not this server's client id".into()));
        }
        if let Some(want) = nonce
            && !text(&claims, "nonce").is_some_and(|got| same(got, want))
        {
            return Err(OidcError::Token("its nonce is not the one this sign-in sent".into()));
        }
        Claims::read(&claims, &self.settings)
    }

    /// Starts a sign-in: where to send the browser, and the cookie that keeps the flow.
    pub async fn begin(&self, redirect_uri: &str, key: &Key) -> Result<(String, String), OidcError> {
        let provider = self.provider().await?;
        let flow = Flow::new()?;
        let mut url =
            url::Url::parse(&provider.authorization_endpoint).map_err(|e| OidcError::BadAnswer { what: "authorization endpoint", why: e.to_string() })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &provider.scope)
            .append_pair("state", &flow.state)
            .append_pair("nonce", &flow.nonce)
            .append_pair("code_challenge", &challenge(&flow.verifier))
            .append_pair("code_challenge_method", "S256");
        Ok((url.to_string(), flow.seal(key, crate::clock::now_ms() + FLOW_MS)))
    }

    /// Ends a sign-in the IdP sent back: checks `state` against the flow's cookie, exchanges the
    /// code (with the PKCE verifier) and verifies the ID token (with the nonce).
    pub async fn finish(&self, redirect_uri: &str, key: &Key, cookie: Option<&str>, code: &str, state: &str, iss: Option<&str>) -> Result<Claims, OidcError> {
        let flow = cookie.and_then(|c| Flow::unseal(key, c, crate::clock::now_ms())).ok_or(OidcError::Flow)?;
        if !same(&flow.state, state) {
            return Err(OidcError::Flow);
        }
        // RFC 9207: an IdP that names itself must be this one (mix-up).
        if iss.is_some_and(|i| i != self.settings.issuer) {
            return Err(OidcError::Token("the answer came from another issuer".into()));
        }
        if code.is_empty() || code.len() > 4096 {
            return Err(OidcError::Token("the authorization code is empty or too long".into()));
        }
        let provider = self.provider().await?;
        let mut form = vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri), ("code_verifier", flow.verifier.as_str())];
        let mut req = self.http.post(&provider.token_endpoint).header("accept", "application/json");
        match &self.settings.client_secret {
            Some(secret) if provider.basic => {
                // RFC 6749 2.3.1: both form-encoded before Basic.
                let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                req = req.basic_auth(enc(&self.settings.client_id), Some(enc(secret)));
            }
            Some(secret) => form.extend([("client_id", self.settings.client_id.as_str()), ("client_secret", secret.as_str())]),
            None => form.push(("client_id", self.settings.client_id.as_str())),
        }
        let r = req.form(&form).send().await.map_err(|e| self.unreachable("the code exchange", e.without_url()))?;
        let status = r.status();
        let body = bounded(r, MAX_ANSWER, "token answer").await?;
        let answer: Value = serde_json::from_slice(&body).map_err(|e| OidcError::BadAnswer { what: "token answer", why: e.to_string() })?;
        if !status.is_success() {
            // Only the error code, printable and short: never a description that might echo input.
            let code = answer.get("error").and_then(Value::as_str).unwrap_or("no error code");
            let code: String = code.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
            return Err(self.unreachable("the code exchange", format!("HTTP {status}: {code}")));
        }
        let id_token =
            answer.get("id_token").and_then(Value::as_str).ok_or_else(|| OidcError::BadAnswer { what: "token answer", why: "it has no ID token".into() })?;
        self.verify(id_token, Some(&flow.nonce)).await
    }

    /// The person a verified token names: a login of the directory only if the IdP's verified
    /// email is the directory's email for it (and they are not disabled); a login the directory
    /// does not have is an IdP person with the IdP's groups. Also the IdP's groups.
    pub fn person(&self, users: &Users, claims: &Claims) -> Result<(Person, Vec<String>), OidcError> {
        let refuse = OidcError::NotThatPerson;
        let claim = &self.settings.username_claim;
        let name = claims.username.as_deref().ok_or_else(|| refuse(format!("the token has no `{claim}` claim to name the person (--oidc-username-claim)")))?;
        if !fit(name) || name.starts_with("group:") {
            return Err(refuse(format!("the `{claim}` claim is not a login (empty, too long, or with spaces)")));
        }
        let via = Via::Oidc { issuer: self.settings.issuer.clone(), subject: claims.subject.clone() };
        let groups = claims.groups.clone();
        let Some((login, user)) = users.users.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) else {
            let person = Person { login: name.to_string(), signature: name.to_string(), groups: groups.iter().cloned().collect(), via };
            return Ok((person, groups));
        };
        if user.disabled {
            return Err(refuse(format!("`{login}` is disabled in this server's directory of people")));
        }
        let verified = claims.email_verified && claims.email.as_deref().is_some_and(|e| !user.email.is_empty() && e.eq_ignore_ascii_case(&user.email));
        if !verified {
            return Err(refuse(format!(
                "the identity provider names this person `{name}`, but does not vouch for the email this server's directory has for `{login}` (a verified `email` claim equal to it): they are not that person"
            )));
        }
        let person =
            Person::of(users, login, via, groups.clone()).ok_or_else(|| refuse(format!("`{login}` is disabled in this server's directory of people")))?;
        Ok((person, groups))
    }

    /// The person of a bearer JWT (the API).
    pub async fn bearer(&self, users: impl FnOnce() -> Arc<crate::governance::Directory>, token: &str) -> Result<Person, OidcError> {
        let claims = self.verify(token, None).await?;
        self.person(&users().users, &claims).map(|(p, _)| p)
    }
}

/// The key family of an algorithm.
fn family(alg: Algorithm) -> jsonwebtoken::AlgorithmFamily {
    use jsonwebtoken::AlgorithmFamily as F;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => F::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => F::Ec,
        Algorithm::EdDSA => F::Ed,
        _ => F::Rsa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc() -> Oidc {
        Oidc::new(Settings::new("https://idp.example.com/realms/acme", "promote", None)).unwrap()
    }

    fn directory() -> Users {
        let yaml = "users:\n  alice: {name: Alice, email: alice@example.com, groups: [sre]}\n  dave: {name: Dave, email: dave@example.com, disabled: true}\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.yaml");
        std::fs::write(&path, yaml).unwrap();
        Users::load(&path).unwrap()
    }

    fn claims(name: &str, email: &str, verified: bool, groups: &[&str]) -> Claims {
        Claims {
            subject: format!("sub-{name}"),
            username: Some(name.into()),
            email: Some(email.into()),
            email_verified: verified,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn a_directory_login_is_that_person_only_with_the_directorys_verified_email() {
        let (o, users) = (oidc(), directory());
        let (p, groups) = o.person(&users, &claims("alice", "Alice@Example.com", true, &["approvers"])).unwrap();
        assert_eq!(p.login, "alice");
        assert_eq!(p.signature, "Alice <alice@example.com>");
        assert!(p.groups.contains("sre") && p.groups.contains("approvers"), "directory and IdP groups: {:?}", p.groups);
        assert_eq!(groups, ["approvers"]);
        assert_eq!(p.via, Via::Oidc { issuer: "https://idp.example.com/realms/acme".into(), subject: "sub-alice".into() });
        // Case does not make another person of a directory login.
        assert_eq!(o.person(&users, &claims("ALICE", "alice@example.com", true, &[])).unwrap().0.login, "alice");
        for (c, why) in [
            (claims("alice", "mallory@example.net", true, &[]), "another email"),
            (claims("alice", "alice@example.com", false, &[]), "an unverified email"),
            (claims("Alice", "mallory@example.net", true, &[]), "another email, another case"),
            (Claims { email: None, ..claims("alice", "", true, &[]) }, "no email"),
        ] {
            let e = o.person(&users, &c).unwrap_err();
            assert!(matches!(e, OidcError::NotThatPerson(_)) && e.to_string().contains("not that person"), "{why}: {e}");
        }
        let e = o.person(&users, &claims("dave", "dave@example.com", true, &[])).unwrap_err();
        assert!(e.to_string().contains("disabled"), "{e}");
    }

    #[test]
    fn a_login_the_directory_lacks_is_an_idp_person_with_the_idps_groups() {
        let (o, users) = (oidc(), directory());
        let (p, _) = o.person(&users, &claims("carol", "carol@example.org", false, &["release-managers"])).unwrap();
        assert_eq!((p.login.as_str(), p.signature.as_str()), ("carol", "carol"));
        assert_eq!(p.groups.iter().collect::<Vec<_>>(), ["release-managers"]);
        for bad in ["", "group:sre", "two words", &"x".repeat(300)] {
            assert!(o.person(&users, &claims(bad, "x@example.org", true, &[])).is_err(), "{bad:?}");
        }
        assert!(o.person(&users, &Claims { username: None, ..claims("carol", "c@example.org", true, &[]) }).is_err());
    }

    #[test]
    fn claims_are_read_with_their_types_checked_and_bounded() {
        let s = Settings { username_claim: "upn".into(), groups_claim: "roles".into(), ..Settings::new("https://idp.example.com", "promote", None) };
        let read = |v: Value| Claims::read(v.as_object().unwrap(), &s);
        let c = read(serde_json::json!({"sub": "s1", "upn": "alice", "email": "a@x", "email_verified": "true", "roles": ["a", 7, "b c", "ok", ""]})).unwrap();
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert!(c.email_verified);
        assert_eq!(c.groups, ["a", "ok"]);
        let many: Vec<String> = (0..1000).map(|i| format!("g{i}")).collect();
        assert_eq!(read(serde_json::json!({"sub": "s", "roles": many})).unwrap().groups.len(), MAX_GROUPS);
        assert!(!read(serde_json::json!({"sub": "s", "email_verified": 1})).unwrap().email_verified);
        assert!(read(serde_json::json!({"upn": "alice"})).is_err(), "no sub");
    }

    #[test]
    fn the_flow_cookie_is_sealed_and_short_lived() {
        let key = Key::from_bytes([7u8; 32]);
        let flow = Flow::new().unwrap();
        let sealed = flow.seal(&key, 2_000);
        assert_eq!(Flow::unseal(&key, &sealed, 1_000), Some(flow.clone()));
        assert_eq!(Flow::unseal(&key, &sealed, 2_000), None, "expired");
        assert_eq!(Flow::unseal(&Key::from_bytes([8u8; 32]), &sealed, 1_000), None, "another server's key");
        let forged = sealed.replacen(&flow.state, &"A".repeat(flow.state.len()), 1);
        assert_eq!(Flow::unseal(&key, &forged, 1_000), None, "another state");
        assert!(set_flow_cookie(&sealed, true).contains("HttpOnly; SameSite=Lax") && set_flow_cookie(&sealed, true).ends_with("; Secure"));
        // RFC 7636, appendix B.
        assert_eq!(challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn issuers_must_be_https_except_on_loopback_and_secrets_stay_hidden() {
        assert!(Oidc::new(Settings::new("http://idp.example.com", "promote", None)).is_err());
        assert!(Oidc::new(Settings::new("https://idp.example.com/?x=1", "promote", None)).is_err());
        assert!(Oidc::new(Settings::new("http://127.0.0.1:5556/dex", "promote", None)).is_ok());
        assert!(Oidc::new(Settings::new("https://idp.example.com", " ", None)).is_err());
        let o = Oidc::new(Settings::new("https://idp.example.com", "promote", Some("s3cr3t-value".into()))).unwrap();
        assert!(!format!("{o:?}").contains("s3cr3t-value"));
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("prt_alice_token") && !looks_like_jwt("eyJ.a b.c"));
    }
}
