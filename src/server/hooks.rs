//! `POST /hooks/{provider}`: a delivery is verified against the secret of each trigger that
//! names its provider before anything of it is read; then its event (a Git push, an image push)
//! is matched to the trigger's repo and refs or tags, and the run it starts is recorded with the
//! delivery in one transaction before the answer: a redelivery, or one sent to two replicas,
//! never starts two runs.

use crate::ops::start::Delivered;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::shapes::{ErrorBody, HookAnswer, HookRun};
use super::verify::{self, Headers as _};
use super::{Server, pipelines::Loaded};
use crate::model::triggers::{GitVersion, Trigger};
use crate::store::Delivery;

/// The largest body a receiver reads (a GitHub push event is usually a few KB).
pub const MAX_BODY: usize = 1 << 20;

/// What an event asks for, once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A check that the hook works.
    Ping,
    /// A push of `git_ref` at `commit` to `repo`.
    Push {
        /// The repo, as the provider names it.
        repo: String,
        /// `refs/tags/v1.4.2`, `refs/heads/main`.
        git_ref: String,
        /// The commit pushed.
        commit: String,
    },
    /// A push of `tag` to the image `repository`.
    Image {
        /// The repository as the registry names it (with or without its host).
        repository: String,
        /// The tag pushed.
        tag: String,
    },
    /// A pull (merge) request of `repo` changed (merged, closed, reopened...): waiting deploys
    /// look at theirs now instead of at their next poll.
    PullRequest {
        /// The repo, as the provider names it.
        repo: String,
        /// Its number (GitLab: `iid`).
        number: u64,
        /// What happened (`closed`, `merge`, ...).
        action: String,
    },
    /// Something a trigger does not start runs for (a deleted ref, an issue comment).
    Other(String),
}

/// A token in the URL (`?token=`), for the providers that cannot sign.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HookQuery {
    /// The trigger's secret, for `dockerhub` and `quay` (which cannot sign a delivery).
    token: Option<String>,
}

/// `POST /hooks/{provider}`: a webhook delivery, verified against the secret of every trigger of
/// a loaded pipeline that names `provider` before anything else of it is read (docs/api.md).
#[utoipa::path(
    post,
    path = "/hooks/{provider}",
    tag = "webhooks",
    params(("provider" = String, Path, description = "github, gitlab, gitea, bitbucket, standard, harbor, dockerhub or quay"), HookQuery),
    request_body(description = "the provider's own payload, signed as the provider signs (or form-encoded, GitHub's `content_type: form`)", content((Object = "application/json"), (Object = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "a ping, or a duplicate delivery: nothing started", body = HookAnswer),
        (status = 201, description = "runs started (recorded with the delivery before this answer)", body = HookAnswer),
        (status = 202, description = "verified, but no trigger wants it (`ignored`), or a pull-request event (`pullRequest`, `woke`)", body = HookAnswer),
        (status = 400, description = "not JSON, or the version it gives is refused", body = ErrorBody),
        (status = 401, description = "no trigger's secret verifies it", body = ErrorBody),
        (status = 404, description = "no loaded pipeline has a trigger for this provider", body = ErrorBody),
        (status = 409, description = "the version is held by a failed watch (`held`): nothing recorded", body = HookAnswer),
        (status = 413, description = "the body is over 1 MiB", body = ErrorBody),
        (status = 503, description = "it could not be recorded, or a secret cannot be read here: send it again", body = ErrorBody),
    ),
)]
pub async fn receive(State(server): State<Server>, Path(provider): Path<String>, Query(query): Query<HookQuery>, headers: HeaderMap, body: Bytes) -> Response {
    deliver(server, provider, query.token, headers, body).await
}

