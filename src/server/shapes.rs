//! What the API takes and answers, as types: each handler of [`super::api`] reads one of the
//! bodies here and answers one of the answers, and the OpenAPI document
//! (`GET /api/v1/openapi.json`, [`super::openapi`]) is generated from the same types, so the two
//! cannot differ.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::{DriftRecord, Event, RunRecord, StageRecord, ViolationRecord, WatchRecord};

/// Every error: what went wrong, in the API's words (redacted).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and, where it can, what to do.
    pub error: String,
}

/// `POST /api/v1/runs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// A loaded pipeline's name.
    pub pipeline: String,
    /// The version to promote (as its triggers would give it: a tag, an image tag, a commit).
    pub version: String,
}

/// `POST /api/v1/runs/{id}/stages/{stage}/{decision}`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    /// A comment (an approval), or the reason (a reject or a break-glass: required there).
    #[serde(default)]
    pub comment: Option<String>,
    /// Who the caller means to decide as: refused (403) unless it is the token's person.
    #[serde(default, rename = "as")]
    pub as_user: Option<String>,
}

/// `POST /api/v1/runs/{id}/stages/{stage}/templates/{number}/not-a-risk`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotARiskBody {
    /// Why the template is not a risk (at most 4 KiB).
    pub reason: String,
    /// Who the caller means to act as: refused (403) unless it is the token's person.
    #[serde(default, rename = "as")]
    pub as_user: Option<String>,
}

/// `POST /api/v1/drifts/{id}/{verdict}` and `POST /api/v1/watches/{id}/clear`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why (required to reject a drift and to clear a hold).
    #[serde(default)]
    pub reason: Option<String>,
    /// Who the caller means to act as: refused (403) unless it is the token's person.
    #[serde(default, rename = "as")]
    pub as_user: Option<String>,
}

/// `POST /api/v1/pipelines/{name}/environments/{env}/rollback`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// Restore the environment as it was at this commit (default: before the newest promotion).
    #[serde(default)]
    pub to: Option<String>,
}

/// `POST /api/v1/sessions/revoke`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Whose sessions end.
    pub user: String,
}

/// `POST /callbacks/{run}/{stage}/{token}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackBody {
    /// The verdict.
    pub passed: bool,
    /// Why, shown with the stage.
    #[serde(default)]
    pub message: Option<String>,
}

/// A loaded pipeline, as a person may see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineView {
    /// Its name.
    pub name: String,
    /// The file it was loaded from.
    pub file: String,
    /// How many stages it has.
    pub stages: usize,
    /// What the person may do beyond viewing: `run`, `rollback`, `admin`.
    pub you_may: Vec<String>,
    /// Each polled registry repository (image triggers with `poll`) as this server saw it.
    pub polling: Vec<crate::server::imagepoll::PollStatus>,
}

/// `GET /api/v1/pipelines`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pipelines {
    /// The pipelines the person may view.
    pub pipelines: Vec<PipelineView>,
    /// The files that do not load, with their `FILE:LINE:COL` errors (their last good version serves).
    pub errors: BTreeMap<String, Vec<String>>,
}

/// `GET /api/v1/runs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Runs {
    /// Newest first (100), of the pipelines the person may view.
    pub runs: Vec<RunRecord>,
}

/// `POST /api/v1/runs`: the run started.
#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    /// The run, as `GET /api/v1/runs/{id}` gives it.
    pub run: RunRecord,
}

/// `GET /api/v1/runs/{id}`: as `promote status RUN --json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The run.
    pub run: RunRecord,
    /// Its stages, in the file's order.
    pub stages: Vec<StageRecord>,
    /// Its entries of the trail, oldest first.
    pub events: Vec<Event>,
}

/// What an action did, and as whom.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    /// What was done, in a line.
    pub done: String,
    /// The person who did it (the token's).
    pub by: String,
}

/// `POST /api/v1/pipelines/{name}/environments/{env}/rollback`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    /// What was done, in a line.
    pub done: String,
    /// The person who did it.
    pub by: String,
    /// Always true in a 200 answer.
    pub rolled_back: bool,
}

/// A rollback that could not be committed (409).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotRolledBack {
    /// Why nothing was committed.
    pub error: String,
    /// The person who asked.
    pub by: String,
    /// Always false.
    pub rolled_back: bool,
}

/// `POST /callbacks/{run}/{stage}/{token}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackDone {
    /// What the verdict did.
    pub done: String,
}

/// `GET /api/v1/drifts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drifts {
    /// Newest first, of the pipelines the person may view.
    pub drifts: Vec<DriftRecord>,
}

/// `GET /api/v1/runs/{id}/report`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportAnswer {
    /// The report.
    pub report: crate::ops::report::Report,
    /// The same, in Markdown (for a ticket).
    pub markdown: String,
}

/// `GET /api/v1/compliance`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Violations {
    /// Newest first, of the pipelines the person may view.
    pub violations: Vec<ViolationRecord>,
}

/// `POST /api/v1/compliance/{id}/{verdict}`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplianceBody {
    /// Why (required to accept).
    #[serde(default)]
    pub reason: Option<String>,
    /// When an exception ends (RFC 3339); default 30 days from now, at most 366.
    #[serde(default)]
    pub until: Option<String>,
    /// Who the caller means to act as: refused (403) unless it is the token's person.
    #[serde(default, rename = "as")]
    pub as_user: Option<String>,
}

/// `GET /api/v1/watches`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Watches {
    /// Newest first (at most 1,000), of viewable pipelines, without each last look's evidence.
    pub watches: Vec<WatchRecord>,
}

/// `GET /api/v1/audit`: a page of the trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub items: Vec<crate::store::chain::Entry>,
    /// The last entry's number: ask again with `after=` it for the next page (null: none here).
    pub next: Option<i64>,
}

/// `GET /api/v1/audit/verify`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    /// Whether every entry verifies.
    pub intact: bool,
    /// Entries in the trail.
    pub entries: i64,
    /// The last entry's hash.
    pub head: Option<String>,
    /// The first problem found, if any.
    pub problem: Option<String>,
    /// What the heads kept in Git said, a line per repository.
    pub kept_in_git: Vec<String>,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Always true in a 200 answer.
    pub ready: bool,
    /// Pipelines loaded.
    pub pipelines: usize,
    /// Files that do not load.
    pub invalid: usize,
}

/// A run a webhook delivery concerned.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HookRun {
    /// The pipeline.
    pub pipeline: String,
    /// The version the event gave.
    pub version: String,
    /// The run started (or the one that had been started for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Whether a run was started by this delivery.
    pub started: bool,
    /// The delivery, or a run of this version, was seen before: nothing started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    /// The version is held by a failed watch: which, and what clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// What became of a webhook delivery (an error is [`ErrorBody`]).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookAnswer {
    /// The runs it concerned (201, 200 duplicates, 409 held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<HookRun>>,
    /// A ping was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pong: Option<bool>,
    /// Verified, but no trigger wants it: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
    /// A pull-request event: the request's number (GitLab: `iid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    /// The deploys waiting on pull requests look at theirs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub woke: Option<bool>,
}

/// One server-sent event of `GET /api/v1/runs/{id}/events`: an entry of the run's trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamEvent {
    /// The entry's number (what `Last-Event-ID` and `?after=` take).
    pub id: String,
    /// The entry's kind (`trigger`, `stage`, `decision`, `run`, ...).
    pub event: String,
    /// The entry as JSON (an [`Event`]).
    #[schema(content_media_type = "application/json")]
    pub data: String,
}
