//! `/api/v1`: JSON over the same `ops` the CLI calls, authenticated by a token of the server's
//! directory of people (`Authorization: Bearer TOKEN`); the identity of every action is the
//! token's person, and every action is allowed or refused by `ops` (the pipeline's `access:`):
//! a refusal is 403 naming the rule, recorded in the trail; a decision made already is 409.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Server;
use super::shapes::{
    AuditPage, CallbackBody, CallbackDone, ComplianceBody, DecideBody, Done, Drifts, ErrorBody, NotARiskBody, NotRolledBack, PipelineView, Pipelines, Ready,
    ReasonBody, ReportAnswer, RevokeBody, RollbackBody, RolledBack, RunView, Runs, StartBody, Started, Verified, Violations, Watches,
};
use crate::ops::OpsError;
use crate::ops::access::{Caller, Permission, Person};

type Answer = Result<Response, ApiError>;

/// A refusal: its status and why, as `{"error": ...}` (redacted).
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: crate::redact::text(&self.1).into_owned() })).into_response()
    }
}

/// A state error: an unknown run is 404, anything else 500.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        let status = if matches!(e, crate::store::StoreError::UnknownRun { .. }) { StatusCode::NOT_FOUND } else { StatusCode::INTERNAL_SERVER_ERROR };
        ApiError(status, e.to_string())
    }
}

/// A body that is not of its shape, said in the API's words (no internal type names).
fn body_error(shape: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let why = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!("it is not JSON (line {}, column {})", e.line(), e.column()),
        Category::Data => {
            let text = e.to_string();
            let text = text.split(" at line ").next().unwrap_or(&text);
            static TYPE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| regex::Regex::new(r"struct \w+|a map").expect("valid"));
            TYPE.replace_all(text, "an object").into_owned()
        }
    };
    error(StatusCode::BAD_REQUEST, format!("the body is {shape}: {why}"))
}

/// The API's answer to what no handler answered (an unknown route, a method a route does not
/// take, a body too large): `{"error": ...}` like every other error.
pub(super) async fn as_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let json =
        response.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/event-stream"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let why = match status {
        StatusCode::NOT_FOUND => "no such route: docs/api.md lists them".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => format!("this route does not take {method}: docs/api.md says what each route takes"),
        StatusCode::PAYLOAD_TOO_LARGE => format!("the body is larger than {} bytes", super::MAX_BODY),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "the body is JSON (Content-Type: application/json)".to_string(),
        other => other.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove("content-length");
    parts.headers.insert("content-type", axum::http::HeaderValue::from_static("application/json"));
    Response::from_parts(parts, axum::body::Body::from(serde_json::to_string(&ErrorBody { error: why }).unwrap_or_default()))
}

fn error(status: StatusCode, why: impl Into<String>) -> ApiError {
    ApiError(status, why.into())
}

/// A JSON body of shape `shape` (an empty one is the default), refused unless its `as` is the
/// token's user `who` (an action is taken as the token's user, never as another).
fn acting<T: serde::de::DeserializeOwned + Default>(body: &[u8], shape: &str, claimed: impl Fn(&T) -> Option<&str>, who: &str) -> Result<T, ApiError> {
    let b: T = if body.is_empty() { T::default() } else { serde_json::from_slice(body).map_err(|e| body_error(shape, &e))? };
    if let Some(claimed) = claimed(&b)
        && claimed != who
    {
        return Err(error(StatusCode::FORBIDDEN, format!("the token is {who}'s, not {claimed}'s: an action is taken as the token's user")));
    }
    Ok(b)
}

