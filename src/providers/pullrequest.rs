//! Pull (merge) requests on the hosts of environment repos, through each host's REST API: GitHub
//! (REST v3), GitLab (v4) and Gitea/Forgejo (v1). One client, one shape of answer ([`Pr`]),
//! whatever the host: open, find, list (every page), read, merge, comment, close; for the deploy's
//! requests (`stages::pull_request`).

use serde_json::{Value, json};

use crate::secret::Secret;

/// The most bytes of an answer read.
const MAX_ANSWER: usize = 4 << 20;
/// How long one call may take, answer read included (a host that hangs is a transient error).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The version of GitHub's REST API promote speaks (`X-GitHub-Api-Version`): the answers it reads
/// are that version's (docs/pipeline-reference.md, `pullRequest`).
pub const GITHUB_API_VERSION: &str = "2022-11-28";
/// The most pages of a list read (GitHub and GitLab 100 requests a page, Gitea 50): more is refused.
pub const MAX_PAGES: usize = 20;

/// One answer: its status, its JSON (`Null` when empty or not JSON) and its headers.
struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

/// Which host's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// GitHub (and GitHub Enterprise): `https://api.github.com`.
    GitHub,
    /// GitLab: `https://gitlab.com/api/v4`.
    GitLab,
    /// Gitea and Forgejo: `https://HOST/api/v1`.
    Gitea,
}

impl Host {
    /// The host of a provider name (`github`, `gitlab`, `gitea`, `forgejo`).
    pub fn parse(name: &str) -> Option<Host> {
        match name {
            "github" => Some(Host::GitHub),
            "gitlab" => Some(Host::GitLab),
            "gitea" | "forgejo" => Some(Host::Gitea),
            _ => None,
        }
    }

    /// What a person calls a request on this host.
    pub fn noun(self) -> &'static str {
        match self {
            Host::GitLab => "merge request",
            _ => "pull request",
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrState {
    /// Open: waiting for review, checks or a merge.
    Open,
    /// Merged, with its merge commit.
    Merged(String),
    /// Closed without a merge.
    Closed,
}

/// A request, as any host gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pr {
    /// GitHub's and Gitea's `number`, GitLab's `iid`.
    pub number: u64,
    /// The page a person opens.
    pub url: String,
    /// Its source branch.
    pub head: String,
    /// Where it stands.
    pub state: PrState,
}

/// What a merge asked for did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// Merged now (or before), with the merge commit.
    Merged(String),
    /// The host refused for now (required checks pending or failed, reviews missing, conflicts):
    /// its words.
    NotYet(String),
}

/// Why a host could not be asked. Messages name the host and the request, never the token.
#[derive(Debug, thiserror::Error)]
pub enum PrError {
    /// No answer (connection refused, timeout, TLS).
    #[error("{what} at {api}: {why}")]
    Request {
        /// What was asked.
        what: String,
        /// The API's address.
        api: String,
        /// Why.
        why: String,
    },
    /// An answer that is an error, or not the shape the host documents.
    #[error("{what} at {api}: {status} {why}")]
    Refused {
        /// What was asked.
        what: String,
        /// The API's address.
        api: String,
        /// The HTTP status.
        status: u16,
        /// The host's message, or what was wrong with the answer.
        why: String,
    },
}

/// A repo's requests on one host.
#[derive(Debug, Clone)]
pub struct PullRequests {
    host: Host,
    /// The API's base (`https://api.github.com`, `https://gitlab.com/api/v4`, `https://gitea.example/api/v1`).
    api: String,
    /// `OWNER/NAME` (GitLab: the project's full path).
    repo: String,
    token: Secret,
    http: reqwest::Client,
}

impl PullRequests {
    /// A client of `repo` on `host` at `api`, authenticated with `token`.
    pub fn new(host: Host, api: &str, repo: &str, token: Secret) -> PullRequests {
        PullRequests { host, api: api.trim_end_matches('/').to_string(), repo: repo.to_string(), token, http: super::http_client() }
    }

