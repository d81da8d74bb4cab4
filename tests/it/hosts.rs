//! FAKE GitHub (REST v3), GitLab (v4) and Gitea (v1): stand-ins for the hosts' pull-request APIs,
//! which cannot run here. Each speaks the documented JSON of its host for the calls promote makes
//! (create, list, get, merge, comment, close; the host's own auth header), over a real bare repo:
//! merging is a real `git merge --no-ff` into the base branch of that repo (or a squash, as the
//! merge call asks: GitHub's `merge_method`, Gitea's `Do`, GitLab's `squash`), and the merge
//! commit's id is what the API reports. Required checks are a switch (`checks_pass`). Lists are
//! paginated as each host documents (GitHub's `page`/`per_page` and `Link` to its
//! `/repositories/ID/...` address, Gitea's `page`/`limit` and `Link`, GitLab's `page`/`per_page`
//! and `x-next-page`), newest first. GitHub insists on the `X-GitHub-Api-Version` it knows.

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
    /// GitLab's squash commit (a squash merged with a merge commit has both).
    pub squash_commit: Option<String>,
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
    /// GitHub: `pulls/get` leaves out `merge_commit_sha` (as newer API versions do); the merge
    /// call's own answer still has the commit.
    pub no_merge_commit_sha: Arc<std::sync::atomic::AtomicBool>,
}