fn ops_error(e: OpsError) -> ApiError {
    match e {
        OpsError::Refused(why) => error(StatusCode::BAD_REQUEST, why),
        OpsError::Forbidden(why) => error(StatusCode::FORBIDDEN, why),
        OpsError::Conflict(why) => error(StatusCode::CONFLICT, why),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// An operation's outcome as an answer; a refusal by the rules of `access:` is recorded in the
/// trail first (who, what, which rule).
async fn answer<T>(server: &Server, person: &Person, action: &str, done: Result<T, OpsError>) -> Result<T, ApiError> {
    match done {
        Ok(x) => Ok(x),
        Err(OpsError::Forbidden(why)) => {
            crate::ops::access::refused(&server.exec.store, person, action, &why).await;
            Err(error(StatusCode::FORBIDDEN, why))
        }
        Err(e) => Err(ops_error(e)),
    }
}

/// Refuses a read of `pipeline` (loaded, or as stored with a run) unless `person` may view it.
async fn viewable(server: &Server, person: &Person, pipeline: &crate::model::Pipeline, action: &str) -> Result<(), ApiError> {
    let caller = Caller::Person(person);
    answer(server, person, action, crate::ops::access::allow(pipeline, Permission::View, None, &caller)).await
}

/// Whether `person` may see what belongs to pipeline `name`: by the loaded pipeline's rules, or,
/// for a pipeline no longer loaded, by those stored with `run` (if given).
pub(super) fn may_view(server: &Server, person: &Person, name: &str, run: Option<&crate::store::RunRecord>) -> bool {
    if let Some(l) = server.pipelines().get(name) {
        return crate::ops::access::holds(&l.plan.pipeline, Permission::View, None, person);
    }
    match run.and_then(|r| server.plan_of(r)) {
        Some(plan) => crate::ops::access::holds(&plan.pipeline, Permission::View, None, person),
        // Nothing says who may: only those who administer every loaded pipeline.
        None => false,
    }
}

/// Which entries of the trail a person sees: those of runs whose pipeline they may view, and
/// those of no run (sign-ins, drifts, rollbacks, which may be of any pipeline) only when they may
/// view every loaded pipeline.
pub(super) struct Visible {
    all: bool,
    runs: std::collections::HashSet<String>,
}

impl Visible {
    pub(super) async fn of(server: &Server, person: &Person) -> Result<Visible, crate::store::StoreError> {
        let pipelines = server.pipelines();
        let all = pipelines.by_name.values().all(|l| crate::ops::access::holds(&l.plan.pipeline, Permission::View, None, person));
        let runs = if all {
            Default::default()
        } else {
            server.exec.store.runs(10_000).await?.into_iter().filter(|r| may_view(server, person, &r.pipeline, Some(r))).map(|r| r.id).collect()
        };
        Ok(Visible { all, runs })
    }

    pub(super) fn sees(&self, run: &str) -> bool {
        self.all || self.runs.contains(run)
    }
}

/// The pipeline whose rules govern `run`: the loaded one of its name, else the one stored with it.
pub(super) fn rules_of(server: &Server, run: &crate::store::RunRecord) -> Option<std::sync::Arc<crate::plan::Plan>> {
    match server.pipelines().get(&run.pipeline) {
        Some(l) => Some(l.plan.clone()),
        None => server.plan_of(run),
    }
}

/// The API's routes, each with its part of the OpenAPI document (generated from the handlers'
/// `#[utoipa::path]` and the types of [`super::shapes`]: a route cannot be served undescribed).
pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<Server> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(pipelines))
        .routes(routes!(runs, start))
        .routes(routes!(run))
        .routes(routes!(run_report))
        .routes(routes!(events))
        .routes(routes!(decide))
        .routes(routes!(not_a_risk))
        .routes(routes!(audit))
        .routes(routes!(verify))
        .routes(routes!(drifts))
        .routes(routes!(decide_drift))
        .routes(routes!(violations))
        .routes(routes!(decide_violation))
        .routes(routes!(watches))
        .routes(routes!(watch))
        .routes(routes!(clear_watch))
        .routes(routes!(rollback))
        .routes(routes!(revoke))
}

/// The bearer token of a request (the scheme's name in any case, RFC 7235).
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The person whose token the request carries: a token of the server's directory, or a JWT
/// of the OIDC issuer for this server's client. Refused before anything else is read.
async fn authenticate(server: &Server, headers: &HeaderMap) -> Result<Person, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "sign the request with the Authorization header, scheme Bearer, and a token of the server's directory of people (`promote token --for USER` makes one) or a JWT of the server's OIDC issuer",
        ));
    };
    if let Some(oidc) = &server.config.oidc
        && super::oidc::looks_like_jwt(token)
    {
        return oidc.bearer(|| server.directory(), token).await.map_err(|e| {
            tracing::info!(issuer = %oidc.issuer(), "a bearer JWT was refused: {e}");
            error(StatusCode::UNAUTHORIZED, e.to_string())
        });
    }
    super::auth::person_by_token(server, token)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "that token is no one's in the server's directory of people (or they are disabled)"))
}

/// `GET /readyz`: whether this replica's state answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "the state answers", body = Ready),
    (status = 503, description = "the state does not answer", body = ErrorBody),
))]
pub(super) async fn ready(State(server): State<Server>) -> Response {
    match server.exec.store.last_entry().await {
        Ok(_) => {
            let p = server.pipelines();
            (StatusCode::OK, Json(Ready { ready: true, pipelines: p.by_name.len(), invalid: p.errors.len() })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("the state does not answer: {e}")).into_response(),
    }
}

/// The executor's metrics, then the figures read from the state (DORA, waiting decisions).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "the Prometheus text format 0.0.4, or OpenMetrics 1.0 when `Accept` asks for `application/openmetrics-text`",
     content((String = "text/plain"), (String = "application/openmetrics-text"))),
))]
pub(super) async fn metrics(State(server): State<Server>, headers: HeaderMap) -> Response {
    let own = server.exec.metrics.encode();
    let figures = match crate::ops::figures::figures(&server.exec.store, crate::clock::now_ms()).await {
        Ok(f) => crate::ops::figures::encode(&f),
        Err(e) => {
            tracing::warn!(error = %e, "the state's figures could not be read for /metrics");
            String::new()
        }
    };
    let text = format!("{}{figures}# EOF\n", own.strip_suffix("# EOF\n").unwrap_or(&own));
    // OpenMetrics to whoever asks for it (Prometheus does); the text format 0.0.4 otherwise.
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        return ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response();
    }
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], text_format(&text)).into_response()
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter's family is named by its
/// `_total` sample (so that its HELP and TYPE name what is exposed), no `_created` samples, no
/// `# UNIT` or `# EOF`.
fn text_format(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{}{name}_total {tail}\n", &line[..7]));
                continue;
            }
        }
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if name.strip_suffix("_created").is_some_and(|f| counters.contains(f)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[utoipa::path(
    get,
    path = "/pipelines",
    tag = "pipelines",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the pipelines the person may view", body = Pipelines),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn pipelines(State(server): State<Server>, headers: HeaderMap) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let p = server.pipelines();
    let loaded: Vec<_> = p
        .by_name
        .values()
        .filter(|l| crate::ops::access::holds(&l.plan.pipeline, Permission::View, None, &person))
        .map(|l| {
            let may: Vec<&str> = [Permission::Run, Permission::Rollback, Permission::Admin]
                .into_iter()
                .filter(|perm| crate::ops::access::holds(&l.plan.pipeline, *perm, None, &person))
                .map(Permission::rule)
                .collect();
            PipelineView {
                name: l.plan.pipeline.name.value.clone(),
                file: l.file.display().to_string(),
                stages: l.plan.pipeline.stages.len(),
                you_may: may.into_iter().map(str::to_string).collect(),
                polling: server.polls.of(&l.plan.pipeline.name.value),
            }
        })
        .collect();
    Ok(Json(Pipelines { pipelines: loaded, errors: p.errors.clone() }).into_response())
}

#[utoipa::path(
    get,
    path = "/runs",
    tag = "runs",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "newest first (100), of the pipelines the person may view", body = Runs),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn runs(State(server): State<Server>, headers: HeaderMap) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let runs: Vec<_> = server.exec.store.runs(100).await?.into_iter().filter(|r| may_view(&server, &person, &r.pipeline, Some(r))).collect();
    Ok(Json(Runs { runs }).into_response())
}

