//! `--server URL` (or `PROMOTE_SERVER`): `run`, `status`, `approve`, `reject` and `break-glass`
//! act through a server's API with `PROMOTE_TOKEN`, printing what they print locally.

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::EXIT_BAD_INPUT;
use crate::exec::Summary;
use crate::store::{RunRecord, RunState, StageRecord};

/// A server and the token to speak to it with.
pub struct Remote {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Remote {
    /// The server at `url`; the token from `PROMOTE_TOKEN`.
    pub fn new(url: &str) -> anyhow::Result<Remote> {
        let token = std::env::var("PROMOTE_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .context("--server needs PROMOTE_TOKEN: a token of the server's users file (`promote token --for USER`)")?;
        Ok(Remote { url: url.trim_end_matches('/').to_string(), token: token.trim().to_string(), http: crate::providers::http_client() })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}/api/v1{path}", self.url)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.with_context(|| format!("cannot reach the server at {}", self.url))?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }
}

/// What a refusal prints, and its exit code: 2 for a request the server refused (400, 401, 404).
fn refused(status: u16, v: &Value) -> anyhow::Result<ExitCode> {
    let why = v["error"].as_str().unwrap_or("(no reason given)");
    if matches!(status, 400 | 401 | 403 | 404 | 409) {
        eprintln!("promote: error: {}", crate::diag::printable(why));
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    anyhow::bail!("the server answered {status}: {why}")
}

fn summary(v: &Value) -> anyhow::Result<Summary> {
    let run: RunRecord = serde_json::from_value(v["run"].clone()).context("the server's run")?;
    let stages: Vec<StageRecord> = serde_json::from_value(v["stages"].clone()).context("the server's stages")?;
    Ok(Summary { run, stages })
}

/// `promote run FILE --version V --server URL`: the pipeline (by the name in FILE) started on the
/// server, then followed through its events until its end (unless `detach`).
pub fn run(server: &str, file: &std::path::Path, version: &str, detach: bool) -> anyhow::Result<ExitCode> {
    let text = crate::files::read_text(file, crate::files::MAX_TEXT)?;
    let mut diags = crate::diag::Diagnostics::new(file.display().to_string());
    let Some(p) = crate::model::load(&text, &mut diags) else {
        for d in diags.iter() {
            eprintln!("{d}");
        }
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    };
    let remote = Remote::new(server)?;
    super::runtime()?.block_on(async {
        let (status, v) = remote.call(reqwest::Method::POST, "/runs", Some(json!({"pipeline": p.name.value, "version": version}))).await?;
        if status != 201 {
            return refused(status, &v);
        }
        let id = v["run"]["id"].as_str().unwrap_or_default().to_string();
        if detach {
            println!("{id}");
            return Ok(ExitCode::SUCCESS);
        }
        let mut r = remote.http.get(format!("{}/api/v1/runs/{id}/events", remote.url)).bearer_auth(&remote.token).send().await?;
        let mut buf = String::new();
        while let Some(chunk) = r.chunk().await? {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                    let e: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                    let stage = e["stage"].as_str().unwrap_or("-");
                    eprintln!("{:<12} {:<20} {}", e["kind"].as_str().unwrap_or(""), stage, crate::diag::printable(e["detail"].as_str().unwrap_or("")));
                }
            }
        }
        let (status, v) = remote.call(reqwest::Method::GET, &format!("/runs/{id}"), None).await?;
        if status != 200 {
            return refused(status, &v);
        }
        let s = summary(&v)?;
        print!("{}", super::run::render_summary(&s));
        Ok(if s.run.state == RunState::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

/// `promote status [RUN] [--json] --server URL`.
pub fn status(server: &str, run: Option<&str>, as_json: bool) -> anyhow::Result<ExitCode> {
    let remote = Remote::new(server)?;
    super::runtime()?.block_on(async {
        let path = run.map_or("/runs".to_string(), |id| format!("/runs/{id}"));
        let (status, v) = remote.call(reqwest::Method::GET, &path, None).await?;
        if status != 200 {
            return refused(status, &v);
        }
        if as_json {
            let out = if run.is_some() { v } else { json!({ "items": v["runs"] }) };
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else if run.is_some() {
            print!("{}", super::run::render_summary(&summary(&v)?));
        } else {
            let runs: Vec<RunRecord> = serde_json::from_value(v["runs"].clone())?;
            for r in runs {
                println!("{}  {:<16} {:<12} {}", r.id, r.pipeline, r.version, r.state.as_str());
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `promote approve|reject|break-glass ... --server URL`: decided as the token's user, who must be
/// `--as`.
pub fn decide(server: &str, run: &str, stage: &str, user: &str, decision: &str, comment: Option<&str>) -> anyhow::Result<ExitCode> {
    let remote = Remote::new(server)?;
    super::runtime()?.block_on(async {
        let body = json!({"comment": comment, "as": user});
        let (status, v) = remote.call(reqwest::Method::POST, &format!("/runs/{run}/stages/{stage}/{decision}"), Some(body)).await?;
        if status != 200 {
            return refused(status, &v);
        }
        println!("{}", crate::diag::printable(v["done"].as_str().unwrap_or("")));
        Ok(ExitCode::SUCCESS)
    })
}

/// `promote drift ... --server URL`: list, show, accept and reject through the API (a server
/// looks for drift by itself: `check` runs where the repos are).
pub fn drift(server: &str, command: &super::drift::DriftCommand) -> anyhow::Result<ExitCode> {
    use super::drift::DriftCommand;
    let remote = Remote::new(server)?;
    super::runtime()?.block_on(async {
        let all = || async {
            let (status, v) = remote.call(reqwest::Method::GET, "/drifts", None).await?;
            anyhow::Ok((status, v))
        };
        match command {
            DriftCommand::Check { .. } => {
                eprintln!("promote: error: `drift check` looks at the repos from here: run it without --server (a server looks by itself, at each push and every --drift-poll)");
                Ok(ExitCode::from(super::EXIT_BAD_INPUT))
            }
            DriftCommand::List { json } => {
                let (status, v) = all().await?;
                if status != 200 {
                    return refused(status, &v);
                }
                let drifts: Vec<crate::store::DriftRecord> = serde_json::from_value(v["drifts"].clone())?;
                Ok(super::drift::list(&drifts, *json))
            }
            DriftCommand::Show { id } => {
                let (status, v) = all().await?;
                if status != 200 {
                    return refused(status, &v);
                }
                let drifts: Vec<crate::store::DriftRecord> = serde_json::from_value(v["drifts"].clone())?;
                Ok(super::drift::show(&drifts, id))
            }
            DriftCommand::Accept { ids, user, reason, .. } => decide_drift(&remote, super::drift::file_and_id(ids, None).1, "accept", user, reason.as_deref()).await,
            DriftCommand::Reject { ids, user, reason, .. } => decide_drift(&remote, super::drift::file_and_id(ids, None).1, "reject", user, Some(reason)).await,
        }
    })
}

/// `promote compliance ...` through a server's API.
pub fn compliance(server: &str, command: &super::compliance::ComplianceCommand) -> anyhow::Result<ExitCode> {
    use super::compliance::ComplianceCommand;
    let remote = Remote::new(server)?;
    super::runtime()?.block_on(async {
        let all = || async {
            let (status, v) = remote.call(reqwest::Method::GET, "/compliance", None).await?;
            if status != 200 {
                return Ok(Err(refused(status, &v)?));
            }
            anyhow::Ok(Ok(serde_json::from_value::<Vec<crate::store::ViolationRecord>>(v["violations"].clone())?))
        };
        let decide = |id: &str, verdict: &str, body: Value| {
            let path = format!("/compliance/{id}/{verdict}");
            let remote = &remote;
            async move {
                let (status, v) = remote.call(reqwest::Method::POST, &path, Some(body)).await?;
                if status != 200 {
                    return refused(status, &v);
                }
                println!("{}", crate::diag::printable(v["done"].as_str().unwrap_or("")));
                Ok(ExitCode::SUCCESS)
            }
        };
        match command {
            ComplianceCommand::Check { .. } => {
                eprintln!("promote: error: `compliance check` judges the repos from here: run it without --server (a server judges by itself, at each policy change and every compliance.every)");
                Ok(ExitCode::from(super::EXIT_BAD_INPUT))
            }
            ComplianceCommand::List { json } => match all().await? {
                Ok(list) => Ok(super::compliance::list(&list, *json)),
                Err(code) => Ok(code),
            },
            ComplianceCommand::Show { id } => match all().await? {
                Ok(list) => Ok(super::compliance::show(&list, id)),
                Err(code) => Ok(code),
            },
            ComplianceCommand::Accept { id, user, reason, for_, until, .. } => {
                let until = until.map(|t| t.to_string()).or_else(|| {
                    for_.map(|d| jiff::Timestamp::from_millisecond(crate::clock::now_ms() + d.0.as_millis() as i64).map(|t| t.to_string()).unwrap_or_default())
                });
                decide(id, "accept", json!({"reason": reason, "until": until, "as": user})).await
            }
            ComplianceCommand::Revert { id, user, reason, .. } => decide(id, "revert", json!({"reason": reason, "as": user})).await,
        }
    })
}

/// `promote report RUN` through a server's API.
pub fn report(server: &str, run: &str, window: Option<crate::model::Duration>, json: bool) -> anyhow::Result<ExitCode> {
    let remote = Remote::new(server)?;
    super::runtime()?.block_on(async {
        let query = window.map(|w| format!("?window={}s", w.0.as_secs())).unwrap_or_default();
        let (status, v) = remote.call(reqwest::Method::GET, &format!("/runs/{run}/report{query}"), None).await?;
        if status != 200 {
            return refused(status, &v);
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&v["report"])?);
            return Ok(ExitCode::SUCCESS);
        }
        for line in v["markdown"].as_str().unwrap_or("").lines() {
            println!("{}", crate::diag::printable(line));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `promote watch ...` through a server's API.
pub fn watch(server: &str, command: &super::watch::WatchCommand) -> anyhow::Result<ExitCode> {
    use super::watch::WatchCommand;
    let remote = Remote::new(server)?;
    super::runtime()?.block_on(async {
        match command {
            WatchCommand::Run { .. } => {
                eprintln!("promote: error: a server makes its watches' looks by itself: run `watch run` without --server");
                Ok(ExitCode::from(super::EXIT_BAD_INPUT))
            }
            WatchCommand::List { pipeline, json } => {
                let path = match pipeline {
                    Some(p) => format!("/watches?pipeline={}", urlencoding(p)),
                    None => "/watches".to_string(),
                };
                let (status, v) = remote.call(reqwest::Method::GET, &path, None).await?;
                if status != 200 {
                    return refused(status, &v);
                }
                let all: Vec<crate::store::WatchRecord> = serde_json::from_value(v["watches"].clone())?;
                Ok(super::watch::list(&all, *json))
            }
            WatchCommand::Show { id } => {
                let (status, v) = remote.call(reqwest::Method::GET, &format!("/watches/{}", urlencoding(id)), None).await?;
                if status == 404 {
                    return Ok(super::watch::show(None, id));
                }
                if status != 200 {
                    return refused(status, &v);
                }
                let w: crate::store::WatchRecord = serde_json::from_value(v)?;
                Ok(super::watch::show(Some(&w), id))
            }
            WatchCommand::Clear { id, user, reason } => {
                let body = json!({"reason": reason, "as": user});
                let (status, v) = remote.call(reqwest::Method::POST, &format!("/watches/{}/clear", urlencoding(id)), Some(body)).await?;
                if status != 200 {
                    return refused(status, &v);
                }
                println!("{}", crate::diag::printable(v["done"].as_str().unwrap_or("")));
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// A path segment or query value, percent-encoded.
fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn decide_drift(remote: &Remote, id: &str, verdict: &str, user: &str, reason: Option<&str>) -> anyhow::Result<ExitCode> {
    let (status, v) = remote.call(reqwest::Method::POST, &format!("/drifts/{id}/{verdict}"), Some(json!({"reason": reason, "as": user}))).await?;
    if status != 200 {
        return refused(status, &v);
    }
    println!("{}", crate::diag::printable(v["done"].as_str().unwrap_or("")));
    Ok(ExitCode::SUCCESS)
}