    /// The API base of a host when none is given (Gitea has none: it is always self-hosted).
    pub fn default_api(host: Host) -> Option<&'static str> {
        match host {
            Host::GitHub => Some("https://api.github.com"),
            Host::GitLab => Some("https://gitlab.com/api/v4"),
            Host::Gitea => None,
        }
    }

    fn project(&self) -> String {
        url::form_urlencoded::byte_serialize(self.repo.as_bytes()).collect()
    }

    /// The path of the requests collection.
    fn pulls(&self) -> String {
        match self.host {
            Host::GitHub | Host::Gitea => format!("/repos/{}/pulls", self.repo),
            Host::GitLab => format!("/projects/{}/merge_requests", self.project()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>, what: &str) -> Result<(u16, Value), PrError> {
        let a = self.call_url(method, &format!("{}{path}", self.api), body, what).await?;
        Ok((a.status, a.body))
    }

    /// A call to `url`, an address under the API's base (the token goes nowhere else).
    async fn call_url(&self, method: reqwest::Method, url: &str, body: Option<Value>, what: &str) -> Result<Answer, PrError> {
        let mut req = self.http.request(method, url).timeout(CALL_TIMEOUT);
        req = match self.host {
            Host::GitHub => {
                req.bearer_auth(self.token.expose()).header("Accept", "application/vnd.github+json").header("X-GitHub-Api-Version", GITHUB_API_VERSION)
            }
            Host::GitLab => req.header("PRIVATE-TOKEN", self.token.expose()),
            Host::Gitea => req.header("Authorization", format!("token {}", self.token.expose())),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let err = |why: String| PrError::Request { what: what.to_string(), api: self.api.clone(), why: crate::redact::text(&why).into_owned() };
        let mut r = req.send().await.map_err(|e| err(e.to_string()))?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| err(e.to_string()))? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_ANSWER {
                return Err(err(format!("the answer is over {MAX_ANSWER} bytes")));
            }
        }
        let value = if bytes.iter().all(u8::is_ascii_whitespace) { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok(Answer { status, body: value, headers })
    }

    /// The address of the page after `url`'s, from the answer's headers: GitHub's and Gitea's
    /// `Link: <URL>; rel="next"`, GitLab's `x-next-page` (empty on the last page). A next page
    /// outside the API's base is refused: the token is not sent there.
    fn next_page(&self, url: &str, headers: &reqwest::header::HeaderMap, what: &str) -> Result<Option<String>, PrError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let next = match self.host {
            Host::GitLab => match header("x-next-page").filter(|p| !p.is_empty()) {
                None => return Ok(None),
                Some(page) => {
                    let mut u = url::Url::parse(url).map_err(|e| self.bad_page(what, &e.to_string()))?;
                    let kept: Vec<(String, String)> = u.query_pairs().filter(|(k, _)| k != "page").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
                    u.query_pairs_mut().clear().extend_pairs(kept).append_pair("page", page);
                    u.to_string()
                }
            },
            Host::GitHub | Host::Gitea => match header("link").and_then(link_next) {
                None => return Ok(None),
                Some(next) => next,
            },
        };
        if !under(&self.api, &next) {
            return Err(self.bad_page(what, "the next page is not under the API's address"));
        }
        Ok(Some(next))
    }

    fn bad_page(&self, what: &str, why: &str) -> PrError {
        PrError::Refused { what: what.to_string(), api: self.api.clone(), status: 200, why: format!("a list's pages: {}", crate::redact::text(why)) }
    }

    fn refused(&self, what: &str, status: u16, body: &Value) -> PrError {
        let why = body["message"].as_str().or(body["error"].as_str()).map(String::from).unwrap_or_else(|| body.to_string());
        PrError::Refused { what: what.to_string(), api: self.api.clone(), status, why: crate::redact::text(&why).into_owned() }
    }

    fn pr_of(&self, v: &Value, what: &str) -> Result<Pr, PrError> {
        let bad = |why: &str| PrError::Refused { what: what.to_string(), api: self.api.clone(), status: 200, why: why.to_string() };
        let number = match self.host {
            Host::GitLab => v["iid"].as_u64(),
            _ => v["number"].as_u64(),
        }
        .ok_or_else(|| bad("the answer has no request number"))?;
        let url = v[if self.host == Host::GitLab { "web_url" } else { "html_url" }].as_str().unwrap_or_default().to_string();
        let head = match self.host {
            Host::GitLab => v["source_branch"].as_str(),
            _ => v["head"]["ref"].as_str(),
        }
        .unwrap_or_default()
        .to_string();
        // GitLab: a squash with a fast-forward has no merge commit; its squash commit landed.
        let sha = ["merge_commit_sha", "squash_commit_sha"].iter().find_map(|k| v[*k].as_str().filter(|s| !s.is_empty())).map(String::from);
        let state = match (self.host, v["state"].as_str().unwrap_or_default(), v["merged"].as_bool().unwrap_or(false)) {
            (Host::GitLab, "merged", _) | (Host::GitHub | Host::Gitea, _, true) => {
                PrState::Merged(sha.ok_or_else(|| bad("merged, but the answer has no merge commit"))?)
            }
            (Host::GitLab, "opened" | "locked", _) | (Host::GitHub | Host::Gitea, "open", false) => PrState::Open,
            (_, "closed", _) => PrState::Closed,
            (_, other, _) => return Err(bad(&format!("an unknown state `{other}`"))),
        };
        Ok(Pr { number, url, head, state })
    }

    /// The open request from `head` into `base`, if there is one.
    pub async fn find_open(&self, head: &str, base: &str) -> Result<Option<Pr>, PrError> {
        Ok(self.list_open(base).await?.into_iter().find(|p| p.head == head))
    }

    /// Every open request into `base`, page after page (at most [`MAX_PAGES`]: more is an error,
    /// not a list cut short).
    pub async fn list_open(&self, base: &str) -> Result<Vec<Pr>, PrError> {
        let what = format!("listing the open {}s into `{base}` of {}", self.host.noun(), self.repo);
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let query = match self.host {
            Host::GitHub => format!("?state=open&base={}&per_page=100", enc(base)),
            Host::GitLab => format!("?state=opened&target_branch={}&per_page=100", enc(base)),
            Host::Gitea => "?state=open&limit=50".to_string(),
        };
        let mut url = format!("{}{}{query}", self.api, self.pulls());
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let a = self.call_url(reqwest::Method::GET, &url, None, &what).await?;
            if a.status != 200 {
                return Err(self.refused(&what, a.status, &a.body));
            }
            let list = a.body.as_array().ok_or_else(|| self.refused(&what, a.status, &json!({"message": "the answer is not a list"})))?;
            for v in list {
                // Gitea's list has no base filter: asked of each.
                if self.host == Host::Gitea && v["base"]["ref"].as_str() != Some(base) {
                    continue;
                }
                out.push(self.pr_of(v, &what)?);
            }
            match self.next_page(&url, &a.headers, &what)? {
                Some(next) => url = next,
                None => return Ok(out),
            }
        }
        Err(self.bad_page(&what, &format!("more than {MAX_PAGES} pages of open requests; close some")))
    }

    /// Opens a request from `head` into `base`.
    pub async fn open(&self, head: &str, base: &str, title: &str, body: &str) -> Result<Pr, PrError> {
        let what = format!("opening a {} from `{head}` into `{base}` of {}", self.host.noun(), self.repo);
        let payload = match self.host {
            Host::GitHub | Host::Gitea => json!({"title": title, "head": head, "base": base, "body": body}),
            Host::GitLab => json!({"title": title, "source_branch": head, "target_branch": base, "description": body}),
        };
        let (status, answer) = self.call(reqwest::Method::POST, &self.pulls(), Some(payload), &what).await?;
        if status != 201 && status != 200 {
            return Err(self.refused(&what, status, &answer));
        }
        self.pr_of(&answer, &what)
    }

    /// One request as it stands.
    pub async fn get(&self, number: u64) -> Result<Pr, PrError> {
        let what = format!("reading {} #{number} of {}", self.host.noun(), self.repo);
        let (status, body) = self.call(reqwest::Method::GET, &format!("{}/{number}", self.pulls()), None, &what).await?;
        if status != 200 {
            return Err(self.refused(&what, status, &body));
        }
        self.pr_of(&body, &what)
    }

    /// Asks the host to merge (with a merge commit): merged, or not yet with the host's reason
    /// (required checks, reviews, conflicts). GitLab is asked to merge once its pipeline succeeds.
    pub async fn merge(&self, number: u64) -> Result<Merge, PrError> {
        let what = format!("merging {} #{number} of {}", self.host.noun(), self.repo);
        let (method, path, body) = match self.host {
            Host::GitHub => (reqwest::Method::PUT, format!("{}/{number}/merge", self.pulls()), json!({"merge_method": "merge"})),
            Host::GitLab => (reqwest::Method::PUT, format!("{}/{number}/merge", self.pulls()), json!({"merge_when_pipeline_succeeds": true})),
            Host::Gitea => (reqwest::Method::POST, format!("{}/{number}/merge", self.pulls()), json!({"Do": "merge"})),
        };
        let (status, answer) = self.call(method, &path, Some(body), &what).await?;
        match status {
            // The merge commit from the merge's own answer where the host gives it (GitHub's
            // `sha`; GitLab answers with the request), else from the request read again.
            200 | 201 if self.host == Host::GitHub && answer["merged"].as_bool() == Some(true) && answer["sha"].as_str().is_some_and(|s| !s.is_empty()) => {
                Ok(Merge::Merged(answer["sha"].as_str().unwrap_or_default().to_string()))
            }
            200 | 201 if self.host == Host::GitLab && answer["state"].as_str() == Some("merged") => match self.pr_of(&answer, &what)?.state {
                PrState::Merged(sha) => Ok(Merge::Merged(sha)),
                _ => Err(self.refused(&what, status, &json!({"message": "merged, but the answer has no merge commit"}))),
            },
            200 | 201 | 204 => match self.get(number).await?.state {
                PrState::Merged(sha) => Ok(Merge::Merged(sha)),
                // GitLab's "when the pipeline succeeds": accepted, not merged yet.
                _ => Ok(Merge::NotYet(format!("the host will merge {} #{number} when its checks pass", self.host.noun()))),
            },
            // Not mergeable now: checks, reviews, conflicts, or a draft.
            405 | 406 | 409 | 422 => Ok(Merge::NotYet(self.refused(&what, status, &answer).to_string())),
            _ => Err(self.refused(&what, status, &answer)),
        }
    }

    /// Comments on a request.
    pub async fn comment(&self, number: u64, text: &str) -> Result<(), PrError> {
        let what = format!("commenting on {} #{number} of {}", self.host.noun(), self.repo);
        let path = match self.host {
            Host::GitHub | Host::Gitea => format!("/repos/{}/issues/{number}/comments", self.repo),
            Host::GitLab => format!("{}/{number}/notes", self.pulls()),
        };
        let (status, body) = self.call(reqwest::Method::POST, &path, Some(json!({"body": text})), &what).await?;
        if status != 201 && status != 200 {
            return Err(self.refused(&what, status, &body));
        }
        Ok(())
    }

    /// Closes a request without merging it.
    pub async fn close(&self, number: u64) -> Result<(), PrError> {
        let what = format!("closing {} #{number} of {}", self.host.noun(), self.repo);
        let (method, body) = match self.host {
            Host::GitHub | Host::Gitea => (reqwest::Method::PATCH, json!({"state": "closed"})),
            Host::GitLab => (reqwest::Method::PUT, json!({"state_event": "close"})),
        };
        let (status, answer) = self.call(method, &format!("{}/{number}", self.pulls()), Some(body), &what).await?;
        if status != 200 && status != 201 {
            return Err(self.refused(&what, status, &answer));
        }
        Ok(())
    }
}

