//! The settings types several stage kinds share (a metric check, a watch, a provider, a log
//! source) and the pipeline-level settings (freeze windows, notifications). Each kind's own
//! settings live with it, in `src/stages/<kind>.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::duration::Duration;
use super::spanned::Spanned;

pub use crate::stages::{ApprovalStage, DeployStage, LogsStage, MetricsStage, PolicyStage, WaitStage, WebhookStage};

pub(crate) fn default_true() -> bool {
    true
}

pub(crate) fn secs(n: u64) -> Duration {
    Duration(std::time::Duration::from_secs(n))
}

fn whole_answer() -> Spanned<String> {
    Spanned::new(Default::default(), "$".to_string())
}

/// `watch`: after the run has promoted, the release keeps being judged for `for`, one look every
/// `interval` (each metric check measured once, the logs since the promotion judged); a failed
/// look beyond `failureLimit` reverts the environment to its last compliant state and holds the
/// version until a person clears it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Watch {
    /// How long the release is watched after its run ended.
    #[serde(rename = "for")]
    pub duration: Duration,
    /// Time between looks (default 1m).
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Failed looks tolerated; the next one reverts (default 0: the first reverts).
    #[serde(default)]
    pub failure_limit: u32,
    /// Metric checks, as in a `metrics` stage (one measurement of each per look).
    #[serde(default)]
    pub metrics: Option<MetricsStage>,
    /// A log check, as in a `logs` stage (each look judges the lines since the promotion).
    #[serde(default)]
    pub logs: Option<LogsStage>,
    /// Who may clear a version the watch held (users, `group:NAME`); none: any user of the
    /// users file.
    #[serde(default)]
    pub approvers: Vec<Spanned<String>>,
}

/// Health checks after a deploy; every one given must pass before `timeout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Health {
    /// An HTTP endpoint that must answer with the expected status.
    #[serde(default)]
    pub http: Option<HttpHealth>,
    /// An Argo CD Application that must be Synced to the promotion commit and Healthy.
    #[serde(default)]
    pub argocd: Option<ArgoCdHealth>,
    /// A Deployment whose rollout must finish with the new image.
    #[serde(default)]
    pub kubernetes: Option<KubernetesHealth>,
    /// How long to wait for health before failing the stage (default 5m).
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
}

pub(crate) fn default_health_timeout() -> Duration {
    secs(300)
}

/// `health.http`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpHealth {
    /// The URL to GET (interpolated).
    pub url: Spanned<String>,
    /// The status code that means healthy (default 200).
    #[serde(default = "default_status")]
    pub expect: u16,
}

pub(crate) fn default_status() -> u16 {
    200
}

/// `health.argocd`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArgoCdHealth {
    /// The Application's name.
    pub application: String,
    /// The namespace Argo CD keeps Applications in (default `argocd`).
    #[serde(default = "default_argocd_ns")]
    pub namespace: String,
    /// The kubeconfig context of the cluster Argo CD runs in (default: the current context), so
    /// that environments can live in different clusters.
    #[serde(default)]
    pub context: Option<String>,
    /// Ask Argo CD to refresh the Application right after the promotion commit (the
    /// `argocd.argoproj.io/refresh` annotation), so that it is judged in seconds rather than at
    /// Argo CD's next poll (default true; needs `patch` on `applications`).
    #[serde(default = "default_true")]
    pub refresh: bool,
}

pub(crate) fn default_argocd_ns() -> String {
    "argocd".into()
}

/// `health.kubernetes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesHealth {
    /// The Deployment's namespace.
    pub namespace: String,
    /// The Deployment's name.
    pub deployment: String,
    /// The kubeconfig context of its cluster (default: the current context).
    #[serde(default)]
    pub context: Option<String>,
}

/// Where measurements come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Provider {
    /// Prometheus' HTTP API.
    Prometheus(PrometheusProvider),
    /// Any HTTP endpoint answering JSON.
    Web(WebProvider),
}

