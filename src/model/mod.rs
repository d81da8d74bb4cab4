//! What the user wrote: the pipeline file's types, read from YAML with positions kept (no I/O).

mod de;
mod duration;
mod interpolate;
mod kinds;
mod load;
pub mod path;
mod spanned;
pub mod yaml;

use serde::{Deserialize, Serialize};

pub use de::{from_node, list};
pub use duration::{Duration, DurationError};
pub use interpolate::interpolate;
pub use kinds::*;
pub use load::{KNOWN_VARIABLES, load};
pub use spanned::Spanned;

use crate::diag::{Pos, plural};

/// The stage kinds, as written in files.
pub const STAGE_KINDS: &[&str] = &["deploy", "metrics", "logs", "policy", "approval", "wait", "webhook"];

/// A pipeline file as written: names resolved to nothing yet; `plan` checks how the parts fit.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    /// Always `promote/v1`.
    pub api_version: Spanned<String>,
    /// The pipeline's name (commit messages, trailers, the UI).
    pub name: Spanned<String>,
    /// Free text.
    pub description: Option<String>,
    /// What moves between environments.
    pub artifact: Artifact,
    /// The environments, in file order.
    pub environments: Vec<Environment>,
    /// The stages, in file order.
    pub stages: Vec<Stage>,
    /// What to do when a stage fails.
    pub on_failure: OnFailure,
    /// The users file (relative to this file): who approvers and groups are.
    pub users: Option<Spanned<String>>,
    /// Where notifications go.
    pub notifications: Vec<Notification>,
    /// Names of stages and environments that were written but could not be read (their errors
    /// are already reported); later checks treat them as known so as not to report them twice.
    #[serde(skip)]
    pub unreadable: Vec<String>,
}

/// `artifact`: the thing being promoted; the version comes from the trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifact {
    /// Image repository without tag, e.g. `registry.example.com/acme/checkout`.
    pub image: Spanned<String>,
}

/// `onFailure`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OnFailure {
    /// Revert every deploy this run made, newest first (default false).
    #[serde(default)]
    pub rollback: bool,
}

/// An environment: one file in one branch of one repo, and how to write the version into it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// The key under `environments`.
    pub name: Spanned<String>,
    /// The environment's body.
    #[serde(flatten)]
    pub spec: EnvironmentSpec,
}

/// The fields of an environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// Path (relative to the pipeline file), `file://`, `git://`, `ssh://` or `https://` URL.
    pub repo: Spanned<String>,
    /// Branch to commit to (default `main`).
    #[serde(default = "default_branch")]
    pub branch: Spanned<String>,
    /// The file to edit, relative to the repo's root.
    pub file: Spanned<String>,
    /// How to write the new version into the file.
    pub update: Spanned<Update>,
    /// Windows when nothing is promoted into this environment.
    #[serde(default)]
    pub freeze: Option<Freeze>,
}

fn default_branch() -> Spanned<String> {
    Spanned::new(Pos::default(), "main".to_string())
}

/// One of: `kustomizeImage`, `yamlPath` (+`value`), `helmValues` (+`value`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Update {
    /// The `name` of a kustomization `images:` entry; its `newTag` (or `digest`) gets the version.
    #[serde(default)]
    pub kustomize_image: Option<String>,
    /// With `kustomizeImage`: write `digest` instead of `newTag`.
    #[serde(default)]
    pub digest: bool,
    /// A path into a YAML document: `spec.template.spec.containers[0].image`.
    #[serde(default)]
    pub yaml_path: Option<Spanned<String>>,
    /// A dotted path into Helm values: `image.tag`.
    #[serde(default)]
    pub helm_values: Option<Spanned<String>>,
    /// The value written at `yamlPath`/`helmValues` (interpolated; default `${version}`).
    #[serde(default)]
    pub value: Option<Spanned<String>>,
}

/// `retry`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retry {
    /// Attempts in all, the first included (at least 1).
    pub attempts: Spanned<u32>,
    /// Wait between attempts, doubled each time (default 10s).
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
}

fn default_backoff() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}

/// A stage: its name, the fields every kind shares, and its kind's settings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// The key under `stages`.
    pub name: Spanned<String>,
    /// Stages that must succeed before this one starts.
    pub needs: Vec<Spanned<String>>,
    /// CEL over the run's context: false skips the stage.
    #[serde(rename = "if")]
    pub condition: Option<Spanned<String>>,
    /// The stage fails when it runs longer than this.
    pub timeout: Option<Duration>,
    /// Retries on failure.
    pub retry: Option<Retry>,
    /// Free text.
    pub description: Option<String>,
    /// Where the kind's key stands.
    #[serde(skip)]
    pub kind_pos: Pos,
    /// What the stage does.
    pub kind: StageKind,
}

/// The fields a stage has besides its kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct StageCommon {
    #[serde(default)]
    pub needs: Vec<Spanned<String>>,
    #[serde(default, rename = "if")]
    pub condition: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retry: Option<Retry>,
    #[serde(default)]
    pub description: Option<String>,
}

/// The names of [`StageCommon`]'s fields, as written.
pub const STAGE_FIELDS: &[&str] = &["needs", "if", "timeout", "retry", "description"];

/// A stage's kind and its settings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StageKind {
    /// Promotion commit into an environment.
    Deploy(DeployStage),
    /// Metric analysis.
    Metrics(MetricsStage),
    /// Log analysis.
    Logs(LogsStage),
    /// Rego policy.
    Policy(PolicyStage),
    /// Sign-off by people.
    Approval(ApprovalStage),
    /// Soak time.
    Wait(WaitStage),
    /// HTTP call.
    Webhook(WebhookStage),
}

impl StageKind {
    /// The kind's name as written in files.
    pub fn name(&self) -> &'static str {
        match self {
            StageKind::Deploy(_) => "deploy",
            StageKind::Metrics(_) => "metrics",
            StageKind::Logs(_) => "logs",
            StageKind::Policy(_) => "policy",
            StageKind::Approval(_) => "approval",
            StageKind::Wait(_) => "wait",
            StageKind::Webhook(_) => "webhook",
        }
    }

    /// A few words on what this stage does, for graphs (`deploy → qa`, `wait 10m`).
    pub fn summary(&self) -> String {
        match self {
            StageKind::Deploy(d) => format!("deploy → {}", d.environment.value),
            StageKind::Metrics(m) => format!("metrics ({})", plural(m.checks.len(), "check")),
            StageKind::Logs(l) => format!("logs ({})", l.sensitivity_name()),
            StageKind::Policy(p) => format!("policy ({})", plural(p.policies.len(), "source")),
            StageKind::Approval(a) => format!("approval ({} needed)", a.min_approvals.value),
            StageKind::Wait(w) => format!("wait {}", w.duration),
            StageKind::Webhook(w) => format!("webhook {}", w.method_name()),
        }
    }
}

impl LogsStage {
    /// The sensitivity as written.
    pub fn sensitivity_name(&self) -> &'static str {
        match self.sensitivity {
            Sensitivity::Low => "low",
            Sensitivity::Medium => "medium",
            Sensitivity::High => "high",
        }
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