/// The `rel="next"` address of a `Link` header (RFC 8288): `<URL>; rel="next", <URL>; rel="last"`.
fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let next = params.split(';').any(|p| {
            let p = p.trim();
            p.split_once('=').is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("rel") && v.trim().trim_matches('"').split_whitespace().any(|r| r == "next"))
        });
        next.then(|| target.to_string())
    })
}

/// Whether `url` is an address under `api` (same scheme, host and port, and under its path).
fn under(api: &str, url: &str) -> bool {
    let (Ok(a), Ok(u)) = (url::Url::parse(api), url::Url::parse(url)) else { return false };
    let path = a.path().trim_end_matches('/');
    a.origin() == u.origin() && (u.path() == path || u.path().starts_with(&format!("{path}/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_headers_next_page_and_only_under_the_api() {
        let h = r#"<https://api.github.com/repositories/1/pulls?page=2&per_page=100>; rel="next", <https://api.github.com/repositories/1/pulls?page=4>; rel="last""#;
        assert_eq!(link_next(h).as_deref(), Some("https://api.github.com/repositories/1/pulls?page=2&per_page=100"));
        assert_eq!(link_next(r#"<https://x/a?page=1>; rel="prev", <https://x/a?page=1>; rel="first""#), None);
        assert_eq!(
            link_next(r#"<https://g.example/api/v1/repos/a/b/pulls?page=3>; rel=next"#).as_deref(),
            Some("https://g.example/api/v1/repos/a/b/pulls?page=3")
        );
        assert!(under("https://api.github.com", "https://api.github.com/repositories/1/pulls?page=2"));
        assert!(under("https://g.example/api/v1", "https://g.example/api/v1/repos/a/b/pulls?page=2"));
        assert!(!under("https://api.github.com", "https://api.github.com.evil.example/pulls?page=2"));
        assert!(!under("https://g.example/api/v1", "https://g.example/api/v10/x"));
        assert!(!under("https://g.example/api/v1", "http://g.example/api/v1/x"));
    }
}