/// A run the person may see (403 naming the rule otherwise; 404 for an unknown run).
async fn visible_run(server: &Server, person: &Person, id: &str) -> Result<crate::store::RunRecord, ApiError> {
    // An unknown run is said without the state's path or its recent runs (which may be of
    // pipelines the person may not see).
    let run = match server.exec.store.run(id).await {
        Err(crate::store::StoreError::UnknownRun { .. }) => return Err(error(StatusCode::NOT_FOUND, format!("no run `{}`", crate::diag::printable(id)))),
        found => found?,
    };
    match rules_of(server, &run) {
        Some(plan) => viewable(server, person, &plan.pipeline, &format!("to see run {id}")).await?,
        None => {
            return Err(error(StatusCode::FORBIDDEN, format!("the pipeline of run {id} is not loaded and its stored file does not load: nobody may see it")));
        }
    }
    Ok(run)
}

#[utoipa::path(
    get,
    path = "/runs/{id}",
    tag = "runs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the run")),
    responses(
        (status = 200, description = "the run, its stages and its entries, as `promote status RUN --json`", body = RunView),
        (status = 403, description = "the pipeline's `access:` does not allow it (the answer names the rule)", body = ErrorBody),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn run(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let run = visible_run(&server, &person, &id).await?;
    let store = &server.exec.store;
    let stages = store.stages(&id).await?;
    let events = store.events(&id).await?;
    Ok(Json(RunView { run, stages, events }).into_response())
}

/// `?window=1h`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// How far before the failure the timeline looks (`30m`, `1h`, `2d`; default 1h, at most 7d).
    window: Option<String>,
}

#[utoipa::path(
    get,
    path = "/runs/{id}/report",
    tag = "runs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the run"), ReportQuery),
    responses(
        (status = 200, description = "what the run changed, what its evidence saw, what else changed in the window (of the pipelines the person may view) and what was decided; with the same in Markdown", body = ReportAnswer),
        (status = 400, description = "a window that is not a duration, or longer than 7 days", body = ErrorBody),
        (status = 403, description = "the pipeline's `access:` does not allow it (the answer names the rule)", body = ErrorBody),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn run_report(
    State(server): State<Server>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ReportQuery>,
) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let window = match q.window.as_deref() {
        Some(w) => w.parse::<crate::model::Duration>().map_err(|e| error(StatusCode::BAD_REQUEST, format!("`window`: {e}")))?.0,
        None => crate::ops::report::DEFAULT_WINDOW,
    };
    let run = visible_run(&server, &person, &id).await?;
    let mut report = crate::ops::report::report(&server.exec.store, &server.exec.writer, &run.id, window).await.map_err(ops_error)?;
    report.only_visible(|p| may_view(&server, &person, p, None) || p == run.pipeline);
    let markdown = report.markdown();
    Ok(Json(ReportAnswer { report, markdown }).into_response())
}

