//! What the user wrote: the pipeline file's types, read from YAML with positions kept (no I/O).

mod de;
mod duration;
mod interpolate;
pub(crate) mod kinds;
mod load;
pub mod path;
mod spanned;
pub mod tags;
pub mod triggers;
pub mod version;
pub mod yaml;

use serde::{Deserialize, Serialize};

pub use de::{from_node, list};
pub use duration::{Duration, DurationError};
pub use interpolate::interpolate;
pub use kinds::*;
pub use load::{KNOWN_VARIABLES, load};
pub use spanned::Spanned;

use crate::diag::Pos;

/// The stage kinds: the one list. Each entry is the kind's module in `src/stages/` (declared
/// from here), the `StageKind` variant, its settings' type and its doc. A kind lives in one place, `src/stages/<kind>.rs`: its settings (read from the file,
/// `impl Kind`), its checks (`impl plan::Checks`) and its runner (`impl stages::Run`). Every layer
/// that treats all kinds alike expands this list with a macro of its own
/// (`with_kinds!(its_macro)`): the model's enum, names and load dispatch (here), the plan's checks
/// (`plan::checks`), the runners (`stages`). A kind missing one of them is a compile error there.
macro_rules! with_kinds {
    ($m:ident) => {
        $m! {
            /// Promotion commit into an environment.
            deploy => Deploy(crate::stages::deploy::DeployStage),
            /// Metric analysis.
            metrics => Metrics(crate::stages::metrics::MetricsStage),
            /// Log analysis.
            logs => Logs(crate::stages::logs::LogsStage),
            /// Rego policy.
            policy => Policy(crate::stages::policy::PolicyStage),
            /// Sign-off by people.
            approval => Approval(crate::stages::approval::ApprovalStage),
            /// Soak time.
            wait => Wait(crate::stages::wait::WaitStage),
            /// HTTP call.
            webhook => Webhook(crate::stages::webhook::WebhookStage),
        }
    };
}
pub(crate) use with_kinds;

/// What a stage kind says of itself. Its settings are read by serde from the stage's body.
pub trait Kind: serde::de::DeserializeOwned {
    /// The kind's name as written in files (`deploy`).
    const NAME: &'static str;
    /// How graphs draw it: a Mermaid node's opening and closing brackets.
    const SHAPE: (&'static str, &'static str) = ("[\"", "\"]");
    /// A few words on what this stage does, for graphs (`deploy → qa`, `wait 10m`).
    fn summary(&self) -> String;
    /// A person's sign-off: the stages after it are gated by it, and the promotions it gates
    /// name who approved it (`Approved-By`).
    const SIGN_OFF: bool = false;
    /// Guards what comes after it against a bad release by a rule or a person (a sign-off, a
    /// policy): a production deploy with one upstream is gated.
    const GATES: bool = Self::SIGN_OFF;
    /// The promotion a stage of this kind writes into an environment (a deploy's settings).
    fn promotes(&self) -> Option<&DeployStage> {
        None
    }
    /// The policies a stage of this kind judges (a policy stage's settings): what compliance and
    /// drift judge an environment by.
    fn policies(&self) -> Option<&PolicyStage> {
        None
    }
    /// Who decides a stage of this kind by hand, and when (`None`: nobody, ever).
    fn decided_by(&self) -> Option<DecidedBy<'_>> {
        None
    }
}

/// Who decides a stage by hand ([`Kind::decided_by`]).
#[derive(Debug, Clone, Copy)]
pub enum DecidedBy<'a> {
    /// A sign-off, always: its approvers, quorum, deadline and words.
    SignOff(&'a ApprovalStage),
    /// A verdict, only while it waits because it was inconclusive: one of these people (anyone
    /// signed in when none is listed), never the run's own trigger.
    Inconclusive(&'a [Spanned<String>]),
}

impl DecidedBy<'_> {
    /// The rules a decision is held to, as an approval's.
    pub fn rules(&self) -> std::borrow::Cow<'_, ApprovalStage> {
        match *self {
            DecidedBy::SignOff(a) => std::borrow::Cow::Borrowed(a),
            DecidedBy::Inconclusive(people) => {
                let anyone = vec![Spanned::new(Default::default(), "group:*".to_string())];
                std::borrow::Cow::Owned(ApprovalStage::of(if people.is_empty() { anyone } else { people.to_vec() }))
            }
        }
    }
}