/// `POST /hooks/{provider}/{token}`: a delivery of a provider that cannot sign, its token in the path.
#[utoipa::path(
    post,
    path = "/hooks/{provider}/{token}",
    tag = "webhooks",
    params(("provider" = String, Path, description = "dockerhub or quay"), ("token" = String, Path, description = "the trigger's secret")),
    request_body(content = Object, description = "the registry's own payload", content_type = "application/json"),
    responses(
        (status = 200, description = "a duplicate delivery: nothing started", body = HookAnswer),
        (status = 201, description = "runs started", body = HookAnswer),
        (status = 202, description = "verified, but no trigger wants it", body = HookAnswer),
        (status = 400, description = "not JSON, or the version it gives is refused", body = ErrorBody),
        (status = 401, description = "the token is no trigger's", body = ErrorBody),
        (status = 404, description = "no loaded pipeline has a trigger for this provider", body = ErrorBody),
        (status = 409, description = "the version is held by a failed watch", body = HookAnswer),
        (status = 413, description = "the body is over 1 MiB", body = ErrorBody),
        (status = 503, description = "it could not be recorded: send it again", body = ErrorBody),
    ),
)]
pub async fn receive_with_token(State(server): State<Server>, Path((provider, token)): Path<(String, String)>, headers: HeaderMap, body: Bytes) -> Response {
    deliver(server, provider, Some(token), headers, body).await
}

