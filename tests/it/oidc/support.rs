//! What the OIDC tests run: a real OpenID Provider (panva's `oidc-provider`, tests/oidc/, run by
//! node on a loopback port), a promote server on a port chosen beforehand (the IdP must know its
//! redirect URI), and an HTTP agent that keeps cookies and follows redirects as a browser does.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::exec::Setup;

/// The client promote is at the test IdP.
pub const CLIENT_ID: &str = "promote";
pub const CLIENT_SECRET: &str = "promote-secret";

fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Whether this is CI, where nothing the tests need may be missing.
fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// node and the provider's npm packages (installed with `npm ci` when missing): `Err` says what
/// is missing.
fn ready() -> &'static Result<(), String> {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    READY.get_or_init(|| {
        let dir = provider_dir();
        if Command::new("node").arg("--version").stdout(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
            return Err("`node` is not installed (Debian: apt-get install nodejs npm)".into());
        }
        if !dir.join("node_modules/oidc-provider/package.json").exists() {
            let out = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => return Err(format!("`npm ci` in tests/oidc failed: {}", String::from_utf8_lossy(&o.stderr))),
                Err(e) => return Err(format!("`npm` could not run ({e}): Debian: apt-get install npm")),
            }
        }
        Ok(())
    })
}

/// Whether the OIDC tests can run here. Under CI=true a missing node or package fails the test;
/// elsewhere it is skipped with a word on stderr.
pub fn available() -> bool {
    match ready() {
        Ok(()) => true,
        Err(e) if ci() => panic!("the OIDC tests need a real OpenID Provider: {e} (.ci/run installs it)"),
        Err(e) => {
            eprintln!("SKIPPED: the OIDC tests need a real OpenID Provider: {e}");
            false
        }
    }
}

/// A free loopback port (a race with other processes is possible, and unlikely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The OpenID Provider, stopped when dropped.
pub struct Idp {
    pub issuer: String,
    child: Child,
    _log: tempfile::NamedTempFile,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Idp {
    /// Starts the provider on `port`, with promote's redirect URI.
    pub fn start(port: u16, redirect_uri: &str) -> Idp {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .arg(port.to_string())
            .arg(redirect_uri)
            .current_dir(provider_dir())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    let _ = tx.send(issuer.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(issuer) => Idp { issuer, child, _log: log },
            Err(_) => {
                let _ = child.kill();
                panic!("the OpenID Provider did not start: {}", std::fs::read_to_string(log.path()).unwrap_or_default());
            }
        }
    }

    /// A client credentials access token (a JWT) for `resource`.
    pub async fn client_credentials(&self, resource: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("grant_type", "client_credentials"), ("scope", "api"), ("resource", resource)])
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {v}")).to_string()
    }

    /// One of the provider's test-only tokens (`expired`, `foreign`).
    pub async fn test_token(&self, which: &str) -> String {
        reqwest::get(format!("{}/test/{which}", self.issuer)).await.unwrap().text().await.unwrap()
    }
}

/// Single sign-on with `issuer` for the test client.
pub fn settings(issuer: &str) -> std::sync::Arc<promote::server::oidc::Oidc> {
    let s = promote::server::oidc::Settings::new(issuer, CLIENT_ID, Some(CLIENT_SECRET.into()));
    std::sync::Arc::new(promote::server::oidc::Oidc::new(s).unwrap())
}

/// A promote server on a listener bound beforehand (the IdP needs its redirect URL first; bound,
/// not just chosen, so that no other process takes the port meanwhile).
pub struct Promote {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), promote::server::ServerError>>,
}

impl Promote {
    pub async fn start(s: &Setup, listener: std::net::TcpListener, config: promote::server::Config) -> Promote {
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let exec = s.executor().await;
        let task = tokio::spawn(promote::server::serve(listener, exec, config, async move {
            let _ = rx.await;
        }));
        Promote { url: format!("http://127.0.0.1:{port}"), stop: Some(tx), task }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// An answer, after the redirects.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub url: String,
    pub body: String,
}

/// A browser without a browser: cookies (by name: every server here is 127.0.0.1, and a
/// cookie's port is not part of it) and redirects.
pub struct Agent {
    http: reqwest::Client,
    pub jar: HashMap<String, String>,
}

impl Agent {
    pub fn new() -> Agent {
        Agent { http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(), jar: HashMap::new() }
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let first = v.split(';').next().unwrap();
            let (name, value) = first.split_once('=').unwrap();
            if value.is_empty() || v.to_ascii_lowercase().contains("max-age=0") {
                self.jar.remove(name.trim());
            } else {
                self.jar.insert(name.trim().to_string(), value.to_string());
            }
        }
    }

    fn cookies(&self) -> String {
        self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn follow(&mut self, mut r: reqwest::Response) -> Answer {
        for _ in 0..10 {
            self.keep(&r);
            if !r.status().is_redirection() {
                break;
            }
            let next = r.url().join(r.headers()["location"].to_str().unwrap()).unwrap();
            r = self.http.get(next).header("cookie", self.cookies()).send().await.unwrap();
        }
        let (status, url) = (r.status().as_u16(), r.url().to_string());
        Answer { status, url, body: r.text().await.unwrap() }
    }

    pub async fn get(&mut self, url: &str) -> Answer {
        let r = self.http.get(url).header("cookie", self.cookies()).send().await.unwrap();
        self.follow(r).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let r = self.http.post(url).header("cookie", self.cookies()).form(form).send().await.unwrap();
        self.follow(r).await
    }

    /// Signs in to promote through the IdP's login form as `login`: the answer of promote's
    /// callback.
    pub async fn sign_in(&mut self, promote: &str, login: &str) -> Answer {
        let form = self.get(&format!("{promote}/ui/auth/login")).await;
        assert!(form.status == 200 && form.url.contains("/interaction/"), "the IdP's login form: {form:?}");
        let action = regex::Regex::new(r#"<form[^>]*action="([^"]+)""#).unwrap().captures(&form.body).unwrap()[1].to_string();
        let action = reqwest::Url::parse(&form.url).unwrap().join(&action).unwrap();
        self.post(action.as_str(), &[("prompt", "login"), ("login", login), ("password", "any password")]).await
    }
}

/// The trail's entries of a kind (`*`: all), as `ACTOR: DETAIL`.
pub async fn trail(s: &Setup, kind: &str) -> Vec<String> {
    let store = promote::store::Store::open(&s.state()).await.unwrap();
    let entries = store.audit_entries(None, 0, 10_000).await.unwrap();
    store.close().await;
    entries.into_iter().filter(|e| kind == "*" || e.kind == kind).map(|e| format!("{}: {}", e.actor, e.detail)).collect()
}
