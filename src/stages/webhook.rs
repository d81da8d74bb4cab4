//! The `webhook` kind: one outbound HTTP call (URL, headers and body interpolated with the run's
//! variables, credentials by reference), judged by its status and an optional CEL condition over
//! the answer; with `callback: true`, then the verdict the called system posts to a one-time URL.

pub use settings::WebhookStage;

use serde_json::{Value, json};

use super::{Run, StageContext, StageError, Step, Wait, Wake};
use crate::model::Method;
use crate::providers::auth::Credential;

/// The most of an answer read (and kept, for the record: 16 KB).
const MAX_ANSWER: usize = 1 << 20;
const KEPT: usize = 16 << 10;

/// Who a callback's verdict is recorded as (a decision on the stage, sealed like a person's).
pub const CALLBACK_USER: &str = "callback";

/// The trail entry that records a call whose verdict is awaited (once per stage: a resumed or
/// re-woken stage does not call again).
const CALLED: crate::store::EntryKind = crate::store::EntryKind::WebhookCall;

/// The secret part of a stage's callback URL: the key's MAC over the run and stage.
pub fn callback_token(key: &crate::seal::Key, run: &str, stage: &str) -> String {
    key.mac("callback", &[Some(run.as_bytes()), Some(stage.as_bytes())])
}

/// The one-time URL of a stage's verdict under the server's public URL `base`.
pub fn callback_url(base: &str, key: &crate::seal::Key, run: &str, stage: &str) -> String {
    format!("{}/callbacks/{run}/{stage}/{}", base.trim_end_matches('/'), callback_token(key, run, stage))
}

