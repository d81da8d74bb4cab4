//! Notifications: a generic JSON webhook and a Slack-compatible incoming webhook, sent in the
//! background with retries (doubling waits), every secret redacted from what is sent and logged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::diag::{Diagnostics, did_you_mean};
use crate::model::{Notification, NotifyTarget};

/// The events a channel can subscribe to.
pub const EVENTS: &[&str] =
    &["approval-pending", "stage-failed", "rollback", "policy-warning", "freeze", "break-glass", "run-finished", "drift", "watch-failed"];

/// Checks the channels: one target each, known events.
pub fn check(list: &[Notification], diags: &mut Diagnostics) {
    for n in list {
        for e in &n.events {
            if !EVENTS.contains(&e.value.as_str()) {
                diags.error(
                    e.pos,
                    format!("unknown notification event `{}`{}; events: {}", e.value, did_you_mean(&e.value, EVENTS.iter().copied()), EVENTS.join(", ")),
                );
            }
        }
        if n.webhook.is_some() == n.slack.is_some() {
            let pos = n.events.first().map(|e| e.pos).unwrap_or_default();
            diags.error(pos, "a notification has exactly one of `webhook` or `slack`");
        }
        for t in [&n.webhook, &n.slack].into_iter().flatten() {
            let given = [t.url.is_some(), t.url_env.is_some(), t.url_file.is_some()].iter().filter(|b| **b).count();
            if given != 1 {
                let pos = t.url.as_ref().map(|u| u.pos).unwrap_or_default();
                diags.error(pos, "a notification target has exactly one of `url`, `urlEnv` or `urlFile`");
            }
            if let Some(u) = &t.url
                && !(u.value.starts_with("http://") || u.value.starts_with("https://"))
            {
                diags.error(u.pos, "a notification `url` starts with http:// or https://");
            }
        }
    }
}

/// One thing to tell people.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    /// One of [`EVENTS`].
    pub event: String,
    /// The pipeline.
    pub pipeline: String,
    /// The run.
    pub run: String,
    /// The version.
    pub version: String,
    /// The stage, if any.
    pub stage: Option<String>,
    /// What happened, in words (redacted before sending).
    pub message: String,
}