/// A delivery for `provider`, with the token its URL carried (if any).
async fn deliver(server: Server, provider: String, url_token: Option<String>, headers: HeaderMap, body: Bytes) -> Response {
    // The metrics' label is one of the providers promote knows, never what a caller put in a URL.
    let label = if PROVIDERS.contains(&provider.as_str()) { provider.as_str() } else { "unknown" };
    let answer = |status: StatusCode, result: &str, detail: HookAnswer| {
        server.exec.metrics.delivery(label, result);
        (status, axum::Json(detail)).into_response()
    };
    let refuse = |status: StatusCode, result: &str, why: String| {
        server.exec.metrics.delivery(label, result);
        (status, axum::Json(ErrorBody { error: why })).into_response()
    };
    let pipelines = server.pipelines();
    let candidates: Vec<(&Loaded, &Trigger)> = pipelines
        .by_name
        .values()
        .flat_map(|l| l.plan.pipeline.triggers.iter().map(move |t| (l, &t.value)))
        .filter(|(_, t)| !provider.is_empty() && t.provider() == provider)
        .collect();
    if candidates.is_empty() {
        return refuse(StatusCode::NOT_FOUND, "refused", format!("no pipeline has a `{provider}` trigger"));
    }
    // Verified against each trigger's secret; nothing else of the delivery is read before. The
    // secrets are read now (a rotated one applies at once), off the async threads.
    let wanted: Vec<(std::path::PathBuf, Trigger)> =
        candidates.iter().map(|(l, t)| (l.file.parent().unwrap_or(std::path::Path::new(".")).to_path_buf(), (*t).clone())).collect();
    let secrets = match tokio::task::spawn_blocking(move || wanted.iter().map(|(base, t)| secret_of(base, t)).collect::<Vec<_>>()).await {
        Ok(s) => s,
        Err(_) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "failed", "the secrets could not be read: send it again".to_string()),
    };
    let now = crate::clock::now_ms() / 1000;
    let mut unreadable = false;
    let verified: Vec<(&Loaded, &Trigger)> = candidates
        .into_iter()
        .zip(secrets)
        .filter(|((l, _), secret)| match secret {
            Ok(secret) => match verify_one(&provider, secret, &headers, &body, url_token.as_deref(), now) {
                Ok(()) => true,
                Err(why) => {
                    // Why, for whoever runs the server (never the secret or the signature).
                    tracing::info!(pipeline = %l.plan.pipeline.name.value, provider = %label, "a delivery does not verify with this trigger's secret: {}", why.0);
                    false
                }
            },
            Err(e) => {
                tracing::error!(pipeline = %l.plan.pipeline.name.value, error = %e, "a trigger's secret cannot be read: its deliveries are refused until it can");
                unreadable = true;
                false
            }
        })
        .map(|(c, _)| c)
        .collect();
    if verified.is_empty() {
        if unreadable {
            // Not the sender's fault: answered so that the provider sends it again later.
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "failed",
                "a trigger's secret cannot be read on this server (its log says which): nothing was started; send it again".to_string(),
            );
        }
        tracing::warn!(provider = %label, "a webhook delivery failed verification");
        return refuse(StatusCode::UNAUTHORIZED, "refused", "the delivery's signature does not verify with any trigger's secret".to_string());
    }
    // Read as JSON once: the event and when what it announces happened. (GitHub sends a hook made
    // with the REST API's default content type as a form: `payload=JSON`; the signature covers
    // the form as sent.)
    // (A client that sends JSON under the form type, as Python's urllib does by default, is read
    // as JSON.)
    let form = headers.get_str("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
        && body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{');
    let json = if form { form_payload(&body) } else { Ok(body.to_vec()) };
    let (event, origin_at) = match json.and_then(|b| json_of(&b)).and_then(|v| Ok((parse_json(&provider, &headers, &v)?, origin(&provider, &v)))) {
        Ok(e) => e,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, "invalid", why),
    };
    if event == Event::Ping {
        return answer(StatusCode::OK, "ping", HookAnswer { pong: Some(true), ..Default::default() });
    }
    if let Event::Push { repo, .. } = &event {
        server.pushed(repo);
        server.env_pushed(repo);
    }
    // A request changed: one entry in the trail, naming the request in its stage field, wakes the
    // deploy waiting on that request, which asks its host (the event is a hint; the host's answer
    // decides).
    if let Event::PullRequest { repo, number, action } = &event {
        let detail = format!("{} #{number} {}", crate::diag::printable(repo), crate::diag::printable(action));
        let key = crate::stages::pull_request::request_key(&crate::diag::printable(repo), *number);
        if let Err(e) = server.exec.store.audit(None, Some(&key), crate::store::EntryKind::PullRequestEvent, &format!("webhook:{provider}"), &detail).await {
            tracing::warn!(error = %e, "a pull request event could not be recorded");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "failed", "the event could not be recorded: send it again".to_string());
        }
        return answer(StatusCode::ACCEPTED, "pull-request", HookAnswer { pull_request: Some(*number), woke: Some(true), ..Default::default() });
    }
    let delivery_id = delivery_id(&provider, &headers).unwrap_or_else(|| hex::encode(Sha256::digest(&body)));
    let body_hash = hex::encode(Sha256::digest(&body));
    let mut started = Vec::new();
    let mut matched = false;
    for (loaded, trigger) in verified {
        let Some(version) = version_for(trigger, &event) else { continue };
        matched = true;
        let version = match read_version(&server, loaded, trigger, version).await {
            Ok(v) => v,
            Err(why) => {
                tracing::warn!(pipeline = %loaded.plan.pipeline.name.value, error = %why, "the version file could not be read");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "failed",
                    format!("the version file could not be read: {why}; nothing was started: send it again (a poll of `url` catches it too)"),
                );
            }
        };
        let delivery = Delivery { provider: provider.clone(), id: delivery_id.clone(), body_hash: body_hash.clone(), origin_at };
        let who = format!("webhook:{provider}");
        match crate::ops::start::delivered(&server.exec, &loaded.file, &loaded.source, &loaded.plan, &version, &who, delivery).await {
            Ok(Delivered::Refused(why)) => {
                return refuse(StatusCode::BAD_REQUEST, "invalid", format!("this event's run is refused: {why}"));
            }
            Ok(Delivered::Started(run)) => {
                server.drive_started(run.clone(), loaded);
                started.push(HookRun { pipeline: run.pipeline, version: run.version, run: Some(run.id), started: true, duplicate: None, held: None });
            }
            Ok(Delivered::Duplicate(first)) => started.push(HookRun {
                pipeline: loaded.plan.pipeline.name.value.clone(),
                version,
                run: first,
                started: false,
                duplicate: Some(true),
                held: None,
            }),
            Ok(Delivered::Held(why)) => {
                started.push(HookRun {
                    pipeline: loaded.plan.pipeline.name.value.clone(),
                    version,
                    run: None,
                    started: false,
                    duplicate: None,
                    held: Some(why),
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "a verified delivery could not be recorded");
                return refuse(StatusCode::SERVICE_UNAVAILABLE, "failed", "the delivery could not be recorded: send it again".to_string());
            }
        }
    }
    if !matched {
        let what = match &event {
            Event::Other(why) => why.clone(),
            other => format!("{other:?} matches no trigger's repo and refs or tags"),
        };
        return answer(StatusCode::ACCEPTED, "ignored", HookAnswer { ignored: Some(crate::diag::printable(&what).into_owned()), ..Default::default() });
    }
    let any_new = started.iter().any(|s| s.started);
    let held = started.iter().any(|s| s.held.is_some());
    let (status, result) = if any_new {
        (StatusCode::CREATED, "started")
    } else if held {
        // Not recorded: once a person clears the version, the same delivery starts it.
        (StatusCode::CONFLICT, "held")
    } else {
        (StatusCode::OK, "duplicate")
    };
    answer(status, result, HookAnswer { runs: Some(started), ..Default::default() })
}

