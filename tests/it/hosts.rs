//! FAKE GitHub (REST v3), GitLab (v4) and Gitea (v1): stand-ins for the hosts' pull-request APIs,
//! which cannot run here. Each speaks the documented JSON of its host for the calls promote makes
//! (create, list, get, merge, comment, close; the host's own auth header), over a real bare repo:
//! merging is a real `git merge --no-ff` into the base branch of that repo, and the merge
//! commit's id is what the API reports. Required checks are a switch (`checks_pass`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use promote::providers::pullrequest::Host;
use serde_json::{Value, json};

use crate::repos::git;

/// One request as the fake keeps it.
#[derive(Debug, Clone)]
pub struct FakePr {
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub state: &'static str,
    pub merge_commit: Option<String>,
    pub comments: Vec<String>,
}

#[derive(Clone)]
pub struct Fake {
    pub host: Host,
    pub bare: PathBuf,
    pub token: String,
    pub prs: Arc<Mutex<Vec<FakePr>>>,
    pub checks_pass: Arc<std::sync::atomic::AtomicBool>,
    pub base_url: Arc<Mutex<String>>,
}

impl Fake {
    fn authorized(&self, h: &HeaderMap) -> bool {
        let v = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        match self.host {
            Host::GitHub => v("authorization") == format!("Bearer {}", self.token),
            Host::GitLab => v("private-token") == self.token,
            Host::Gitea => v("authorization") == format!("token {}", self.token),
        }
    }

    fn json_of(&self, p: &FakePr) -> Value {
        let base = self.base_url.lock().unwrap().clone();
        match self.host {
            Host::GitLab => json!({
                "id": 1000 + p.number, "iid": p.number, "project_id": 3, "title": p.title, "description": p.body,
                "state": p.state, "source_branch": p.head, "target_branch": p.base,
                "merge_commit_sha": p.merge_commit, "web_url": format!("{base}/acme/checkout-env/-/merge_requests/{}", p.number),
            }),
            _ => json!({
                "id": 1000 + p.number, "number": p.number, "title": p.title, "body": p.body,
                "state": if p.state == "merged" { "closed" } else { p.state }, "merged": p.state == "merged",
                "merge_commit_sha": p.merge_commit,
                "head": {"ref": p.head, "label": format!("acme:{}", p.head)}, "base": {"ref": p.base},
                "html_url": format!("{base}/acme/checkout-env/pull/{}", p.number),
            }),
        }
    }

    /// Merges `head` into `base` in the bare repo, for real; the merge commit.
    fn merge_for_real(&self, p: &FakePr) -> String {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("w");
        git(work.path(), &["clone", "-q", "-b", &p.base, self.bare.to_str().unwrap(), dir.to_str().unwrap()]);
        git(&dir, &["fetch", "-q", "origin", &p.head]);
        git(&dir, &["merge", "-q", "--no-ff", "FETCH_HEAD", "-m", &format!("Merge pull request #{} from acme/{}", p.number, p.head)]);
        git(&dir, &["push", "-q", "origin", &p.base]);
        git(&dir, &["rev-parse", "HEAD"]).trim().to_string()
    }
}

type Reply = (StatusCode, Json<Value>);

fn no(status: StatusCode, message: &str) -> Reply {
    (status, Json(json!({"message": message})))
}