impl Note {
    /// A note about a run.
    pub fn for_run(run: &crate::store::RunRecord, event: &str, stage: Option<&str>, message: &str) -> Note {
        Note {
            event: event.into(),
            pipeline: run.pipeline.clone(),
            run: run.id.clone(),
            version: run.version.clone(),
            stage: stage.map(str::to_string),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Slack,
}

#[derive(Debug, Clone)]
struct Channel {
    name: String,
    format: Format,
    url: String,
    events: Vec<String>,
    attempts: u32,
    timeout: Duration,
}

/// A note that could not be delivered after every attempt.
#[derive(Debug, Clone)]
pub struct Undelivered {
    /// The channel.
    pub channel: String,
    /// The event.
    pub event: String,
    /// The last error (redacted).
    pub error: String,
}

/// Sends a run's notifications.
#[derive(Default)]
pub struct Notifier {
    channels: Vec<Channel>,
    secrets: Vec<String>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<Option<Undelivered>>>>,
    /// Waits between attempts start here and double (tests shorten it).
    pub first_backoff: Duration,
}

impl Notifier {
    /// The channels of a pipeline, URLs read from the environment or files now. A URL that cannot
    /// be found is an error naming where it was looked for (never the value).
    pub fn new(list: &[Notification], extra_secrets: Vec<String>) -> Result<Notifier, String> {
        let mut channels = Vec::new();
        let mut secrets = extra_secrets;
        for n in list {
            let (format, t, kind) = match (&n.webhook, &n.slack) {
                (Some(t), _) => (Format::Json, t, "webhook"),
                (None, Some(t)) => (Format::Slack, t, "slack"),
                _ => continue,
            };
            let name = n.name.clone().unwrap_or_else(|| kind.to_string());
            let url = resolve(t).map_err(|e| format!("notification `{name}`: {e}"))?;
            // A webhook URL is a secret (its path is the credential), in every form.
            crate::redact::register(&url);
            secrets.push(url.clone());
            let events = if n.events.is_empty() { EVENTS.iter().map(|s| s.to_string()).collect() } else { n.events.iter().map(|e| e.value.clone()).collect() };
            channels.push(Channel { name, format, url, events, attempts: n.attempts.max(1), timeout: n.timeout.0 });
        }
        Ok(Notifier { channels, secrets, tasks: Mutex::new(Vec::new()), first_backoff: Duration::from_millis(200) })
    }

    /// Sends `note` to every channel that wants its event, in the background.
    pub fn send(self: &Arc<Self>, note: Note) {
        for (i, c) in self.channels.iter().enumerate() {
            if !c.events.iter().any(|e| e == &note.event) {
                continue;
            }
            let me = self.clone();
            let note = note.clone();
            let handle = tokio::spawn(async move {
                let c = &me.channels[i];
                match me.deliver(c, &note).await {
                    Ok(_) => None,
                    Err(error) => {
                        tracing::warn!(channel = %c.name, event = %note.event, error = %error, "notification not delivered");
                        Some(Undelivered { channel: c.name.clone(), event: note.event.clone(), error })
                    }
                }
            });
            self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
        }
    }

    /// Waits for every note sent so far; returns those that were not delivered.
    pub async fn finish(&self) -> Vec<Undelivered> {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(Some(u)) = t.await {
                out.push(u);
            }
        }
        out
    }

    /// Waits for every note sent so far; those not delivered become audit entries of `run`.
    pub async fn finish_audited(&self, store: &crate::store::Store, run: &str) -> Result<(), crate::store::StoreError> {
        for u in self.finish().await {
            store.audit(run, None, "notification", "promote", &format!("`{}` note to {} not delivered: {}", u.event, u.channel, u.error)).await?;
        }
        Ok(())
    }

    /// One channel, every attempt: returns the attempts it took, or the last error.
    async fn deliver(&self, c: &Channel, note: &Note) -> Result<u32, String> {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        let message = redact(&note.message, &secrets);
        let body = match c.format {
            Format::Json => serde_json::to_value(Note { message, ..note.clone() }).unwrap_or_default(),
            Format::Slack => {
                let stage = note.stage.as_deref().map(|s| format!(" `{s}`")).unwrap_or_default();
                serde_json::json!({"text": format!("*{}* {} {}{stage}: {message} (run {})", note.event, note.pipeline, note.version, note.run)})
            }
        };
        let client = crate::providers::http_client();
        let mut last = String::new();
        for attempt in 1..=c.attempts {
            let sent = client.post(&c.url).timeout(c.timeout).json(&body).send().await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(attempt),
                Ok(r) => last = format!("{} answered {}", c.name, r.status()),
                Err(e) => last = format!("{}: {}", c.name, redact(&e.to_string(), &secrets)),
            }
            if attempt < c.attempts {
                tokio::time::sleep(self.first_backoff.saturating_mul(1 << (attempt - 1).min(10))).await;
            }
        }
        Err(format!("{last} (after {} attempts)", c.attempts))
    }
}

fn resolve(t: &NotifyTarget) -> Result<String, String> {
    if let Some(u) = &t.url {
        return Ok(u.value.clone());
    }
    if let Some(var) = &t.url_env {
        return std::env::var(var).map(|v| v.trim().to_string()).map_err(|_| format!("environment variable `{var}` (urlEnv) is not set"));
    }
    if let Some(file) = &t.url_file {
        return crate::files::read_text(std::path::Path::new(file), crate::files::MAX_SMALL)
            .map(|v| v.trim().to_string())
            .map_err(|e| format!("cannot read `{file}` (urlFile): {e}"));
    }
    Err("no `url`, `urlEnv` or `urlFile`".into())
}

/// Removes secrets from text: the given values, then everything [`crate::redact`] removes.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 6) {
        out = out.replace(s, crate::redact::MASK);
    }
    crate::redact::text(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn secrets_are_redacted() {
        let t = redact(
            "call https://hooks.slack.com/services/T0/B1/xyz with Authorization: Bearer abc.def and token=s3cr3t, url https://u:pw@git.example.com/r and prt_0123456789abcdef0123",
            &[],
        );
        for leak in ["T0/B1/xyz", "abc.def", "s3cr3t", ":pw@", "prt_0123"] {
            assert!(!t.contains(leak), "{leak} leaked: {t}");
        }
        assert_eq!(redact("the url is http://127.0.0.1:9/hook-abcdef", &["http://127.0.0.1:9/hook-abcdef"]), "the url is [redacted]");
    }
}
