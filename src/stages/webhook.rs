//! The `webhook` kind: one outbound HTTP call (URL, headers and body interpolated with the run's
//! variables, credentials by reference), judged by its status and an optional CEL condition over
//! the answer.

use serde_json::{Value, json};

use super::{Run, StageContext, StageError, Step};
use crate::model::{Method, WebhookStage};
use crate::providers::auth::Credential;

/// The most of an answer read (and kept, for the record: 16 KB).
const MAX_ANSWER: usize = 1 << 20;
const KEPT: usize = 16 << 10;

impl Run for WebhookStage {
    async fn run(&self, ctx: &StageContext) -> Result<Step, StageError> {
        let vars = ctx.variables();
        let fill = |text: &str, what: &str| {
            crate::model::interpolate(text, |n| vars.get(n).map(String::as_str))
                .map_err(|v| StageError::Terminal(format!("{what}: `${{{v}}}` has no value here")))
        };
        let url = fill(&self.url.value, "url")?;
        let body = match &self.body {
            Some(b) => fill(b, "body")?,
            None => json!({"pipeline": ctx.run.pipeline, "run": ctx.run.id, "version": ctx.run.version, "stage": ctx.stage().name.value, "triggeredBy": ctx.run.triggered_by})
                .to_string(),
        };
        let credential = self.auth.as_ref().map(Credential::resolve).transpose().map_err(|e| StageError::Terminal(e.to_string()))?.flatten();
        let client = crate::providers::http_client();
        let mut req = match self.method {
            Method::Get => client.get(&url),
            Method::Post => client.post(&url).body(body.clone()),
            Method::Put => client.put(&url).body(body.clone()),
        };
        if self.body.is_none() && self.method != Method::Get {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), fill(v, &format!("header {k}"))?);
        }
        if let Some(c) = &credential {
            req = c.apply(req);
        }
        let method = format!("{:?}", self.method).to_uppercase();
        let scrub = |t: &str| credential.as_ref().map_or(t.to_string(), |c| c.scrub(t));
        let failed = |why: String, transient: bool| -> Result<Step, StageError> {
            if !self.required {
                return Ok(Step::Done(json!({"ok": false, "error": why})));
            }
            Err(if transient { StageError::Transient(why) } else { StageError::Terminal(why) })
        };
        let answer = match req.timeout(self.timeout.0).send().await {
            Ok(a) => a,
            Err(e) => return failed(scrub(&format!("{method} {url} failed: {e}")), true),
        };
        let status = answer.status().as_u16();
        let bytes = answer.bytes().await.map(|b| b.slice(..b.len().min(MAX_ANSWER))).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()));
        let ok_status = if self.expect_status.is_empty() { (200..300).contains(&status) } else { self.expect_status.contains(&status) };
        if !ok_status {
            let shown: String = scrub(&text).chars().take(300).collect();
            let why = format!("{method} {url} answered HTTP {status}, not {}: {shown}", expected(&self.expect_status));
            return failed(why, status >= 500 || status == 429);
        }
        if let Some(cond) = &self.success_condition {
            match condition(&cond.value, status, &parsed) {
                Ok(true) => {}
                Ok(false) => return failed(format!("successCondition `{}` is false (HTTP {status})", cond.value), false),
                Err(e) => return failed(format!("successCondition `{}`: {e}", cond.value), false),
            }
        }
        let kept: String = scrub(&text).chars().take(KEPT).collect();
        Ok(Step::Done(json!({"ok": true, "method": method, "url": url, "status": status, "response": kept})))
    }

    fn describe(&self, output: &Value) -> String {
        match (output["ok"].as_bool(), output["status"].as_u64()) {
            (Some(true), Some(s)) => format!("{} {} -> HTTP {s}", output["method"].as_str().unwrap_or(""), output["url"].as_str().unwrap_or("")),
            (Some(false), _) => format!("call failed, not required: {}", output["error"].as_str().unwrap_or("")),
            _ => String::new(),
        }
    }
}

fn expected(list: &[u16]) -> String {
    if list.is_empty() { "2xx".into() } else { list.iter().map(u16::to_string).collect::<Vec<_>>().join(" or ") }
}

/// `cond` over `response` (`status`, `body`).
fn condition(cond: &str, status: u16, body: &Value) -> Result<bool, String> {
    let program = cel::Program::compile(cond).map_err(|e| e.to_string())?;
    let mut ctx = cel::Context::default();
    ctx.add_variable("response", json!({"status": status, "body": body})).map_err(|e| e.to_string())?;
    match program.execute(&ctx).map_err(|e| e.to_string())? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("it gave {other:?}, not true or false")),
    }
}