/// `provider.prometheus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusProvider {
    /// Base URL, e.g. `http://prometheus:9090`.
    pub address: Spanned<String>,
    /// Credentials, by reference (never inline).
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Per-query timeout (default 30s).
    #[serde(default = "default_query_timeout")]
    pub timeout: Duration,
}

pub(crate) fn default_query_timeout() -> Duration {
    secs(30)
}

/// `provider.web`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebProvider {
    /// The URL to GET (interpolated; `${query}` is the check's query).
    pub url: Spanned<String>,
    /// A JSON path (`$.data.value`) picking the value from the answer (default `$`: all of it,
    /// or the text of an answer that is not JSON).
    #[serde(default = "whole_answer")]
    pub json_path: Spanned<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Credentials, by reference.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Request timeout (default 30s).
    #[serde(default = "default_query_timeout")]
    pub timeout: Duration,
}

/// Credentials named by where they are kept; their values never appear in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth {
    /// Environment variable holding a bearer token.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// File holding a bearer token.
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    /// Basic-auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the basic-auth password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the basic-auth password.
    #[serde(default)]
    pub password_file: Option<String>,
}

pub(crate) fn default_interval() -> Duration {
    secs(60)
}

pub(crate) fn default_count() -> u32 {
    1
}

/// One metric of a `metrics` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricCheck {
    /// The metric's name in results.
    pub name: Spanned<String>,
    /// The query (PromQL for Prometheus), interpolated.
    pub query: Spanned<String>,
    /// A provider for this check only.
    #[serde(default)]
    pub provider: Option<Provider>,
    /// CEL over `result`: true means this measurement succeeded.
    #[serde(default)]
    pub success_condition: Option<Spanned<String>>,
    /// CEL over `result`: true means this measurement failed.
    #[serde(default)]
    pub failure_condition: Option<Spanned<String>>,
    /// Overrides the stage's interval.
    #[serde(default)]
    pub interval: Option<Duration>,
    /// Overrides the stage's count.
    #[serde(default)]
    pub count: Option<u32>,
    /// The check fails when failed measurements exceed this (default 0).
    #[serde(default)]
    pub failure_limit: u32,
    /// The check is inconclusive when inconclusive measurements exceed this (default 0).
    #[serde(default)]
    pub inconclusive_limit: u32,
    /// The check errors after this many errors in a row (default 4).
    #[serde(default = "default_consecutive_errors")]
    pub consecutive_error_limit: u32,
    /// Measured and reported, but does not decide.
    #[serde(default)]
    pub dry_run: bool,
    /// Compare the new version against a baseline (Kayenta).
    #[serde(default)]
    pub compare: Option<Compare>,
}

pub(crate) fn default_consecutive_errors() -> u32 {
    4
}

/// A Kayenta-style comparison against a baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Compare {
    /// A query for the baseline (the old version); or
    #[serde(default)]
    pub baseline_query: Option<Spanned<String>>,
    /// the same query over this window before the deploy.
    #[serde(default)]
    pub baseline_window: Option<Duration>,
    /// Which change is bad (default `increase`).
    #[serde(default)]
    pub direction: Direction,
    /// Confidence of the Mann-Whitney interval (default 0.98).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// How far the mean must move, in the baseline's standard deviations, to count (default 2.5).
    #[serde(default = "default_min_effect")]
    pub min_effect: f64,
    /// No longer decides (Kayenta's bound on the interval): accepted, with a warning.
    #[serde(default)]
    pub tolerance: Option<Spanned<f64>>,
    /// A failing critical metric fails the whole score.
    #[serde(default)]
    pub critical: bool,
    /// Weight in the score (default 1).
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Group for weighting (default: the check's name).
    #[serde(default)]
    pub group: Option<String>,
    /// The window judged, ending at each measurement (default: from the deploy to the measurement).
    #[serde(default)]
    pub window: Option<Duration>,
    /// Time between the samples compared (default 1m).
    #[serde(default = "default_step")]
    pub step: Duration,
    /// How big the change in means must be to count (Kayenta's effect size).
    #[serde(default)]
    pub effect_size: EffectSize,
    /// Missing data fails the metric (default: it is left out of the score).
    #[serde(default)]
    pub require_data: bool,
}