async fn create(State(f): State<Fake>, h: HeaderMap, Json(b): Json<Value>) -> Reply {
    if !f.authorized(&h) {
        return no(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let (head, base, body) = match f.host {
        Host::GitLab => (b["source_branch"].as_str(), b["target_branch"].as_str(), b["description"].as_str()),
        _ => (b["head"].as_str(), b["base"].as_str(), b["body"].as_str()),
    };
    let (Some(head), Some(base), Some(title)) = (head, base, b["title"].as_str()) else { return no(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed") };
    // The head branch must exist in the repo, as on the hosts.
    let exists =
        std::process::Command::new("git").arg("-C").arg(&f.bare).args(["rev-parse", "--verify", "-q", &format!("refs/heads/{head}")]).output().unwrap();
    if !exists.status.success() {
        return no(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed: head does not exist");
    }
    let mut prs = f.prs.lock().unwrap();
    if prs.iter().any(|p| p.head == head && (p.state == "open" || p.state == "opened")) {
        return no(StatusCode::UNPROCESSABLE_ENTITY, &format!("A pull request already exists for acme:{head}."));
    }
    let open = if f.host == Host::GitLab { "opened" } else { "open" };
    let p = FakePr {
        number: prs.len() as u64 + 1,
        head: head.into(),
        base: base.into(),
        title: title.into(),
        body: body.unwrap_or_default().into(),
        state: open,
        merge_commit: None,
        comments: vec![],
    };
    prs.push(p.clone());
    (StatusCode::CREATED, Json(f.json_of(&p)))
}

async fn list(State(f): State<Fake>, h: HeaderMap, Query(q): Query<std::collections::HashMap<String, String>>) -> Reply {
    if !f.authorized(&h) {
        return no(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let prs = f.prs.lock().unwrap();
    let want_base = q.get("base").or(q.get("target_branch"));
    let items: Vec<Value> = prs
        .iter()
        .filter(|p| p.state == "open" || p.state == "opened")
        .filter(|p| f.host == Host::Gitea || want_base.is_none_or(|b| *b == p.base))
        .map(|p| f.json_of(p))
        .collect();
    (StatusCode::OK, Json(Value::Array(items)))
}

fn find(f: &Fake, n: u64) -> Option<FakePr> {
    f.prs.lock().unwrap().iter().find(|p| p.number == n).cloned()
}

async fn one(State(f): State<Fake>, h: HeaderMap, UrlPath(parts): UrlPath<Vec<(String, String)>>) -> Reply {
    if !f.authorized(&h) {
        return no(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let n: u64 = parts.iter().find(|(k, _)| k == "n").unwrap().1.parse().unwrap();
    match find(&f, n) {
        Some(p) => (StatusCode::OK, Json(f.json_of(&p))),
        None => no(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn update(State(f): State<Fake>, h: HeaderMap, UrlPath(parts): UrlPath<Vec<(String, String)>>, Json(b): Json<Value>) -> Reply {
    if !f.authorized(&h) {
        return no(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let n: u64 = parts.iter().find(|(k, _)| k == "n").unwrap().1.parse().unwrap();
    let close = b["state"] == "closed" || b["state_event"] == "close";
    let mut prs = f.prs.lock().unwrap();
    let Some(p) = prs.iter_mut().find(|p| p.number == n) else { return no(StatusCode::NOT_FOUND, "Not Found") };
    if close && p.state != "merged" {
        p.state = "closed";
    }
    let p = p.clone();
    (StatusCode::OK, Json(f.json_of(&p)))
}

async fn merge(State(f): State<Fake>, h: HeaderMap, UrlPath(parts): UrlPath<Vec<(String, String)>>) -> Reply {
    if !f.authorized(&h) {
        return no(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let n: u64 = parts.iter().find(|(k, _)| k == "n").unwrap().1.parse().unwrap();
    let Some(p) = find(&f, n) else { return no(StatusCode::NOT_FOUND, "Not Found") };
    if p.state == "merged" {
        return (StatusCode::OK, Json(json!({"sha": p.merge_commit, "merged": true})));
    }
    if p.state == "closed" {
        return no(StatusCode::METHOD_NOT_ALLOWED, "Pull Request is not mergeable");
    }
    if !f.checks_pass.load(std::sync::atomic::Ordering::SeqCst) {
        return no(StatusCode::METHOD_NOT_ALLOWED, "Required status check \"ci\" is expected.");
    }
    let sha = {
        let f2 = f.clone();
        tokio::task::spawn_blocking(move || f2.merge_for_real(&p)).await.unwrap()
    };
    let mut prs = f.prs.lock().unwrap();
    let p = prs.iter_mut().find(|p| p.number == n).unwrap();
    p.state = "merged";
    p.merge_commit = Some(sha.clone());
    let p = p.clone();
    match f.host {
        Host::GitHub => (StatusCode::OK, Json(json!({"sha": sha, "merged": true, "message": "Pull Request successfully merged"}))),
        Host::GitLab => (StatusCode::OK, Json(f.json_of(&p))),
        Host::Gitea => (StatusCode::OK, Json(Value::Null)),
    }
}

async fn comment(State(f): State<Fake>, h: HeaderMap, UrlPath(parts): UrlPath<Vec<(String, String)>>, Json(b): Json<Value>) -> Reply {
    if !f.authorized(&h) {
        return no(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let n: u64 = parts.iter().find(|(k, _)| k == "n").unwrap().1.parse().unwrap();
    let mut prs = f.prs.lock().unwrap();
    let Some(p) = prs.iter_mut().find(|p| p.number == n) else { return no(StatusCode::NOT_FOUND, "Not Found") };
    p.comments.push(b["body"].as_str().unwrap_or_default().to_string());
    (StatusCode::CREATED, Json(json!({"id": 1, "body": b["body"]})))
}

/// A fake `host` over the bare repo `bare`, answering `token`; its API base URL.
pub async fn start(host: Host, bare: PathBuf, token: &str) -> (Fake, String) {
    let fake = Fake {
        host,
        bare,
        token: token.into(),
        prs: Arc::default(),
        checks_pass: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        base_url: Arc::default(),
    };
    let router = match host {
        Host::GitHub | Host::Gitea => {
            let merge_route = if host == Host::GitHub { axum::routing::put(merge) } else { post(merge) };
            Router::new()
                .route("/repos/{owner}/{repo}/pulls", get(list).post(create))
                .route("/repos/{owner}/{repo}/pulls/{n}", get(one).patch(update))
                .route("/repos/{owner}/{repo}/pulls/{n}/merge", merge_route)
                .route("/repos/{owner}/{repo}/issues/{n}/comments", post(comment))
        }
        Host::GitLab => Router::new()
            .route("/projects/{project}/merge_requests", get(list).post(create))
            .route("/projects/{project}/merge_requests/{n}", get(one).put(update))
            .route("/projects/{project}/merge_requests/{n}/merge", axum::routing::put(merge))
            .route("/projects/{project}/merge_requests/{n}/notes", post(comment)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    *fake.base_url.lock().unwrap() = url.clone();
    let router = match host {
        Host::GitHub => router,
        Host::GitLab => Router::new().nest("/api/v4", router),
        Host::Gitea => Router::new().nest("/api/v1", router),
    };
    let app = router.with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let api = match host {
        Host::GitHub => url.clone(),
        Host::GitLab => format!("{url}/api/v4"),
        Host::Gitea => format!("{url}/api/v1"),
    };
    (fake, api)
}