macro_rules! stage_kind_enum {
    ($($(#[$doc:meta])* $module:ident => $variant:ident($ty:ty),)*) => {
        /// A stage's kind and its settings.
        #[derive(Debug, Clone, Serialize)]
        #[serde(rename_all = "camelCase")]
        pub enum StageKind {
            $($(#[$doc])* $variant($ty),)*
        }

        /// The stage kinds, as written in files.
        pub const STAGE_KINDS: &[&str] = &[$(<$ty as Kind>::NAME),*];

        impl StageKind {
            /// The kind's name as written in files.
            pub fn name(&self) -> &'static str {
                match self { $(StageKind::$variant(_) => <$ty as Kind>::NAME,)* }
            }

            /// A few words on what this stage does, for graphs (`deploy → qa`, `wait 10m`).
            pub fn summary(&self) -> String {
                match self { $(StageKind::$variant(k) => k.summary(),)* }
            }

            /// How graphs draw it (Mermaid brackets).
            pub fn shape(&self) -> (&'static str, &'static str) {
                match self { $(StageKind::$variant(_) => <$ty as Kind>::SHAPE,)* }
            }

            /// Whether it is a person's sign-off ([`Kind::SIGN_OFF`]).
            pub fn is_sign_off(&self) -> bool {
                match self { $(StageKind::$variant(_) => <$ty as Kind>::SIGN_OFF,)* }
            }

            /// Whether it gates what comes after it ([`Kind::GATES`]).
            pub fn gates(&self) -> bool {
                match self { $(StageKind::$variant(_) => <$ty as Kind>::GATES,)* }
            }

            /// The promotion it writes ([`Kind::promotes`]).
            pub fn promotes(&self) -> Option<&DeployStage> {
                match self { $(StageKind::$variant(k) => k.promotes(),)* }
            }

            /// Who decides it by hand ([`Kind::decided_by`]).
            pub fn decided_by(&self) -> Option<DecidedBy<'_>> {
                match self { $(StageKind::$variant(k) => k.decided_by(),)* }
            }

            /// The policies it judges ([`Kind::policies`]).
            pub fn policies(&self) -> Option<&PolicyStage> {
                match self { $(StageKind::$variant(k) => k.policies(),)* }
            }

            /// Reads the body of a stage of kind `name` (one of [`STAGE_KINDS`]).
            pub(crate) fn load(name: &str, body: &yaml::Node, diags: &mut crate::diag::Diagnostics) -> Option<StageKind> {
                $(if name == <$ty as Kind>::NAME {
                    return from_node(body, diags).map(StageKind::$variant);
                })*
                None
            }
        }
    };
}
with_kinds!(stage_kind_enum);

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
    /// Which of two runs is newer (an environment never goes from a newer run's version to an
    /// older one's).
    pub order: Order,
    /// How the environments' current files are judged by the pipeline's policies between
    /// promotions (`compliance:`; an environment's own `compliance` replaces it there).
    pub compliance: Compliance,
    /// The users file (relative to this file): who approvers and groups are.
    pub users: Option<Spanned<String>>,
    /// Who may do what through the server (`access:`); `None`: every signed-in person views,
    /// nobody runs, rolls back or administers through the server.
    pub access: Option<Access>,
    /// Where notifications go.
    pub notifications: Vec<Notification>,
    /// What starts a run by itself (webhooks `promote serve` receives).
    pub triggers: Vec<Spanned<triggers::Trigger>>,
    /// Names of stages and environments that were written but could not be read (their errors
    /// are already reported); later checks treat them as known so as not to report them twice.
    #[serde(skip)]
    pub unreadable: Vec<String>,
}

/// `access:` who may do what with this pipeline through the server (people by login, `group:NAME`
/// of the directory or the identity provider, `group:everyone` for every signed-in person).
/// `admin` includes the others.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Access {
    /// See its runs, evidence, environments and trail (absent: every signed-in person).
    #[serde(default)]
    pub view: Option<Vec<Spanned<String>>>,
    /// Start and resume runs.
    #[serde(default)]
    pub run: Vec<Spanned<String>>,
    /// Roll back its environments (an environment's own `access.rollback` narrows it there).
    #[serde(default)]
    pub rollback: Vec<Spanned<String>>,
    /// All of the above, drift decisions, clearing held versions, "not a risk" marks.
    #[serde(default)]
    pub admin: Vec<Spanned<String>>,
}

/// An environment's `access:`: who may roll it back (instead of the pipeline's `access.rollback`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentAccess {
    /// Who may roll this environment back (admins always may).
    #[serde(default)]
    pub rollback: Vec<Spanned<String>>,
}

/// `artifact`: the thing being promoted; the version comes from the trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifact {
    /// Image repository without tag, e.g. `registry.example.com/acme/checkout`.
    pub image: Spanned<String>,
}