pub(crate) fn default_step() -> Duration {
    secs(60)
}

/// Kayenta's effect-size limits: ratios of the new version's mean to the baseline's.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EffectSize {
    /// A significant increase counts only at or above this ratio (default 1.0).
    #[serde(default = "default_ratio")]
    pub allowed_increase: f64,
    /// A significant decrease counts only at or below this ratio (default 1.0).
    #[serde(default = "default_ratio")]
    pub allowed_decrease: f64,
    /// A critical metric fails the score only at or above this ratio (default 1.0).
    #[serde(default = "default_ratio")]
    pub critical_increase: f64,
    /// ... or at or below this one (default 1.0).
    #[serde(default = "default_ratio")]
    pub critical_decrease: f64,
}

impl Default for EffectSize {
    fn default() -> Self {
        EffectSize { allowed_increase: 1.0, allowed_decrease: 1.0, critical_increase: 1.0, critical_decrease: 1.0 }
    }
}

pub(crate) fn default_ratio() -> f64 {
    1.0
}

pub(crate) fn default_confidence() -> f64 {
    0.98
}

pub(crate) fn default_min_effect() -> f64 {
    2.5
}

pub(crate) fn default_weight() -> f64 {
    1.0
}

/// Which way a metric may not move.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Higher is worse (latency, errors).
    #[default]
    Increase,
    /// Lower is worse (throughput, success rate).
    Decrease,
    /// Any change is bad.
    Either,
}

/// Score thresholds out of 100.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Score {
    /// At or above: pass (default 95).
    #[serde(default = "default_pass")]
    pub pass: f64,
    /// At or above (and below pass): marginal, a person decides (default 75).
    #[serde(default = "default_marginal")]
    pub marginal: f64,
}

pub(crate) fn default_pass() -> f64 {
    95.0
}

pub(crate) fn default_marginal() -> f64 {
    75.0
}

pub(crate) fn default_log_window() -> Duration {
    secs(600)
}

/// Where log lines are read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum LogSource {
    /// Files and globs, relative to the pipeline file.
    Files(Vec<Spanned<String>>),
    /// Loki's `query_range` API.
    Loki(LokiSource),
    /// Pod logs picked by a label selector.
    Kubernetes(KubernetesLogSource),
}

/// `source.loki`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LokiSource {
    /// Base URL of Loki.
    pub address: Spanned<String>,
    /// LogQL query, interpolated.
    pub query: Spanned<String>,
    /// Credentials, by reference.
    #[serde(default)]
    pub auth: Option<Auth>,
}

/// `source.kubernetes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesLogSource {
    /// The pods' namespace.
    pub namespace: String,
    /// Label selector, e.g. `app=checkout`.
    pub selector: String,
    /// The container (default: the pod's first).
    #[serde(default)]
    pub container: Option<String>,
}

/// What the log window is compared with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LogBaseline {
    /// The window of the same length before the deploy.
    #[default]
    Before,
    /// The previous version's logs.
    PreviousVersion,
}

/// Sensitivity presets of the log verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Sensitivity {
    /// Only new error templates fail.
    Low,
    /// New error templates, and error templates growing 5x.
    #[default]
    Medium,
    /// New error or warning templates, and error or warning templates growing 2x.
    High,
}

/// `freeze` of an environment: windows when nothing is promoted into it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Freeze {
    /// IANA time zone the windows are written in (default `UTC`).
    #[serde(default = "default_timezone")]
    pub timezone: Spanned<String>,
    /// The windows.
    pub windows: Vec<Spanned<FreezeWindow>>,
    /// What a deploy does in a window: `wait` until it ends (default) or `fail`.
    #[serde(default)]
    pub on_freeze: OnFreeze,
    /// Who may override a window for one run (`promote break-glass`): users and `group:` entries.
    #[serde(default)]
    pub break_glass: Vec<Spanned<String>>,
}

pub(crate) fn default_timezone() -> Spanned<String> {
    Spanned::new(Default::default(), "UTC".to_string())
}