#[utoipa::path(
    post,
    path = "/runs",
    tag = "runs",
    security(("bearer" = [])),
    request_body(content = StartBody, content_type = "application/json"),
    responses(
        (status = 201, description = "started as the token's person, driven by the server; `Location` names it", body = Started, headers(("location" = String, description = "/api/v1/runs/{id}"))),
        (status = 400, description = "the body is not of its shape, or the run is refused (the reason: an invalid version, a held one, a freeze)", body = ErrorBody),
        (status = 403, description = "the pipeline's `access:` does not allow it (the answer names the rule)", body = ErrorBody),
        (status = 404, description = "no such pipeline is loaded (or the person may not view it)", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn start(State(server): State<Server>, headers: HeaderMap, body: axum::body::Bytes) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let b: StartBody = serde_json::from_slice(&body).map_err(|e| body_error("{\"pipeline\": NAME, \"version\": VERSION}", &e))?;
    let pipelines = server.pipelines();
    let Some(loaded) = pipelines.get(&b.pipeline).filter(|l| crate::ops::access::holds(&l.plan.pipeline, Permission::View, None, &person)) else {
        let names: Vec<&str> = pipelines
            .by_name
            .values()
            .filter(|l| crate::ops::access::holds(&l.plan.pipeline, Permission::View, None, &person))
            .map(|l| l.plan.pipeline.name.value.as_str())
            .collect();
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no pipeline `{}` is loaded{}", b.pipeline, crate::diag::did_you_mean(&b.pipeline, names.iter().copied())),
        ));
    };
    let shown = loaded.file.display().to_string();
    let request = crate::ops::start::Request {
        file: &loaded.file,
        source: &loaded.source,
        plan: &loaded.plan,
        shown: &shown,
        version: &b.version,
        caller: Caller::Person(&person),
        accept_rewrite: &[],
        driven: true,
    };
    let started = answer(&server, &person, &format!("to start {} {}", b.pipeline, b.version), crate::ops::start::start(&server.exec, &request).await).await?;
    server.drive_started(started.run.clone(), loaded);
    let location = format!("/api/v1/runs/{}", started.run.id);
    Ok((StatusCode::CREATED, [("location", location)], Json(Started { run: started.run })).into_response())
}

#[utoipa::path(
    post,
    path = "/runs/{id}/stages/{stage}/{decision}",
    tag = "decisions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the run"), ("stage" = String, Path, description = "an approval stage"), ("decision" = String, Path, description = "approve, reject or break-glass")),
    request_body(content = DecideBody, content_type = "application/json", description = "optional: an empty body approves without a comment"),
    responses(
        (status = 200, description = "the vote is recorded", body = Done),
        (status = 400, description = "the body is not of its shape, or the decision is refused (the reason: a reject without a reason, a stage that does not wait)", body = ErrorBody),
        (status = 403, description = "the person is not among the stage's approvers (or `freeze.breakGlass`), or started the run, or `as` is someone else", body = ErrorBody),
        (status = 404, description = "no such run, or a decision other than approve, reject, break-glass", body = ErrorBody),
        (status = 409, description = "this person decided already", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn decide(
    State(server): State<Server>,
    headers: HeaderMap,
    Path((id, stage, decision)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let b: DecideBody = acting(&body, "{\"comment\": TEXT}", |b: &DecideBody| b.as_user.as_deref(), &person.login)?;
    let mode = match decision.as_str() {
        "approve" => crate::ops::decide::Mode::Approve,
        "reject" => crate::ops::decide::Mode::Reject,
        "break-glass" => crate::ops::decide::Mode::BreakGlass,
        other => return Err(error(StatusCode::NOT_FOUND, format!("`{other}`: a decision is approve, reject or break-glass"))),
    };
    let request = crate::ops::decide::Request { run: &id, stage: &stage, mode, comment: b.comment.as_deref(), caller: Caller::Person(&person) };
    let line =
        answer(&server, &person, &format!("to {decision} `{stage}` of run {id}"), crate::ops::decide::decide(&server.exec.store, &request).await).await?;
    Ok(Json(Done { done: line, by: person.login }).into_response())
}

/// `POST /api/v1/runs/{id}/stages/{stage}/templates/{n}/not-a-risk`: as `promote logs
/// not-a-risk`, by the token's user, with a reason.
#[utoipa::path(
    post,
    path = "/runs/{id}/stages/{stage}/templates/{number}/not-a-risk",
    tag = "decisions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the run"), ("stage" = String, Path, description = "a logs stage"), ("number" = usize, Path, description = "the template's number among the stage's findings")),
    request_body(content = NotARiskBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the template is ignored by the pipeline's later runs", body = Done),
        (status = 400, description = "the body is not of its shape, the reason is missing or over 4 KiB, or no such template", body = ErrorBody),
        (status = 403, description = "the person is not an admin of the pipeline, or `as` is someone else", body = ErrorBody),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 409, description = "the template was marked already (a mark is never replaced)", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn not_a_risk(
    State(server): State<Server>,
    headers: HeaderMap,
    Path((id, stage, number)): Path<(String, String, usize)>,
    body: axum::body::Bytes,
) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let b: NotARiskBody = acting(&body, "{\"reason\": TEXT} (why the template is not a risk)", |b: &NotARiskBody| b.as_user.as_deref(), &person.login)?;
    let request = crate::ops::decide::NotARisk { run: &id, stage: &stage, number, caller: Caller::Person(&person), reason: &b.reason };
    let action = format!("to mark template #{number} of `{stage}` (run {id}) not a risk");
    let line = answer(&server, &person, &action, crate::ops::decide::not_a_risk(&server.exec.store, &request).await).await?;
    Ok(Json(Done { done: line, by: person.login }).into_response())
}

/// `POST /callbacks/{run}/{stage}/{token}`: the verdict of the system a `webhook` stage called
/// with `callback: true`. The URL is the credential (given only to that system, in the call); it
/// is taken once.
#[utoipa::path(post, path = "/callbacks/{run}/{stage}/{token}", tag = "decisions",
    params(("run" = String, Path, description = "the run"), ("stage" = String, Path, description = "the webhook stage"), ("token" = String, Path, description = "the URL's credential, as the call carried it")),
    request_body(content = CallbackBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the verdict is taken", body = CallbackDone),
        (status = 400, description = "the body is not of its shape", body = ErrorBody),
        (status = 404, description = "no such callback URL", body = ErrorBody),
        (status = 409, description = "the stage has its verdict already, or no longer waits", body = ErrorBody),
        (status = 413, description = "the body is over 64 KiB", body = ErrorBody),
    ),
)]
pub(super) async fn callback(State(server): State<Server>, Path((run, stage, token)): Path<(String, String, String)>, body: axum::body::Bytes) -> Answer {
    use crate::ops::decide::{Callback, CallbackRefused};
    if body.len() > 64 << 10 {
        return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "a verdict is at most 64 KiB"));
    }
    let unknown = || error(StatusCode::NOT_FOUND, "no such callback URL");
    // The token is checked before the body is read.
    if !server.exec.store.key().verify_hex(&crate::stages::webhook::callback_token(server.exec.store.key(), &run, &stage), Some(&token)) {
        return Err(unknown());
    }
    let b: CallbackBody = serde_json::from_slice(&body).map_err(|e| body_error("{\"passed\": true|false, \"message\": TEXT}", &e))?;
    let c = Callback { run: &run, stage: &stage, token: &token, passed: b.passed, message: b.message.as_deref() };
    match crate::ops::decide::callback(&server.exec.store, &c).await.map_err(ops_error)? {
        Ok(line) => Ok(Json(CallbackDone { done: line }).into_response()),
        Err(CallbackRefused::Unknown) => Err(unknown()),
        Err(CallbackRefused::Closed(why)) => Err(error(StatusCode::CONFLICT, why)),
    }
}