/// The secret a trigger names, read now (so that a rotated secret applies at once).
fn secret_of(base: &std::path::Path, t: &Trigger) -> Result<String, String> {
    if let Some(var) = &t.secret_env {
        // Through `Secret`: registered for redaction wherever it could appear.
        return std::env::var(&var.value)
            .map(|v| crate::secret::Secret::new(v).expose().to_string())
            .map_err(|_| format!("environment variable `{}` is not set", var.value));
    }
    if let Some(file) = &t.secret_file {
        let path = base.join(&file.value);
        return crate::files::read_text(&path, crate::files::MAX_SMALL)
            .map(|s| crate::secret::Secret::new(s).expose().to_string())
            .map_err(|e| format!("{}: {}", path.display(), e.why));
    }
    Err("no secretEnv or secretFile".into())
}

fn verify_one(provider: &str, secret: &str, h: &HeaderMap, body: &[u8], url_token: Option<&str>, now: i64) -> Result<(), verify::Refused> {
    match provider {
        "github" => verify::github(secret, h, body),
        "gitlab" => verify::shared(secret, h, "x-gitlab-token"),
        "gitea" => verify::gitea(secret, h, body),
        "bitbucket" => verify::bitbucket(secret, h, body),
        "standard" => verify::standard(secret, h, body, now),
        "harbor" => verify::shared(secret, h, "authorization"),
        "dockerhub" | "quay" => verify::url_token(secret, url_token),
        other => Err(verify::Refused(format!("unknown provider {other}"))),
    }
}

fn delivery_id(provider: &str, h: &HeaderMap) -> Option<String> {
    let names: &[&str] = match provider {
        "github" => &["x-github-delivery"],
        "gitlab" => &["x-gitlab-event-uuid", "x-gitlab-webhook-uuid", "idempotency-key"],
        "gitea" => &["x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery"],
        "bitbucket" => &["x-request-uuid", "x-hook-uuid"],
        "standard" => &["webhook-id"],
        _ => &[],
    };
    names.iter().find_map(|n| h.get_str(n)).map(|v| v.chars().take(200).collect())
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str().map(String::from)
}

/// Reads the event a verified delivery carries.
pub fn parse(provider: &str, h: &HeaderMap, body: &[u8]) -> Result<Event, String> {
    parse_json(provider, h, &json_of(body)?)
}

