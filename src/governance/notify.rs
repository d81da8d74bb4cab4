//! Notifications: a generic JSON webhook, a Slack-compatible incoming webhook, a Microsoft Teams
//! workflow webhook (an Adaptive Card) and email (SMTP, lettre), sent in the background with
//! retries (doubling waits), every secret redacted from what is sent and logged. A note about
//! something a person may decide carries the link to its page (`{--public-url}/ui/...`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::diag::{Diagnostics, did_you_mean};
use crate::model::{Notification, NotifyTarget};

/// The events a channel can subscribe to.
pub const EVENTS: &[&str] = &[
    "approval-pending",
    "approval-reminder",
    "approval-escalation",
    "stage-failed",
    "rollback",
    "policy-warning",
    "freeze",
    "break-glass",
    "run-finished",
    "drift",
    "watch-failed",
    "compliance",
];

/// Whether a channel subscribed to `events` (none listed: every event) gets a note of `event`:
/// one that asks for `approval-pending` gets the approval's reminders and escalation too.
pub fn carries<'a>(mut events: impl ExactSizeIterator<Item = &'a str>, event: &str) -> bool {
    events.len() == 0 || events.any(|e| e == event || (e == "approval-pending" && matches!(event, "approval-reminder" | "approval-escalation")))
}

/// Whether an event is about a decision that waits (its note links the decision's page).
fn about_a_decision(event: &str) -> bool {
    matches!(event, "approval-pending" | "approval-reminder" | "approval-escalation")
}

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
        let kinds = [n.webhook.is_some(), n.slack.is_some(), n.teams.is_some(), n.email.is_some()].iter().filter(|b| **b).count();
        if kinds != 1 {
            let pos = n.email.as_ref().map(|e| e.pos).or(n.teams.as_ref().map(|t| t.pos)).or(n.events.first().map(|e| e.pos)).unwrap_or_default();
            diags.error(pos, "a notification has exactly one of `webhook`, `slack`, `teams` or `email`");
        }
        let teams = n.teams.as_ref().map(|t| (&t.value, t.pos));
        for (t, at) in [n.webhook.as_ref().map(|t| (t, None)), n.slack.as_ref().map(|t| (t, None)), teams.map(|(t, p)| (t, Some(p)))].into_iter().flatten() {
            check_target(t, at, &["http://", "https://"], diags);
        }
        if let Some(e) = &n.email {
            check_target(&e.value.smtp, Some(e.pos), &["smtp://", "smtps://"], diags);
            if let Some(u) = &e.value.smtp.url {
                check_smtp_url(&u.value, u.pos, diags);
            }
            if e.value.to.is_empty() {
                diags.error(e.pos, "an email notification needs `to`: people, `group:NAME` or addresses");
            }
            for t in &e.value.to {
                if t.value.trim().is_empty() || t.value.contains(char::is_whitespace) && !t.value.contains('<') {
                    diags.error(t.pos, format!("`{}` is not a person, `group:NAME` or an email address", t.value));
                } else if t.value.contains('@') && !t.value.starts_with("group:") && t.value.parse::<lettre::message::Mailbox>().is_err() {
                    diags.error(t.pos, format!("`{}` is not an email address", t.value));
                }
            }
            if let Some(f) = &e.value.from
                && f.value.parse::<lettre::message::Mailbox>().is_err()
            {
                diags.error(f.pos, format!("`from: {}` is not an email address (`Name <address>` or `address`)", f.value));
            }
        }
    }
}

/// One of `url`, `urlEnv`, `urlFile`, and an inline URL's scheme one of `schemes`.
fn check_target(t: &NotifyTarget, at: Option<crate::diag::Pos>, schemes: &[&str], diags: &mut Diagnostics) {
    let given = [t.url.is_some(), t.url_env.is_some(), t.url_file.is_some()].iter().filter(|b| **b).count();
    if given != 1 {
        let pos = t.url.as_ref().map(|u| u.pos).or(at).unwrap_or_default();
        diags.error(pos, "a notification target has exactly one of `url`, `urlEnv` or `urlFile`");
    }
    if let Some(u) = &t.url
        && !schemes.iter().any(|s| u.value.starts_with(s))
    {
        diags.error(u.pos, format!("a notification `url` starts with {}", schemes.join(" or ")));
    }
}