/// How a merge lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Merge,
    Squash,
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
                "merge_commit_sha": p.merge_commit, "squash_commit_sha": p.squash_commit, "squash": p.squash_commit.is_some(),
                "web_url": format!("{base}/acme/checkout-env/-/merge_requests/{}", p.number),
            }),
            _ => {
                let mut v = json!({
                    "id": 1000 + p.number, "number": p.number, "title": p.title, "body": p.body,
                    "state": if p.state == "merged" { "closed" } else { p.state }, "merged": p.state == "merged",
                    "merge_commit_sha": p.merge_commit,
                    "head": {"ref": p.head, "label": format!("acme:{}", p.head)}, "base": {"ref": p.base},
                    "html_url": format!("{base}/acme/checkout-env/pull/{}", p.number),
                });
                if self.host == Host::GitHub && self.no_merge_commit_sha.load(std::sync::atomic::Ordering::SeqCst) {
                    v.as_object_mut().unwrap().remove("merge_commit_sha");
                }
                v
            }
        }
    }

    /// Opens `n` requests from branches nobody pushed (people's work in progress into `base`),
    /// newer than every request so far, without asking the API: a long list to page through.
    pub fn seed(&self, n: usize, base: &str) {
        let mut prs = self.prs.lock().unwrap();
        let open = if self.host == Host::GitLab { "opened" } else { "open" };
        for i in 0..n {
            let number = prs.len() as u64 + 1;
            prs.push(FakePr {
                number,
                head: format!("feature/wip-{i}"),
                base: base.into(),
                title: format!("wip {i}"),
                body: String::new(),
                state: open,
                merge_commit: None,
                squash_commit: None,
                comments: vec![],
            });
        }
    }

    /// A person pushes a commit of their own to request `n`'s branch (writing `path`); its id.
    pub fn push_to_head(&self, n: u64, path: &str, text: &str, subject: &str) -> String {
        let head = self.prs.lock().unwrap().iter().find(|p| p.number == n).unwrap().head.clone();
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("w");
        git(work.path(), &["clone", "-q", "-b", &head, self.bare.to_str().unwrap(), dir.to_str().unwrap()]);
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", subject]);
        git(&dir, &["push", "-q", "origin", &head]);
        git(&dir, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Merges `head` into `base` in the bare repo, for real, as `style` says; the commit that
    /// landed on `base`, and GitLab's squash commit. GitHub and Gitea squash into one commit on
    /// `base` (its message the request's title and number); GitLab squashes on the branch's
    /// merge base and merges that with a merge commit (its default merge method).
    fn merge_for_real(&self, p: &FakePr, style: Style) -> (String, Option<String>) {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("w");
        git(work.path(), &["clone", "-q", "-b", &p.base, self.bare.to_str().unwrap(), dir.to_str().unwrap()]);
        git(&dir, &["fetch", "-q", "origin", &p.head]);
        let merge_message = format!("Merge pull request #{} from acme/{}", p.number, p.head);
        let squashed = match (style, self.host) {
            (Style::Merge, _) => {
                git(&dir, &["merge", "-q", "--no-ff", "FETCH_HEAD", "-m", &merge_message]);
                None
            }
            (Style::Squash, Host::GitLab) => {
                let from = git(&dir, &["merge-base", "HEAD", "FETCH_HEAD"]).trim().to_string();
                git(&dir, &["checkout", "-q", "-b", "squashed", &from]);
                git(&dir, &["merge", "-q", "--squash", "FETCH_HEAD"]);
                git(&dir, &["commit", "-q", "-m", &p.title]);
                let sq = git(&dir, &["rev-parse", "HEAD"]).trim().to_string();
                git(&dir, &["checkout", "-q", &p.base]);
                git(&dir, &["merge", "-q", "--no-ff", "squashed", "-m", &format!("Merge branch '{}' into '{}'", p.head, p.base)]);
                Some(sq)
            }
            (Style::Squash, _) => {
                git(&dir, &["merge", "-q", "--squash", "FETCH_HEAD"]);
                git(&dir, &["commit", "-q", "-m", &format!("{} (#{})", p.title, p.number)]);
                None
            }
        };
        git(&dir, &["push", "-q", "origin", &p.base]);
        (git(&dir, &["rev-parse", "HEAD"]).trim().to_string(), squashed)
    }
}

type Reply = (StatusCode, Json<Value>);

fn no(status: StatusCode, message: &str) -> Reply {
    (status, Json(json!({"message": message})))
}

/// GitHub's answer to an `X-GitHub-Api-Version` it does not know.
fn unknown_version(f: &Fake, h: &HeaderMap) -> Option<Reply> {
    let v = h.get("x-github-api-version").and_then(|v| v.to_str().ok()).unwrap_or("2022-11-28");
    (f.host == Host::GitHub && !["2022-11-28", "2026-03-10"].contains(&v))
        .then(|| no(StatusCode::BAD_REQUEST, &format!("No such API version: '{v}' is not a supported version.")))
}

async fn create(State(f): State<Fake>, h: HeaderMap, Json(b): Json<Value>) -> Reply {
    if !f.authorized(&h) {
        return no(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if let Some(r) = unknown_version(&f, &h) {
        return r;
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
        squash_commit: None,
        comments: vec![],
    };
    prs.push(p.clone());
    (StatusCode::CREATED, Json(f.json_of(&p)))
}

/// One page of the open requests, newest first, with the host's paging headers.
async fn list(
    State(f): State<Fake>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    h: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, HeaderMap, Json<Value>) {
    let bare = |(s, j): Reply| (s, HeaderMap::new(), j);
    if !f.authorized(&h) {
        return bare(no(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    if let Some(r) = unknown_version(&f, &h) {
        return bare(r);
    }
    let prs = f.prs.lock().unwrap();
    let want_base = q.get("base").or(q.get("target_branch"));
    let items: Vec<Value> = prs
        .iter()
        .rev()
        .filter(|p| p.state == "open" || p.state == "opened")
        .filter(|p| f.host == Host::Gitea || want_base.is_none_or(|b| *b == p.base))
        .map(|p| f.json_of(p))
        .collect();
    // Each host's default and most a page, and its name for the page's size.
    let (size_key, default, most) = match f.host {
        Host::GitHub => ("per_page", 30, 100),
        Host::GitLab => ("per_page", 20, 100),
        Host::Gitea => ("limit", 30, 50),
    };
    let per: usize = q.get(size_key).and_then(|v| v.parse().ok()).unwrap_or(default).clamp(1, most);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let pages = items.len().div_ceil(per).max(1);
    let slice: Vec<Value> = items.iter().skip((page - 1) * per).take(per).cloned().collect();
    // The same query with another page, at the address the host links to.
    let base = f.base_url.lock().unwrap().clone();
    let path = match f.host {
        Host::GitHub => "/repositories/4711/pulls".to_string(),
        _ => uri.path().to_string(),
    };
    let at = |n: usize| {
        let mut pairs: Vec<(String, String)> = q.iter().filter(|(k, _)| *k != "page").map(|(k, v)| (k.clone(), v.clone())).collect();
        pairs.sort();
        pairs.push(("page".into(), n.to_string()));
        let query: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        format!("{base}{path}?{query}")
    };
    let mut links = Vec::new();
    if page < pages {
        links.push(format!("<{}>; rel=\"next\"", at(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", at(pages)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"first\"", at(1)));
        links.push(format!("<{}>; rel=\"prev\"", at(page - 1)));
    }
    let mut headers = HeaderMap::new();
    if !links.is_empty() {
        headers.insert("link", links.join(", ").parse().unwrap());
    }
    match f.host {
        Host::GitLab => {
            let next = if page < pages { (page + 1).to_string() } else { String::new() };
            let prev = if page > 1 { (page - 1).to_string() } else { String::new() };
            for (k, v) in [
                ("x-page", page.to_string()),
                ("x-per-page", per.to_string()),
                ("x-next-page", next),
                ("x-prev-page", prev),
                ("x-total", items.len().to_string()),
                ("x-total-pages", pages.to_string()),
            ] {
                headers.insert(k, v.parse().unwrap());
            }
        }
        Host::Gitea => {
            headers.insert("x-total-count", items.len().to_string().parse().unwrap());
        }
        Host::GitHub => {}
    }
    (StatusCode::OK, headers, Json(Value::Array(slice)))
}

fn find(f: &Fake, n: u64) -> Option<FakePr> {
    f.prs.lock().unwrap().iter().find(|p| p.number == n).cloned()
}

async fn one(State(f): State<Fake>, h: HeaderMap, UrlPath(parts): UrlPath<Vec<(String, String)>>) -> Reply {
    if !f.authorized(&h) {
        return no(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if let Some(r) = unknown_version(&f, &h) {
        return r;
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

async fn merge(State(f): State<Fake>, h: HeaderMap, UrlPath(parts): UrlPath<Vec<(String, String)>>, body: Option<Json<Value>>) -> Reply {
    if !f.authorized(&h) {
        return no(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if let Some(r) = unknown_version(&f, &h) {
        return r;
    }
    let b = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let style = match f.host {
        Host::GitHub => b["merge_method"].as_str().unwrap_or("merge"),
        Host::Gitea => b["Do"].as_str().unwrap_or("merge"),
        Host::GitLab => {
            if b["squash"].as_bool() == Some(true) {
                "squash"
            } else {
                "merge"
            }
        }
    };
    let style = match style {
        "merge" => Style::Merge,
        "squash" => Style::Squash,
        other => return no(StatusCode::UNPROCESSABLE_ENTITY, &format!("the fake does not merge by `{other}`")),
    };
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
    let (sha, squashed) = {
        let f2 = f.clone();
        tokio::task::spawn_blocking(move || f2.merge_for_real(&p, style)).await.unwrap()
    };
    let mut prs = f.prs.lock().unwrap();
    let p = prs.iter_mut().find(|p| p.number == n).unwrap();
    p.state = "merged";
    p.merge_commit = Some(sha.clone());
    p.squash_commit = squashed;
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
        no_merge_commit_sha: Arc::default(),
    };
    let router = match host {
        Host::GitHub | Host::Gitea => {
            let merge_route = if host == Host::GitHub { axum::routing::put(merge) } else { post(merge) };
            Router::new()
                .route("/repos/{owner}/{repo}/pulls", get(list).post(create))
                .route("/repositories/{id}/pulls", get(list))
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