#[utoipa::path(
    get,
    path = "/drifts",
    tag = "drift",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "newest first, of the pipelines the person may view", body = Drifts),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn drifts(State(server): State<Server>, headers: HeaderMap) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let all: Vec<_> =
        server.exec.store.drifts(crate::store::DriftFilter::default()).await?.into_iter().filter(|d| may_view(&server, &person, &d.pipeline, None)).collect();
    Ok(Json(Drifts { drifts: all }).into_response())
}

/// `POST /api/v1/drifts/{id}/accept|reject`: as `promote drift accept|reject`, by the token's user.
#[utoipa::path(
    post,
    path = "/drifts/{id}/{verdict}",
    tag = "drift",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the drift"), ("verdict" = String, Path, description = "accept or reject")),
    request_body(content = ReasonBody, content_type = "application/json", description = "the reason: required to reject"),
    responses(
        (status = 200, description = "decided (a reject reverts the drift first)", body = Done),
        (status = 400, description = "the body is not of its shape, or the decision is refused (a reject without a reason)", body = ErrorBody),
        (status = 403, description = "the person is not among `drift.approvers` nor an admin, or `as` is someone else", body = ErrorBody),
        (status = 404, description = "no such drift, its pipeline is not loaded, or a verdict other than accept or reject", body = ErrorBody),
        (status = 409, description = "the drift was decided already", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn decide_drift(State(server): State<Server>, headers: HeaderMap, Path((id, verdict)): Path<(String, String)>, body: axum::body::Bytes) -> Answer {
    use crate::ops::drift::{Decision, Verdict};
    let person = authenticate(&server, &headers).await?;
    let b: ReasonBody = acting(&body, "{\"reason\": TEXT}", |b: &ReasonBody| b.as_user.as_deref(), &person.login)?;
    let verdict_ = match verdict.as_str() {
        "accept" => Verdict::Accept,
        "reject" => Verdict::Reject,
        other => return Err(error(StatusCode::NOT_FOUND, format!("`{other}`: a drift is accepted or rejected"))),
    };
    let store = &server.exec.store;
    let found = store.drift(&id).await?;
    let Some(drift) = found else { return Err(error(StatusCode::NOT_FOUND, format!("no drift `{}`", crate::diag::printable(&id)))) };
    let pipelines = server.pipelines();
    let Some(loaded) = pipelines.get(&drift.pipeline) else { return Err(error(StatusCode::NOT_FOUND, format!("pipeline `{}` is not loaded", drift.pipeline))) };
    let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
    let d = Decision { id: &id, verdict: verdict_, reason: b.reason.as_deref(), caller: Caller::Person(&person) };
    let action = format!("to {verdict} drift {id}");
    let line = answer(&server, &person, &action, crate::ops::drift::decide(store, &server.exec.writer, &loaded.plan, base, &d).await).await?;
    Ok(Json(Done { done: line, by: person.login }).into_response())
}

#[utoipa::path(
    get,
    path = "/compliance",
    tag = "compliance",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the compliance violations, newest first, of the pipelines the person may view", body = Violations),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn violations(State(server): State<Server>, headers: HeaderMap) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let all: Vec<_> = server
        .exec
        .store
        .violations(crate::store::ViolationFilter::default())
        .await?
        .into_iter()
        .filter(|v| may_view(&server, &person, &v.pipeline, None))
        .collect();
    Ok(Json(Violations { violations: all }).into_response())
}

/// `POST /api/v1/compliance/{id}/accept|revert`: as `promote compliance accept|revert`, by the
/// token's user.
#[utoipa::path(
    post,
    path = "/compliance/{id}/{verdict}",
    tag = "compliance",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the violation"), ("verdict" = String, Path, description = "accept or revert")),
    request_body(content = ComplianceBody, content_type = "application/json", description = "the reason (required to accept) and the exception's end"),
    responses(
        (status = 200, description = "decided (a revert writes its commit first)", body = Done),
        (status = 400, description = "the body is not of its shape, or the decision is refused (an exception without a reason, an end in the past, nothing compliant to revert to)", body = ErrorBody),
        (status = 403, description = "the person is not among `drift.approvers` nor an admin, or `as` is someone else", body = ErrorBody),
        (status = 404, description = "no such violation, its pipeline is not loaded, or a verdict other than accept or revert", body = ErrorBody),
        (status = 409, description = "the violation was decided already", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn decide_violation(State(server): State<Server>, headers: HeaderMap, Path((id, verdict)): Path<(String, String)>, body: axum::body::Bytes) -> Answer {
    use crate::ops::compliance::{DEFAULT_EXCEPTION, Decision, Verdict};
    let person = authenticate(&server, &headers).await?;
    let b: ComplianceBody = acting(&body, "{\"reason\": TEXT, \"until\": RFC3339}", |b: &ComplianceBody| b.as_user.as_deref(), &person.login)?;
    let verdict_ = match verdict.as_str() {
        "accept" => {
            let until = match b.until.as_deref() {
                Some(t) => t
                    .parse::<jiff::Timestamp>()
                    .map_err(|e| error(StatusCode::BAD_REQUEST, format!("`until` is not an RFC 3339 time (like 2027-01-31T00:00:00Z): {e}")))?
                    .as_millisecond(),
                None => crate::clock::now_ms() + DEFAULT_EXCEPTION.as_millis() as i64,
            };
            Verdict::Accept { until }
        }
        "revert" => Verdict::Revert,
        other => return Err(error(StatusCode::NOT_FOUND, format!("`{}`: a violation is accepted or reverted", crate::diag::printable(other)))),
    };
    let store = &server.exec.store;
    let Some(v) = store.violation(&id).await? else {
        return Err(error(StatusCode::NOT_FOUND, format!("no compliance violation `{}`", crate::diag::printable(&id))));
    };
    let pipelines = server.pipelines();
    let Some(loaded) = pipelines.get(&v.pipeline) else { return Err(error(StatusCode::NOT_FOUND, format!("pipeline `{}` is not loaded", v.pipeline))) };
    let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
    let d = Decision { id: &id, verdict: verdict_, reason: b.reason.as_deref(), caller: Caller::Person(&person) };
    let action = format!("to {verdict} compliance violation {id}");
    let line = answer(&server, &person, &action, crate::ops::compliance::decide(store, &server.exec.writer, &loaded.plan, base, &d).await).await?;
    Ok(Json(Done { done: line, by: person.login }).into_response())
}

/// `?pipeline=NAME`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WatchQuery {
    /// Only this pipeline's watches.
    pipeline: Option<String>,
}

/// `GET /api/v1/watches[?pipeline=NAME]`: newest first, without each last look's evidence.
#[utoipa::path(
    get,
    path = "/watches",
    tag = "watch",
    security(("bearer" = [])),
    params(WatchQuery),
    responses(
        (status = 200, description = "newest first (at most 1,000), of viewable pipelines, without each last look's evidence", body = Watches),
        (status = 400, description = "the body or a parameter is not of its shape (the answer says which)", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn watches(State(server): State<Server>, headers: HeaderMap, axum::extract::Query(q): axum::extract::Query<WatchQuery>) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let mut all = crate::ops::watch::list(&server.exec.store, q.pipeline.as_deref()).await.map_err(ops_error)?;
    all.retain(|w| may_view(&server, &person, &w.pipeline, None));
    for w in &mut all {
        w.evidence = None;
    }
    Ok(Json(Watches { watches: all }).into_response())
}

/// `GET /api/v1/watches/{id}`: one watch with its last look's evidence.
#[utoipa::path(
    get,
    path = "/watches/{id}",
    tag = "watch",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the watch")),
    responses(
        (status = 200, description = "the watch, with its last look's evidence", body = crate::store::WatchRecord),
        (status = 403, description = "the pipeline's `access:` does not allow it (the answer names the rule)", body = ErrorBody),
        (status = 404, description = "no such watch", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn watch(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let person = authenticate(&server, &headers).await?;
    match server.exec.store.watch(&id).await? {
        Some(w) => {
            visible_run(&server, &person, &w.run).await?;
            Ok(Json(w).into_response())
        }
        None => Err(error(StatusCode::NOT_FOUND, format!("no watch `{}`", crate::diag::printable(&id)))),
    }
}

/// `POST /api/v1/watches/{id}/clear` `{"reason": TEXT}`: as `promote watch clear`, by the token's
/// person (the watch's `approvers` or the pipeline's admins).
#[utoipa::path(
    post,
    path = "/watches/{id}/clear",
    tag = "watch",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the watch")),
    request_body(content = ReasonBody, content_type = "application/json", description = "the reason (required)"),
    responses(
        (status = 200, description = "the held version is cleared", body = Done),
        (status = 400, description = "the body is not of its shape, or the clearing is refused (no reason, a watch that holds nothing)", body = ErrorBody),
        (status = 403, description = "the person is not among `watch.approvers` nor an admin, or `as` is someone else", body = ErrorBody),
        (status = 404, description = "no such watch", body = ErrorBody),
        (status = 409, description = "cleared already", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn clear_watch(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>, body: axum::body::Bytes) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let b: ReasonBody = acting(&body, "{\"reason\": TEXT}", |b: &ReasonBody| b.as_user.as_deref(), &person.login)?;
    let reason = b.reason.unwrap_or_default();
    let c = crate::ops::watch::Clear { id: &id, reason: &reason, caller: Caller::Person(&person) };
    let line = answer(&server, &person, &format!("to clear the hold of watch {id}"), crate::ops::watch::clear(&server.exec.store, &c).await).await?;
    Ok(Json(Done { done: line, by: person.login }).into_response())
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Of this run only.
    run: Option<String>,
    /// Entries after this number.
    #[serde(default)]
    after: i64,
    /// At most this many (default 100, at most 1,000).
    limit: Option<i64>,
}

/// `GET /api/v1/audit[?run=ID&after=N&limit=M]`: the trail, oldest first, as `promote audit log
/// --json`, paged by entry number; only the entries the person may see.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "a page of the trail, oldest first, of what the person may see", body = AuditPage),
        (status = 400, description = "the body or a parameter is not of its shape (the answer says which)", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn audit(State(server): State<Server>, headers: HeaderMap, axum::extract::Query(q): axum::extract::Query<AuditQuery>) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let visible = Visible::of(&server, &person).await?;
    // Pages of the trail until `limit` visible entries or its end.
    let (mut items, mut after) = (Vec::new(), q.after.max(0));
    loop {
        let page = server.exec.store.audit_entries(q.run.as_deref(), after, 1000).await?;
        let Some(last) = page.last().map(|e| e.seq) else { break };
        after = last;
        items.extend(page.into_iter().filter(|e| visible.sees(&e.run)).map(|mut e| {
            e.detail = crate::redact::text(&e.detail).into_owned();
            e
        }));
        if items.len() as i64 >= limit {
            items.truncate(limit as usize);
            break;
        }
    }
    let next = items.last().map(|e| e.seq);
    Ok(Json(AuditPage { items, next }).into_response())
}

#[utoipa::path(
    get,
    path = "/audit/verify",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "whether the trail is intact, and how long (nothing of its content)", body = Verified),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn verify(State(server): State<Server>, headers: HeaderMap) -> Answer {
    // Any signed-in person: it says whether the trail is intact and how long, nothing of its content.
    authenticate(&server, &headers).await?;
    let v = crate::ops::audit::verify(&server.exec, &[], &[]).await.map_err(ops_error)?;
    Ok(Json(Verified { intact: v.tamper.is_none(), entries: v.entries, head: v.head, problem: v.tamper.as_ref().map(|t| t.to_string()), kept_in_git: v.kept })
        .into_response())
}

/// Where a stream picks up: `?after=N`.
#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamQuery {
    /// Only entries after this number (the page's last rendered entry).
    #[serde(default)]
    after: Option<i64>,
}

/// The entry number a client already has: the later of its `Last-Event-ID` header (an
/// EventSource sends it by itself when it reconnects) and `?after=N` (its first connection).
/// Anything unreadable counts as nothing seen.
pub(super) fn resume_after(headers: &HeaderMap, q: &StreamQuery) -> i64 {
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(0);
    header.max(q.after.unwrap_or(0)).max(0)
}

/// `GET /api/v1/runs/{id}/events`: the run's entries as server-sent events (`id` the entry's
/// number, `event` its kind, `data` the entry as JSON): those so far, then each as it is
/// committed (woken by the change feed), until the run's end. Only entries after `Last-Event-ID`
/// (or `?after=N`) are sent: a reconnect never repeats one.
#[utoipa::path(
    get,
    path = "/runs/{id}/events",
    tag = "runs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the run"), StreamQuery, ("Last-Event-ID" = Option<i64>, Header, description = "the last entry the client has (an EventSource sends it when it reconnects)")),
    responses(
        (status = 200, description = "server-sent events: `id:` the entry's number, `event:` its kind, `data:` the entry as JSON; until the run's end", content_type = "text/event-stream", body = super::shapes::StreamEvent),
        (status = 400, description = "the body or a parameter is not of its shape (the answer says which)", body = ErrorBody),
        (status = 403, description = "the pipeline's `access:` does not allow it (the answer names the rule)", body = ErrorBody),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn events(
    State(server): State<Server>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<StreamQuery>,
) -> Answer {
    let person = authenticate(&server, &headers).await?;
    visible_run(&server, &person, &id).await?;
    event_stream(server.exec.store.clone(), id, resume_after(&headers, &q)).await
}

/// A run's entries after entry `after` as server-sent events (those so far, then each as it is
/// committed, until the run's end), for whoever the caller authenticated.
pub(super) async fn event_stream(store: crate::store::Store, id: String, after: i64) -> Answer {
    use axum::response::sse::{Event as Sse, KeepAlive};
    let run = store.run(&id).await?;
    // Subscribed before the first read: nothing committed in between is missed.
    let sub = store.subscribe().await?;
    let all = store.events(&id).await?;
    // The run's end may be among the entries the client already has: then it ends at once.
    let done = run.state != crate::store::RunState::Running || all.iter().any(|e| e.kind == crate::store::EntryKind::Run.as_str());
    let first: std::collections::VecDeque<_> = all.into_iter().filter(|e| e.id > after).collect();
    let state = (store, sub, id, first, after, done);
    let stream = futures_util::stream::unfold(state, |(store, mut sub, id, mut pending, mut last, mut done)| async move {
        loop {
            if let Some(e) = pending.pop_front() {
                last = last.max(e.id);
                let sse = Sse::default().id(e.id.to_string()).event(e.kind.clone()).json_data(&e).unwrap_or_default();
                return Some((Ok::<_, std::convert::Infallible>(sse), (store, sub, id, pending, last, done)));
            }
            if done {
                return None;
            }
            let run = id.clone();
            sub.wait(move |c| c.run == run, None).await;
            match store.events(&id).await {
                Ok(all) => {
                    for e in all.into_iter().filter(|e| e.id > last) {
                        done |= e.kind == crate::store::EntryKind::Run.as_str();
                        pending.push_back(e);
                    }
                }
                Err(_) => return None,
            }
        }
    });
    Ok(axum::response::sse::Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// `POST /api/v1/pipelines/{name}/environments/{env}/rollback`: as `promote rollback`, by the
/// token's user (in the trail).
#[utoipa::path(
    post,
    path = "/pipelines/{name}/environments/{env}/rollback",
    tag = "pipelines",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "a loaded pipeline"), ("env" = String, Path, description = "its environment")),
    request_body(content = RollbackBody, content_type = "application/json", description = "optional"),
    responses(
        (status = 200, description = "rolled back: the commit is written", body = RolledBack),
        (status = 400, description = "the body is not of its shape, or the rollback is refused (no such environment, nothing to roll back to)", body = ErrorBody),
        (status = 403, description = "the pipeline's `access:` does not allow it (the answer names the rule)", body = ErrorBody),
        (status = 404, description = "no such pipeline is loaded", body = ErrorBody),
        (status = 409, description = "nothing could be committed (a held version is never restored)", body = NotRolledBack),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn rollback(State(server): State<Server>, headers: HeaderMap, Path((name, env)): Path<(String, String)>, body: axum::body::Bytes) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let b: RollbackBody =
        if body.is_empty() { RollbackBody::default() } else { serde_json::from_slice(&body).map_err(|e| body_error("{\"to\": COMMIT} (optional)", &e))? };
    let pipelines = server.pipelines();
    let Some(loaded) = pipelines.get(&name) else {
        return Err(error(StatusCode::NOT_FOUND, format!("no pipeline `{}` is loaded", crate::diag::printable(&name))));
    };
    let target = match b.to {
        Some(c) => crate::git::RollbackTarget::To(c),
        None => crate::git::RollbackTarget::Latest,
    };
    let shown = loaded.file.display().to_string();
    let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
    let request = crate::ops::rollback::Request { plan: &loaded.plan, shown: &shown, base, environment: &env, target, caller: Caller::Person(&person) };
    let action = format!("to roll back {env} of {name}");
    let done = answer(&server, &person, &action, crate::ops::rollback::rollback(&server.exec.store, &server.exec.writer, request).await).await?;
    if done.result.is_err() {
        let refused = NotRolledBack { error: crate::redact::text(&done.line).into_owned(), by: person.login, rolled_back: false };
        return Ok((StatusCode::CONFLICT, Json(refused)).into_response());
    }
    Ok(Json(RolledBack { done: done.line, by: person.login, rolled_back: true }).into_response())
}

/// `POST /api/v1/sessions/revoke` `{"user": LOGIN}`: ends every web session of a person (their own,
/// or anyone's for an admin of a loaded pipeline); recorded in the trail.
#[utoipa::path(
    post,
    path = "/sessions/revoke",
    tag = "people",
    security(("bearer" = [])),
    request_body(content = RevokeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "every web session of that person ended (or they had none)", body = Done),
        (status = 400, description = "the body or a parameter is not of its shape (the answer says which)", body = ErrorBody),
        (status = 403, description = "another person's sessions, without `access.admin` of a loaded pipeline", body = ErrorBody),
        (status = 401, description = "no bearer token, or one that is no one's", body = ErrorBody),
    ),
)]
async fn revoke(State(server): State<Server>, headers: HeaderMap, body: axum::body::Bytes) -> Answer {
    let person = authenticate(&server, &headers).await?;
    let b: RevokeBody = serde_json::from_slice(&body).map_err(|e| body_error("{\"user\": LOGIN}", &e))?;
    let admin = server.pipelines().by_name.values().any(|l| crate::ops::access::holds(&l.plan.pipeline, Permission::Admin, None, &person));
    let done = if b.user == person.login || admin {
        super::auth::revoke(&server, &b.user, &person).await.map_err(OpsError::from)
    } else {
        Err(OpsError::Forbidden(format!("{} may not end {}'s sessions: that needs `access.admin` of a loaded pipeline", person.login, b.user)))
    };
    let ended = answer(&server, &person, &format!("to end {}'s sessions", b.user), done).await?;
    let done = if ended { format!("ended every session of {}", b.user) } else { format!("{} had no open session", b.user) };
    Ok(Json(Done { done, by: person.login }).into_response())
}