/// An SMTP URL written inline: a host, and only `tls=required` or `tls=opportunistic`.
fn check_smtp_url(url: &str, pos: crate::diag::Pos, diags: &mut Diagnostics) {
    if let Err(e) = smtp_url(url) {
        diags.error(pos, e);
    }
}

/// The SMTP URL as lettre reads it: `smtp://` without `tls` is STARTTLS when the server offers
/// it (`tls=opportunistic`); `?tls=required` insists; `smtps://` is TLS from the start. Errors
/// never repeat the URL (it may hold a password).
fn smtp_url(url: &str) -> Result<String, String> {
    let mut u = url::Url::parse(url).map_err(|e| format!("the SMTP URL cannot be read: {e}"))?;
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the SMTP URL names no host".into());
    }
    let tls: Vec<String> = u.query_pairs().filter(|(k, _)| k == "tls").map(|(_, v)| v.into_owned()).collect();
    match (u.scheme(), tls.first().map(String::as_str)) {
        ("smtp", None) => {
            u.query_pairs_mut().append_pair("tls", "opportunistic");
        }
        ("smtp", Some("required" | "opportunistic")) | ("smtps", None) => {}
        ("smtp" | "smtps", Some(other)) => return Err(format!("`tls={other}`: the SMTP URL takes `tls=required` (or `tls=opportunistic`, the default)")),
        (scheme, _) => return Err(format!("`{scheme}://`: the SMTP URL starts with smtp:// or smtps://")),
    }
    Ok(u.to_string())
}

/// One thing to tell people.
#[derive(Debug, Clone, Default, Serialize)]
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
    /// The page where a person sees it and decides (`{--public-url}/ui/...`), when the server's
    /// public URL is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Whom the note is for, when not the channel's own list (an approval's reminder: the
    /// approvers who have not decided; its escalation: `escalateTo`): logins, `group:NAME`,
    /// addresses. Email is sent to them instead of the channel's `to`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Logins that get no email of this note even when a group of `to` has them (those who
    /// decided already).
    #[serde(skip)]
    pub except: Vec<String>,
    /// The question or news in a business person's words ("Approve deploying checkout 1.7.0 to
    /// prod?"); empty: made from the event.
    #[serde(skip)]
    pub headline: String,
    /// The page's path (`/ui/...`), made into `link` by the notifier.
    #[serde(skip)]
    pub page: Option<String>,
}

impl Note {
    /// A note about a run.
    pub fn for_run(run: &crate::store::RunRecord, event: &str, stage: Option<&str>, message: &str) -> Note {
        // A waiting decision's page is its own (its card in the inbox is `/ui/#decision-RUN-STAGE`,
        // which keeps working); anything else about a run, the run.
        // A failure or a rollback, its report: what changed and what else changed around it.
        let page = match (event, stage) {
            (e, Some(s)) if about_a_decision(e) => format!("/ui/runs/{}/decisions/{}", run.id, s),
            ("stage-failed" | "rollback", _) => format!("/ui/runs/{}/report", run.id),
            _ => format!("/ui/runs/{}", run.id),
        };
        Note {
            event: event.into(),
            pipeline: run.pipeline.clone(),
            run: run.id.clone(),
            version: run.version.clone(),
            stage: stage.map(str::to_string),
            message: message.into(),
            link: None,
            to: Vec::new(),
            except: Vec::new(),
            headline: String::new(),
            page: Some(page),
        }
    }

    /// The same note with its headline.
    pub fn headed(mut self, headline: impl Into<String>) -> Note {
        self.headline = headline.into();
        self
    }

    /// The same note for `to` (logins, `group:NAME`, addresses) but not the people `except`.
    pub fn for_people(mut self, to: Vec<String>, except: Vec<String>) -> Note {
        self.to = to;
        self.except = except;
        self
    }

    /// The same note about the page `path` (`/ui/...`).
    pub fn on_page(mut self, path: impl Into<String>) -> Note {
        self.page = Some(path.into());
        self
    }