impl Run for WebhookStage {
    async fn run(&self, ctx: &StageContext) -> Result<Step, StageError> {
        if self.callback {
            let stage = ctx.stage().name.value.clone();
            if let Some(d) = ctx.store.decisions(&ctx.run.id, &stage).await?.into_iter().find(|d| d.user == CALLBACK_USER) {
                ctx.resumed().await?;
                let out = json!({"ok": d.approve, "callback": {"passed": d.approve, "message": d.comment, "at": d.at}});
                if d.approve {
                    return Ok(Step::Done(out));
                }
                let why = format!("the called system's verdict: failed{}", d.comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default());
                return Err(StageError::Verdict { message: why, evidence: out });
            }
            let called = ctx.store.events(&ctx.run.id).await?.into_iter().find(|e| e.kind == CALLED.as_str() && e.stage.as_deref() == Some(stage.as_str()));
            if let Some(e) = called {
                return self.await_verdict(e.at);
            }
        }
        let callback = match (&ctx.public_url, self.callback) {
            (Some(base), true) => Some(callback_url(base, ctx.store.key(), &ctx.run.id, &ctx.stage().name.value)),
            (None, true) => {
                return Err(StageError::Terminal(
                    "`callback: true` needs the server's public URL: `promote serve --public-url URL` (or PROMOTE_PUBLIC_URL for `promote run`)".into(),
                ));
            }
            _ => None,
        };
        let mut vars = ctx.variables_with_previous().await?;
        if let Some(u) = &callback {
            vars.insert("callbackUrl", u.clone());
        }
        let fill = |text: &str, what: &str| {
            crate::model::interpolate(text, |n| vars.get(n).map(String::as_str))
                .map_err(|v| StageError::Terminal(format!("{what}: `${{{v}}}` has no value here")))
        };
        let url = fill(&self.url.value, "url")?;
        let body = match &self.body {
            Some(b) => fill(b, "body")?,
            None => {
                let mut b = json!({"pipeline": ctx.run.pipeline, "run": ctx.run.id, "version": ctx.run.version, "stage": ctx.stage().name.value, "triggeredBy": ctx.run.triggered_by});
                if let Some(u) = &callback {
                    b["callbackUrl"] = json!(u);
                }
                b.to_string()
            }
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
        let transient = crate::providers::may_pass_later(answer.status());
        let status = answer.status().as_u16();
        let bytes = answer.bytes().await.map(|b| b.slice(..b.len().min(MAX_ANSWER))).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()));
        let ok_status = if self.expect_status.is_empty() { (200..300).contains(&status) } else { self.expect_status.contains(&status) };
        if !ok_status {
            let shown: String = scrub(&text).chars().take(300).collect();
            let why = format!("{method} {url} answered HTTP {status}, not {}: {shown}", expected(&self.expect_status));
            return failed(why, transient);
        }
        if let Some(cond) = &self.success_condition {
            match condition(&cond.value, status, &parsed) {
                Ok(true) => {}
                Ok(false) => return failed(format!("successCondition `{}` is false (HTTP {status})", cond.value), false),
                Err(e) => return failed(format!("successCondition `{}`: {e}", cond.value), false),
            }
        }
        let kept: String = scrub(&text).chars().take(KEPT).collect();
        if callback.is_some() {
            // The call is recorded before the wait: woken again, or resumed elsewhere, the stage
            // waits on and never calls twice.
            let detail = format!("{method} {url} answered HTTP {status}; waiting up to {} for its verdict at the callback URL", self.callback_timeout);
            ctx.store.audit(Some(&ctx.run.id), Some(&ctx.stage().name.value), CALLED, "promote", &detail).await?;
            return self.await_verdict(crate::clock::now_ms());
        }
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

impl WebhookStage {
    /// Waits for the verdict of a call made at `called` (Unix ms) until `callbackTimeout`.
    fn await_verdict(&self, called: i64) -> Result<Step, StageError> {
        let deadline = called + self.callback_timeout.0.as_millis() as i64;
        if crate::clock::now_ms() >= deadline {
            return Err(StageError::Terminal(format!("no verdict came to the callback URL within {} of the call", self.callback_timeout)));
        }
        Ok(Step::Wait(Wait {
            why: format!("waiting for the called system's verdict at the callback URL (until {})", crate::clock::rfc3339(deadline)),
            wake: Wake::Decision,
            until: Some(deadline),
            notify: None,
        }))
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

/// The kind's settings as the pipeline file writes them under `webhook:`, what the kind says of itself
/// (`model::Kind`) and its own checks (`plan::Checks`): with its runner above, the kind in one place.
mod settings {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use crate::diag::Diagnostics;
    use crate::model::kinds::*;
    use crate::model::*;
    use crate::plan::Checks;
    use crate::plan::checks::*;

    /// `webhook`: calls an HTTP endpoint and judges its answer.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct WebhookStage {
        /// The URL (interpolated).
        pub url: Spanned<String>,
        /// HTTP method (default POST).
        #[serde(default)]
        pub method: Method,
        /// Request headers (interpolated). Secrets belong in `auth`, never here.
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        /// Request body (interpolated). Default: a JSON summary of the run.
        #[serde(default)]
        pub body: Option<String>,
        /// Status codes that mean success (default: any 2xx).
        #[serde(default)]
        pub expect_status: Vec<u16>,
        /// CEL over `response` (`response.status`, `response.body`): must be true.
        #[serde(default)]
        pub success_condition: Option<Spanned<String>>,
        /// Credentials, by reference.
        #[serde(default)]
        pub auth: Option<Auth>,
        /// Request timeout (default 30s).
        #[serde(default = "default_query_timeout")]
        pub timeout: Duration,
        /// Fail the stage when the call fails (default true); false records and goes on.
        #[serde(default = "default_true")]
        pub required: bool,
        /// Wait, after a successful call, for the called system to post its verdict to the one-time
        /// URL the call carried (`${callbackUrl}`, and `callbackUrl` in the default body).
        #[serde(default)]
        pub callback: bool,
        /// How long to wait for that verdict (default 1h); then the stage fails.
        #[serde(default = "default_callback_timeout")]
        pub callback_timeout: Duration,
    }

    impl Kind for WebhookStage {
        const NAME: &'static str = "webhook";
        fn summary(&self) -> String {
            format!("webhook {}", self.method_name())
        }
    }

    impl WebhookStage {
        /// The method as written.
        pub fn method_name(&self) -> &'static str {
            match self.method {
                Method::Get => "GET",
                Method::Post => "POST",
                Method::Put => "PUT",
            }
        }
    }

    impl Checks for WebhookStage {
        fn expressions(&self) -> Vec<(&Spanned<String>, &'static str, &'static [&'static str])> {
            self.success_condition.iter().map(|e| (e, "successCondition", RESPONSE_VARIABLES)).collect()
        }

        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        fn check(&self, _stage: &Stage, diags: &mut Diagnostics) {
            let w = self;
            check_http_url(&w.url, "url", diags);
        }
    }

    impl crate::governance::Govern for WebhookStage {}
}