/// One freeze window: a range of dates or date-times (`from`/`to`), or a weekly one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FreezeWindow {
    /// Shown when a deploy meets the window.
    #[serde(default)]
    pub name: Option<String>,
    /// Start: `2026-12-20` (midnight) or `2026-12-20 18:00`.
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    /// End (exclusive): `2027-01-04` (midnight) or `2027-01-04 08:00`.
    #[serde(default)]
    pub to: Option<Spanned<String>>,
    /// Every week: `{from: fri 18:00, to: mon 08:00}`.
    #[serde(default)]
    pub weekly: Option<Weekly>,
    /// Every day (or the listed days): `{from: "22:00", to: "06:00", days: [mon, tue]}`; an end
    /// before the start is on the next day.
    #[serde(default)]
    pub daily: Option<Daily>,
}

/// A daily window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Daily {
    /// `22:00`.
    pub from: Spanned<String>,
    /// `06:00` (the next day when before `from`).
    pub to: Spanned<String>,
    /// The days the window starts on (default: every day).
    #[serde(default)]
    pub days: Vec<Spanned<String>>,
}

/// A weekly window: day and time of its start and end.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Weekly {
    /// `fri 18:00`.
    pub from: Spanned<String>,
    /// `mon 08:00`.
    pub to: Spanned<String>,
}

/// What a deploy does in a freeze window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnFreeze {
    /// Wait until the window ends (or a break-glass).
    #[default]
    Wait,
    /// Fail the deploy at once, committing nothing.
    Fail,
}

/// One notification channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Notification {
    /// A name for messages about the channel (default: its kind).
    #[serde(default)]
    pub name: Option<String>,
    /// A generic JSON webhook.
    #[serde(default)]
    pub webhook: Option<NotifyTarget>,
    /// A Slack-compatible incoming webhook.
    #[serde(default)]
    pub slack: Option<NotifyTarget>,
    /// A Microsoft Teams workflow webhook (an Adaptive Card).
    #[serde(default)]
    pub teams: Option<Spanned<NotifyTarget>>,
    /// Email through an SMTP server.
    #[serde(default)]
    pub email: Option<Spanned<EmailTarget>>,
    /// Which events (default: all): approval-pending, stage-failed, rollback, policy-warning,
    /// freeze, break-glass, run-finished, drift, watch-failed.
    #[serde(default)]
    pub events: Vec<Spanned<String>>,
    /// Attempts in all (default 4), with doubling waits from 200ms.
    #[serde(default = "default_notify_attempts")]
    pub attempts: u32,
    /// Per-attempt timeout (default 10s).
    #[serde(default = "default_notify_timeout")]
    pub timeout: Duration,
}

pub(crate) fn default_notify_attempts() -> u32 {
    4
}

pub(crate) fn default_notify_timeout() -> Duration {
    secs(10)
}

/// Where a notification goes: the URL inline, or (since webhook URLs are secrets) from an
/// environment variable or a file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotifyTarget {
    /// The URL.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// An environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// A file holding the URL.
    #[serde(default)]
    pub url_file: Option<String>,
}

/// Email: to people (logins), groups (`group:NAME`, each member's address) and addresses, through
/// the SMTP server of `smtp` (a URL: `smtp://` with STARTTLS when offered, `?tls=required` to
/// insist, or `smtps://`; a password in it is a secret, so usually from `urlEnv` or `urlFile`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmailTarget {
    /// Logins, `group:NAME` and email addresses.
    pub to: Vec<Spanned<String>>,
    /// The SMTP server's URL.
    pub smtp: NotifyTarget,
    /// The sender (default `promote <promote@localhost>`).
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    /// A PEM file of the certificate authorities that sign the SMTP server's certificate (a
    /// private CA), trusted besides the system's for this server (STARTTLS and `smtps://`).
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
}

pub(crate) fn default_min_approvals() -> Spanned<u32> {
    Spanned::new(Default::default(), 1)
}

pub(crate) fn default_callback_timeout() -> Duration {
    secs(3600)
}

/// HTTP methods a webhook may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    #[default]
    Post,
    /// PUT.
    Put,
}