    /// The headline, or one made from the event.
    pub fn title(&self) -> String {
        if !self.headline.is_empty() {
            return self.headline.clone();
        }
        let (p, v) = (&self.pipeline, &self.version);
        let stage = self.stage.as_deref().unwrap_or("");
        match self.event.as_str() {
            "approval-pending" => format!("Approve {p} {v} ({stage})?"),
            "approval-reminder" => format!("Reminder: approve {p} {v} ({stage})?"),
            "approval-escalation" => format!("Escalated: approve {p} {v} ({stage})? Nobody has decided"),
            "drift" => format!("{p}: a change nobody promoted. Keep it or undo it?"),
            "watch-failed" => format!("{p} {v} was taken back: a check after the release failed"),
            "freeze" => format!("{p} {v} waits for a change freeze to end"),
            "break-glass" => format!("{p} {v} was let through a change freeze"),
            "stage-failed" => format!("{p} {v} stopped: {stage} failed"),
            "rollback" => format!("{p} was rolled back"),
            "policy-warning" => format!("{p} {v}: a policy warns"),
            "run-finished" => format!("{p} {v}: the release finished"),
            other => format!("{p} {v}: {other}"),
        }
    }

    /// The note as plain text for a person: the headline, what happened, the link.
    pub fn text(&self, message: &str) -> String {
        let mut out = format!("{}\n\n{message}\n", self.title());
        if let Some(l) = &self.link {
            out.push_str(&format!("\nOpen it: {l}\n"));
        }
        if self.run != crate::store::NO_RUN {
            out.push_str(&format!("\n(pipeline {}, version {}, run {})\n", self.pipeline, self.version, self.run));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Slack,
    Teams,
    Email,
}

#[derive(Debug, Clone)]
struct Channel {
    name: String,
    format: Format,
    /// The webhook's URL, or the SMTP server's.
    url: String,
    /// Email: the recipients as written (logins, `group:NAME`, addresses).
    to: Vec<String>,
    /// Email: the sender.
    from: String,
    /// Email: a PEM file of CAs trusted for the SMTP server besides the system's.
    ca_file: Option<String>,
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
    /// The server's public URL: the base of each note's link.
    public_url: Option<String>,
    /// Login -> email address, and group -> its members' addresses, for email recipients.
    people: People,
}

/// Who the email recipients are: the users file's (or the server directory's) addresses.
#[derive(Debug, Clone, Default)]
pub struct People {
    by_login: std::collections::BTreeMap<String, String>,
    by_group: std::collections::BTreeMap<String, Vec<String>>,
}

impl People {
    /// The people of a users file or directory (disabled people get no mail).
    pub fn of(users: &super::Users) -> People {
        let mut p = People::default();
        for (login, u) in users.users.iter().filter(|(_, u)| !u.disabled && !u.email.is_empty()) {
            p.by_login.insert(login.clone(), u.email.clone());
            for g in &u.groups {
                p.by_group.entry(g.clone()).or_default().push(u.email.clone());
            }
        }
        p
    }

    /// The address of a login, if it has one.
    pub fn address(&self, login: &str) -> Option<&str> {
        self.by_login.get(login).map(String::as_str)
    }

    /// Adds `other`'s people where these do not know them (a pipeline's users file over the
    /// server's directory).
    pub fn or(mut self, other: People) -> People {
        for (k, v) in other.by_login {
            self.by_login.entry(k).or_insert(v);
        }
        for (k, v) in other.by_group {
            self.by_group.entry(k).or_insert(v);
        }
        self
    }

    /// The addresses of `to`, each once: a login's, a group's members', an address as written.
    /// Unknown names are returned apart.
    pub fn expand(&self, to: &[String]) -> (Vec<String>, Vec<String>) {
        let (mut out, mut unknown) = (Vec::new(), Vec::new());
        for t in to {
            let found = match t.strip_prefix("group:") {
                Some(g) => self.by_group.get(g).cloned().unwrap_or_default(),
                None if t.contains('@') => vec![t.clone()],
                None => self.by_login.get(t).cloned().into_iter().collect(),
            };
            if found.is_empty() {
                unknown.push(t.clone());
            }
            for a in found {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        (out, unknown)
    }
}

impl Notifier {
    /// The channels of a pipeline, URLs read from the environment or files now. A URL that cannot
    /// be found is an error naming where it was looked for (never the value).
    pub fn new(list: &[Notification], extra_secrets: Vec<String>) -> Result<Notifier, String> {
        let mut channels = Vec::new();
        let mut secrets = extra_secrets;
        for n in list {
            let (format, t, kind) = match (&n.webhook, &n.slack, &n.teams, &n.email) {
                (Some(t), ..) => (Format::Json, t, "webhook"),
                (None, Some(t), ..) => (Format::Slack, t, "slack"),
                (None, None, Some(t), _) => (Format::Teams, &t.value, "teams"),
                (None, None, None, Some(e)) => (Format::Email, &e.value.smtp, "email"),
                _ => continue,
            };
            let name = n.name.clone().unwrap_or_else(|| kind.to_string());
            let mut url = resolve(t).map_err(|e| format!("notification `{name}`: {e}"))?;
            // A webhook URL is a secret (its path is the credential), in every form; so is an
            // SMTP URL (its password).
            crate::redact::register(&url);
            secrets.push(url.clone());
            if let Some(pw) = url::Url::parse(&url).ok().and_then(|u| u.password().map(str::to_string)) {
                crate::redact::register(&pw);
                secrets.push(pw);
            }
            let (mut to, mut from, mut ca_file) = (Vec::new(), String::new(), None);
            if let Some(e) = &n.email {
                url = smtp_url(&url).map_err(|e| format!("notification `{name}`: {e}"))?;
                crate::redact::register(&url);
                secrets.push(url.clone());
                to = e.value.to.iter().map(|t| t.value.clone()).collect();
                from = e.value.from.as_ref().map_or_else(|| "promote <promote@localhost>".to_string(), |f| f.value.clone());
                ca_file = e.value.ca_file.as_ref().map(|f| f.value.clone());
            }
            let events = if n.events.is_empty() { EVENTS.iter().map(|s| s.to_string()).collect() } else { n.events.iter().map(|e| e.value.clone()).collect() };
            channels.push(Channel { name, format, url, to, from, ca_file, events, attempts: n.attempts.max(1), timeout: n.timeout.0 });
        }
        Ok(Notifier {
            channels,
            secrets,
            tasks: Mutex::new(Vec::new()),
            first_backoff: Duration::from_millis(200),
            public_url: None,
            people: People::default(),
        })
    }

    /// The same notifier, linking each note to its page under `public_url`.
    pub fn linked(mut self, public_url: Option<&str>) -> Notifier {
        self.public_url = public_url.map(|u| u.trim_end_matches('/').to_string()).filter(|u| !u.is_empty());
        self
    }

    /// The same notifier, addressing email to `people`.
    pub fn addressed(mut self, people: People) -> Notifier {
        self.people = people;
        self
    }

    /// Sends `note` to every channel that wants its event, in the background.
    pub fn send(self: &Arc<Self>, mut note: Note) {
        if note.link.is_none()
            && let (Some(base), Some(page)) = (&self.public_url, &note.page)
        {
            note.link = Some(format!("{base}{page}"));
        }
        // A failed watch's note links the held version's card (where it is cleared); what changed
        // around the failure is its run's report.
        if note.event == "watch-failed"
            && let Some(base) = &self.public_url
            && note.run != crate::store::NO_RUN
        {
            note.message = format!("{}; what changed around it: {base}/ui/runs/{}/report", note.message, note.run);
        }
        for (i, c) in self.channels.iter().enumerate() {
            if !carries(c.events.iter().map(String::as_str), &note.event) {
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
    pub async fn finish_audited(&self, store: &crate::store::Store, run: Option<&str>) -> Result<(), crate::store::StoreError> {
        for u in self.finish().await {
            store
                .audit(run, None, crate::store::EntryKind::Notification, "promote", &format!("`{}` note to {} not delivered: {}", u.event, u.channel, u.error))
                .await?;
        }
        Ok(())
    }

    /// One channel, every attempt that may help: returns the attempts it took, or the last error
    /// and how many were made.
    async fn deliver(&self, c: &Channel, note: &Note) -> Result<u32, String> {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        let message = redact(&note.message, &secrets);
        if c.format == Format::Email {
            use lettre::AsyncTransport;
            use lettre::transport::smtp::response::Severity;
            let (transport, mail) = self.email(c, note, &message, &secrets).map_err(|e| e.to_string())?;
            return self
                .attempts(c, || async {
                    match transport.send(mail.clone()).await {
                        Ok(r) if r.is_positive() => Ok(()),
                        Ok(r) => Err(DeliveryError::Answered {
                            channel: c.name.clone(),
                            answer: format!("the SMTP server answered {}", r.code()),
                            later: r.code().severity == Severity::TransientNegativeCompletion,
                        }),
                        Err(e) => Err(DeliveryError::Unreachable {
                            channel: c.name.clone(),
                            why: smtp_error(&redact(&e.to_string(), &secrets), c.ca_file.as_deref()),
                            later: !(e.is_permanent() || e.is_client()),
                        }),
                    }
                })
                .await;
        }
        let title = redact(&note.title(), &secrets);
        let body = match c.format {
            Format::Json => serde_json::to_value(Note { message, ..note.clone() }).unwrap_or_default(),
            Format::Slack => {
                let stage = note.stage.as_deref().map(|s| format!(" `{s}`")).unwrap_or_default();
                let link = note.link.as_deref().map(|l| format!("\n<{l}|{title}>")).unwrap_or_default();
                serde_json::json!({"text": format!("*{}* {} {}{stage}: {message} (run {}){link}", note.event, note.pipeline, note.version, note.run)})
            }
            Format::Teams => teams_card(note, &title, &message),
            Format::Email => unreachable!("sent above"),
        };
        let client = crate::providers::http_client();
        self.attempts(c, || async {
            match client.post(&c.url).timeout(c.timeout).json(&body).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(DeliveryError::Answered {
                    channel: c.name.clone(),
                    answer: format!("answered {}", r.status()),
                    later: crate::providers::may_pass_later(r.status()),
                }),
                // A URL that cannot be sent to stays so; a network that failed may come back.
                Err(e) => {
                    Err(DeliveryError::Unreachable { channel: c.name.clone(), later: !e.is_builder(), why: redact(&crate::providers::describe(e), &secrets) })
                }
            }
        })
        .await
    }

    /// Makes `once` up to the channel's attempts, waiting longer each time, while its error says
    /// another attempt may succeed: the attempts it took, or the last error with their number.
    async fn attempts<F, Fut>(&self, c: &Channel, mut once: F) -> Result<u32, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), DeliveryError>>,
    {
        let mut attempt = 1;
        loop {
            match once().await {
                Ok(()) => return Ok(attempt),
                Err(e) if attempt < c.attempts && e.may_pass_later() => {
                    tokio::time::sleep(self.first_backoff.saturating_mul(1 << (attempt - 1).min(10))).await;
                    attempt += 1;
                }
                Err(e) => return Err(format!("{e} (after {attempt} attempt{})", if attempt == 1 { "" } else { "s" })),
            }
        }
    }
}

/// Why one attempt at a note failed; whether another attempt may succeed decides the retries.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver answered and refused the note: a webhook's HTTP status, an SMTP reply.
    /// `later` when the answer says to try again (HTTP 408, 429, 5xx; SMTP 4xx).
    #[error("{channel}: {answer}")]
    Answered { channel: String, answer: String, later: bool },
    /// The receiver was not reached or did not answer in time. `later` unless the failure is one
    /// that cannot change (an SMTP permanent error).
    #[error("{channel}: {why}")]
    Unreachable { channel: String, why: String, later: bool },
    /// The channel cannot send this note as configured (no address for its recipients, a `from`
    /// or URL that cannot be used, a CA file that cannot be read): nothing is attempted.
    #[error("{channel}: {why}")]
    Unsendable { channel: String, why: String },
}

impl DeliveryError {
    /// Whether another attempt may succeed.
    pub fn may_pass_later(&self) -> bool {
        match self {
            DeliveryError::Answered { later, .. } | DeliveryError::Unreachable { later, .. } => *later,
            DeliveryError::Unsendable { .. } => false,
        }
    }
}

impl Notifier {
    /// The transport and the message of one email to every recipient (never the SMTP URL or its
    /// password in an error).
    fn email(
        &self,
        c: &Channel,
        note: &Note,
        message: &str,
        secrets: &[&str],
    ) -> Result<(lettre::AsyncSmtpTransport<lettre::Tokio1Executor>, lettre::Message), DeliveryError> {
        use lettre::{AsyncSmtpTransport, Message, Tokio1Executor};
        let unsendable = |why: String| DeliveryError::Unsendable { channel: c.name.clone(), why };
        let wanted = if note.to.is_empty() { &c.to } else { &note.to };
        let (mut to, unknown) = self.people.expand(wanted);
        if !unknown.is_empty() {
            tracing::warn!(channel = %c.name, unknown = %unknown.join(", "), "email recipients with no address");
        }
        let skipped: Vec<&str> = note.except.iter().filter_map(|l| self.people.address(l)).collect();
        to.retain(|a| !skipped.contains(&a.as_str()));
        if to.is_empty() {
            return Err(unsendable(format!("no address for {}", wanted.join(", "))));
        }
        let from = c.from.parse().map_err(|_| unsendable("`from` is not an email address".into()))?;
        let mut b = Message::builder().from(from).subject(redact(&note.title(), secrets));
        for a in &to {
            match a.parse() {
                Ok(m) => b = b.to(m),
                Err(_) => tracing::warn!(channel = %c.name, "an email recipient's address cannot be read"),
            }
        }
        let mail = b
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(redact(&note.text(message), secrets))
            .map_err(|e| unsendable(format!("the email cannot be built: {}", redact(&e.to_string(), secrets))))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&c.url)
            .map_err(|e| unsendable(format!("the SMTP URL cannot be used: {}", redact(&e.to_string(), secrets))))?
            .timeout(Some(c.timeout));
        if let Some(file) = &c.ca_file {
            builder = builder.tls(tls_with_ca(&c.url, file).map_err(unsendable)?);
        }
        Ok((builder.build(), mail))
    }
}

/// The TLS of the SMTP URL (`smtps://`: from the start; `tls=required`: STARTTLS or nothing;
/// else STARTTLS when offered), trusting the CAs of the PEM file `file` besides the system's.
fn tls_with_ca(url: &str, file: &str) -> Result<lettre::transport::smtp::client::Tls, String> {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let pem = crate::files::read_text(std::path::Path::new(file), crate::files::MAX_SMALL).map_err(|e| format!("cannot read `caFile` {file}: {e}"))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("`caFile` {file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    let ca = Certificate::from_pem(pem.as_bytes()).map_err(|e| format!("`caFile` {file}: its certificates cannot be read: {e}"))?;
    let u = url::Url::parse(url).map_err(|_| "the SMTP URL cannot be read".to_string())?;
    let host = u.host_str().unwrap_or_default().to_string();
    let params = TlsParameters::builder(host).add_root_certificate(ca).build_rustls().map_err(|e| format!("TLS with `caFile` {file}: {e}"))?;
    let tls = u.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
    Ok(match (u.scheme(), tls.as_deref()) {
        ("smtps", _) => Tls::Wrapper(params),
        (_, Some("required")) => Tls::Required(params),
        _ => Tls::Opportunistic(params),
    })
}

/// An SMTP error in words, saying what to do when the server's certificate is not trusted.
fn smtp_error(error: &str, ca_file: Option<&str>) -> String {
    let lower = error.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        let fix = match ca_file {
            Some(f) => format!("it is not signed by a CA of `caFile` {f} or of the system"),
            None => "give the CA that signs it with the email's `caFile` (or add it to the system's CAs)".to_string(),
        };
        return format!("the SMTP server's TLS certificate is not trusted ({fix}); nothing was sent: {error}");
    }
    error.to_string()
}

/// A Teams workflow webhook's message: one Adaptive Card 1.4 with the headline, what happened,
/// the facts, and a button to the page.
fn teams_card(note: &Note, title: &str, message: &str) -> serde_json::Value {
    let mut facts = vec![serde_json::json!({"title": "Pipeline", "value": note.pipeline})];
    if !note.version.is_empty() {
        facts.push(serde_json::json!({"title": "Version", "value": note.version}));
    }
    if let Some(s) = &note.stage {
        facts.push(serde_json::json!({"title": "Step", "value": s}));
    }
    let actions: Vec<serde_json::Value> = note
        .link
        .iter()
        .map(|l| serde_json::json!({"type": "Action.OpenUrl", "title": if about_a_decision(&note.event) { "Review and decide" } else { "Open" }, "url": l}))
        .collect();
    serde_json::json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true},
                    {"type": "TextBlock", "text": message, "wrap": true},
                    {"type": "FactSet", "facts": facts}
                ],
                "actions": actions
            }
        }]
    })
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