/// Every provider `/hooks/{provider}` knows.
const PROVIDERS: [&str; 10] = ["github", "gitlab", "gitea", "forgejo", "gogs", "bitbucket", "standard", "harbor", "dockerhub", "quay"];

/// The `payload` field of a form-encoded delivery (GitHub's `application/x-www-form-urlencoded`).
fn form_payload(body: &[u8]) -> Result<Vec<u8>, String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned().into_bytes())
        .ok_or_else(|| "a form-encoded delivery without its `payload` field".to_string())
}

fn json_of(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
}

/// [`parse`] of a body already read as JSON.
/// A GitHub Packages event: a container image published (`ghcr.io/OWNER/NAME`, its tag, or its
/// digest when pushed by digest) is an image push; any other package (npm, Maven...) or action is
/// nothing to start.
fn github_package(v: &Value) -> Event {
    let p = if v["package"].is_object() { &v["package"] } else { &v["registry_package"] };
    let action = v["action"].as_str().unwrap_or("");
    let version = &p["package_version"];
    let container = p["package_type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("container")) || version["container_metadata"].is_object();
    if action != "published" || !container {
        let kind = p["package_type"].as_str().unwrap_or("unknown");
        return Event::Other(format!("a `package` event ({} of a {} package)", crate::diag::printable(action), crate::diag::printable(kind)));
    }
    // `ghcr.io/owner/name:tag` (the tag may be empty); image names are lowercase.
    let url = version["package_url"].as_str().unwrap_or("");
    let repository = url.split(['@']).next().unwrap_or("").rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or(url, |(r, _)| r).to_ascii_lowercase();
    let tag = version["container_metadata"]["tag"]["name"].as_str().filter(|t| !t.is_empty()).or_else(|| version["version"].as_str().filter(|t| !t.is_empty()));
    match (repository.is_empty(), tag) {
        (false, Some(tag)) => Event::Image { repository, tag: tag.to_string() },
        _ => Event::Other("a container `package` event without package_url and a tag or digest".into()),
    }
}

fn parse_json(provider: &str, h: &HeaderMap, v: &Value) -> Result<Event, String> {
    let push = |repo: Option<String>, git_ref: Option<String>, commit: Option<String>| match (repo, git_ref, commit) {
        (Some(repo), Some(git_ref), Some(commit)) => Ok(Event::Push { repo, git_ref, commit }),
        _ => Err("a push event without its repository, ref or commit".to_string()),
    };
    match provider {
        "github" | "gitea" => {
            let event = ["x-github-event", "x-gitea-event", "x-forgejo-event", "x-gogs-event"].iter().find_map(|n| h.get_str(n)).unwrap_or("");
            match event {
                "ping" => Ok(Event::Ping),
                "push" if v["deleted"] == true => Ok(Event::Other("a deleted ref".into())),
                "push" => push(text(v, &["repository", "full_name"]), text(v, &["ref"]), text(v, &["after"])),
                "pull_request" => match (text(v, &["repository", "full_name"]), v["pull_request"]["number"].as_u64().or(v["number"].as_u64())) {
                    (Some(repo), Some(number)) => Ok(Event::PullRequest { repo, number, action: text(v, &["action"]).unwrap_or_default() }),
                    _ => Err("a pull_request event without its repository or number".to_string()),
                },
                // GitHub Packages: a container image published to ghcr.io (`registry_package` is the
                // older name of the same event; GitHub sends both).
                "package" | "registry_package" if provider == "github" => Ok(github_package(v)),
                other => Ok(Event::Other(format!("a `{other}` event"))),
            }
        }
        "gitlab" => match h.get_str("x-gitlab-event").unwrap_or("") {
            "Merge Request Hook" => match (text(v, &["project", "path_with_namespace"]), v["object_attributes"]["iid"].as_u64()) {
                (Some(repo), Some(number)) => Ok(Event::PullRequest { repo, number, action: text(v, &["object_attributes", "action"]).unwrap_or_default() }),
                _ => Err("a merge request event without its project or iid".to_string()),
            },
            "Push Hook" | "Tag Push Hook" if v["after"].as_str().is_some_and(|a| a.chars().all(|c| c == '0')) => Ok(Event::Other("a deleted ref".into())),
            "Push Hook" | "Tag Push Hook" => {
                push(text(v, &["project", "path_with_namespace"]), text(v, &["ref"]), text(v, &["checkout_sha"]).or_else(|| text(v, &["after"])))
            }
            other => Ok(Event::Other(format!("a `{other}` event"))),
        },
        "bitbucket" => match h.get_str("x-event-key").unwrap_or("") {
            "diagnostics:ping" => Ok(Event::Ping),
            // Cloud: push.changes[].new {type, name, target.hash}.
            "repo:push" => {
                let change = &v["push"]["changes"][0]["new"];
                if change.is_null() {
                    return Ok(Event::Other("a deleted ref".into()));
                }
                let kind = if change["type"] == "tag" { "tags" } else { "heads" };
                push(text(v, &["repository", "full_name"]), change["name"].as_str().map(|n| format!("refs/{kind}/{n}")), text(change, &["target", "hash"]))
            }
            // Data Center / Server: changes[].ref.id, toHash; the repo as PROJECT/slug.
            "repo:refs_changed" => {
                let c = &v["changes"][0];
                let repo = match (text(v, &["repository", "project", "key"]), text(v, &["repository", "slug"])) {
                    (Some(p), Some(s)) => Some(format!("{p}/{s}")),
                    _ => None,
                };
                if c["type"] == "DELETE" {
                    return Ok(Event::Other("a deleted ref".into()));
                }
                push(repo, text(c, &["ref", "id"]), text(c, &["toHash"]))
            }
            other => Ok(Event::Other(format!("a `{other}` event"))),
        },
        // promote's own shape for senders that sign as Standard Webhooks (docs/api.md).
        "standard" => match v["type"].as_str().unwrap_or("") {
            "ping" => Ok(Event::Ping),
            "git.push" => push(text(v, &["data", "repo"]), text(v, &["data", "ref"]), text(v, &["data", "commit"])),
            "image.push" => match (text(v, &["data", "repository"]), text(v, &["data", "tag"])) {
                (Some(repository), Some(tag)) => Ok(Event::Image { repository, tag }),
                _ => Err("an image.push event without data.repository and data.tag".into()),
            },
            other => Ok(Event::Other(format!("a `{other}` event"))),
        },
        "harbor" => match v["type"].as_str().unwrap_or("") {
            "PUSH_ARTIFACT" | "pushImage" => {
                let r = &v["event_data"]["resources"][0];
                // `host/project/repo:tag`, or `host/project/repo@sha256:...` for a push by digest.
                let repository = text(r, &["resource_url"]).map(|u| match u.split_once('@') {
                    Some((repo, _)) => repo.to_string(),
                    None => u.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or(u.clone(), |(repo, _)| repo.to_string()),
                });
                // A push by digest has no tag: its version is the digest.
                let tag = text(r, &["tag"]).filter(|t| !t.is_empty()).or_else(|| text(r, &["digest"]).filter(|d| !d.is_empty()));
                match (repository.or_else(|| text(v, &["event_data", "repository", "repo_full_name"])), tag) {
                    (Some(repository), Some(tag)) => Ok(Event::Image { repository, tag }),
                    _ => Err("a Harbor push without event_data.resources[0].tag or .digest".into()),
                }
            }
            "PING" => Ok(Event::Ping),
            other => Ok(Event::Other(format!("a Harbor `{other}` event"))),
        },
        "dockerhub" => match (text(v, &["repository", "repo_name"]), text(v, &["push_data", "tag"])) {
            (Some(repository), Some(tag)) => Ok(Event::Image { repository, tag }),
            _ => Err("a Docker Hub push without repository.repo_name and push_data.tag".into()),
        },
        "quay" => match (text(v, &["docker_url"]).or_else(|| text(v, &["repository"])), v["updated_tags"][0].as_str()) {
            (Some(repository), Some(tag)) => Ok(Event::Image { repository, tag: tag.to_string() }),
            _ => Err("a Quay push without docker_url and updated_tags".into()),
        },
        other => Err(format!("unknown provider `{other}`")),
    }
}

/// When what a verified delivery announces happened, in Unix milliseconds, if it says: the pushed
/// commit's time for a Git push, the push's time for an image (where DORA's lead time starts).
pub fn origin(provider: &str, v: &Value) -> Option<i64> {
    let iso = |v: &Value| v.as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(|t| t.as_millisecond());
    let unix = |v: &Value| v.as_f64().filter(|s| *s > 0.0).map(|s| (s * 1000.0) as i64);
    match provider {
        "github" | "gitea" => iso(&v["head_commit"]["timestamp"]),
        "gitlab" => {
            let sha = v["checkout_sha"].as_str().or(v["after"].as_str());
            let commits = v["commits"].as_array()?;
            commits.iter().find(|c| c["id"].as_str() == sha).or(commits.last()).and_then(|c| iso(&c["timestamp"]))
        }
        "bitbucket" => iso(&v["push"]["changes"][0]["new"]["target"]["date"]),
        "standard" => iso(&v["timestamp"]),
        "harbor" => unix(&v["occur_at"]),
        "dockerhub" => unix(&v["push_data"]["pushed_at"]),
        _ => None,
    }
}

/// The version of a trigger with `version: {file}`: the file's first line at `commit`, read
/// through the trigger's `url` (blocking work, off the async threads). Other triggers' `version`
/// is returned as it is.
pub(super) async fn read_version(server: &Server, loaded: &Loaded, t: &Trigger, version: String) -> Result<String, String> {
    let Some(g) = &t.git else { return Ok(version) };
    let (Some(file), Some(url)) = (g.version.file(), &g.url) else { return Ok(version) };
    let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
    let remote = crate::git::Remote::resolve(&url.value, base);
    let (writer, file, commit) = (server.exec.writer.clone(), file.to_string(), version.clone());
    let text =
        tokio::task::spawn_blocking(move || writer.read_at(&remote, &commit, &file, 4096).map_err(|e| e.to_string())).await.map_err(|e| e.to_string())??;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_string();
    if line.is_empty() {
        return Err(format!("`{}` is empty at {version}", g.version.file().unwrap_or_default()));
    }
    Ok(line)
}

/// The version a trigger takes from an event, when the event is one it starts runs for.
pub fn version_for(t: &Trigger, event: &Event) -> Option<String> {
    match (event, &t.git, &t.image) {
        (Event::Push { repo, git_ref, commit }, Some(g), _) => {
            if !repo.eq_ignore_ascii_case(&g.repo.value) {
                return None;
            }
            if !g.refs.iter().any(|r| glob::Pattern::new(&r.value).is_ok_and(|p| p.matches(git_ref))) {
                return None;
            }
            match &g.version {
                GitVersion::Tag => git_ref.strip_prefix("refs/tags/").map(String::from),
                // The file's text is read by `read_version` (it takes the repo).
                GitVersion::Commit | GitVersion::File(_) => Some(commit.clone()),
            }
        }
        (Event::Image { repository, tag }, _, Some(i)) => {
            // Registries name a repository with or without their host: match the trailing path.
            let want = i.repository.value.trim_end_matches('/');
            let got = repository.trim_end_matches('/');
            let same = want == got || want.ends_with(&format!("/{got}")) || got.ends_with(&format!("/{want}"));
            let tag_ok = i.filter().admits(tag);
            (same && tag_ok).then(|| tag.clone())
        }
        _ => None,
    }
}