/// `order`: which of two runs of a pipeline is newer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Order {
    /// The order promote heard their triggers in (their run ids: ULIDs, to the millisecond).
    #[default]
    Trigger,
    /// Their versions' semver order (a leading `v` allowed); the trigger order between versions
    /// that are not semver, or equal.
    Semver,
}

impl Order {
    /// Whether run `a` (id, version) is newer than run `b`.
    pub fn newer(self, a: (&str, &str), b: (&str, &str)) -> bool {
        if self == Order::Semver
            && let (Some(x), Some(y)) = (tags::version_of(a.1), tags::version_of(b.1))
            && x != y
        {
            return x > y;
        }
        a.0 > b.0
    }
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
    /// What a change promote did not make does (default: an alert a person decides).
    #[serde(default)]
    pub drift: Drift,
    /// How a release promoted here keeps being judged after its run (a deploy's own `watch`
    /// replaces it).
    #[serde(default)]
    pub watch: Option<Box<Watch>>,
    /// Promotions go through a pull (merge) request on the repo's host instead of a push to
    /// `branch`: the branch is protected, and its merge is the promotion.
    #[serde(default)]
    pub pull_request: Option<PullRequest>,
    /// Who may roll this environment back, narrowing the pipeline's `access.rollback`.
    #[serde(default)]
    pub access: Option<EnvironmentAccess>,
    /// How this environment's current files are judged by the pipeline's policies (instead of
    /// the pipeline's `compliance`).
    #[serde(default)]
    pub compliance: Option<Compliance>,
}

/// `compliance: {every, action}`: the pipeline's policies judge each environment's current files
/// when the policies change, every `every`, and on every drift.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Compliance {
    /// How often the server judges the environments (default `1h`).
    #[serde(default = "hourly")]
    pub every: duration::Duration,
    /// `alert` (default): a violation is recorded, notified and decided by a person; `revert`:
    /// reverted at once to the newest commit the policies allowed; `ignore`: not judged.
    #[serde(default)]
    pub action: DriftAction,
}

fn hourly() -> duration::Duration {
    duration::Duration(std::time::Duration::from_secs(3600))
}

impl Default for Compliance {
    fn default() -> Self {
        Compliance { every: hourly(), action: DriftAction::default() }
    }
}

impl Pipeline {
    /// How `env`'s current files are judged: its own `compliance`, else the pipeline's.
    pub fn compliance_of<'a>(&'a self, env: &'a Environment) -> &'a Compliance {
        env.spec.compliance.as_ref().unwrap_or(&self.compliance)
    }
}

/// `pullRequest: {provider, repo, tokenEnv | tokenFile, merge, api}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PullRequest {
    /// `github`, `gitlab`, `gitea` (or `forgejo`).
    pub provider: Spanned<String>,
    /// The repo on that host: `OWNER/NAME` (GitLab: the project's full path).
    pub repo: Spanned<String>,
    /// The environment variable holding the API token (never the token itself) ...
    #[serde(default)]
    pub token_env: Option<Spanned<String>>,
    /// ... or the file holding it, relative to the pipeline file (a mounted Secret).
    #[serde(default)]
    pub token_file: Option<Spanned<String>>,
    /// `wait` (default): a person merges; `auto`: promote merges once the host lets it (its
    /// required checks and reviews passed).
    #[serde(default)]
    pub merge: PrMerge,
    /// The host's API base (default GitHub's and GitLab's public ones; required for Gitea).
    #[serde(default)]
    pub api: Option<Spanned<String>>,
}

/// Who merges a promotion's pull request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrMerge {
    /// A person, on the host.
    #[default]
    Wait,
    /// promote, when the host allows it.
    Auto,
}

/// `drift: {action, approvers, blockPromotions}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Drift {
    /// `alert` (default): recorded, notified, decided by a person; `revert`: reverted at once;
    /// `ignore`: not looked for.
    #[serde(default)]
    pub action: DriftAction,
    /// Who may accept or reject it (users, `group:NAME`); none: any user of the users file.
    #[serde(default)]
    pub approvers: Vec<Spanned<String>>,
    /// Whether a promotion into the environment waits while a drift of it is undecided
    /// (default true).
    #[serde(default = "yes")]
    pub block_promotions: bool,
}

fn yes() -> bool {
    true
}

impl Default for Drift {
    fn default() -> Self {
        Drift { action: DriftAction::default(), approvers: Vec::new(), block_promotions: true }
    }
}

/// What a drift does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftAction {
    /// A person decides.
    #[default]
    Alert,
    /// Reverted at once.
    Revert,
    /// Not looked for.
    Ignore,
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
