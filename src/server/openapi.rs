//! The API's description: an OpenAPI 3.1 document generated from the handlers (their
//! `#[utoipa::path]`) and the types they take and answer ([`super::shapes`], the state's records),
//! assembled with the routes themselves ([`described`]), so that a route cannot be served without
//! being described. Served at `GET /api/v1/openapi.json`; checked against the live server by
//! schemathesis in the tests (tests/it/openapi.rs).

use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Server, api, hooks};

/// The document's fixed parts: title, version, what it is, the bearer scheme, the tags.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "promote",
        description = "The API of `promote serve`: pipelines, runs, decisions, drift, watches and the audit trail over the same operations as the CLI, and the webhooks that start runs. Every error is `{\"error\": MESSAGE}`. docs/api.md says what each route needs.",
        license(name = "see the repository")
    ),
    modifiers(&Bearer),
    tags(
        (name = "pipelines", description = "the loaded pipelines, rollbacks"),
        (name = "runs", description = "runs and their live entries"),
        (name = "decisions", description = "approvals, not-a-risk marks, webhook stages' callbacks"),
        (name = "drift", description = "changes promote did not make"),
        (name = "watch", description = "releases judged after their run"),
        (name = "audit", description = "the trail"),
        (name = "people", description = "sessions"),
        (name = "webhooks", description = "deliveries that start runs"),
        (name = "operations", description = "health, readiness, metrics, this document"),
    )
)]
struct Doc;

/// `Authorization: Bearer TOKEN`: a token of the server's directory of people, or a JWT of its
/// OIDC issuer.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("a token of the server's directory of people (`promote token --for USER`), or a JWT of the server's OIDC issuer"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Every route of the API, the webhooks and the probes, each with its part of the document.
pub(super) fn described() -> OpenApiRouter<Server> {
    OpenApiRouter::with_openapi(Doc::openapi())
        .routes(routes!(api::ready))
        .routes(routes!(api::metrics))
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(hooks::receive))
                .routes(routes!(hooks::receive_with_token))
                // The same two with a slash at the end, as hook URLs are often pasted: the same
                // operations, so described once.
                .route("/hooks/{provider}/", axum::routing::post(hooks::receive))
                .route("/hooks/{provider}/{token}/", axum::routing::post(hooks::receive_with_token))
                .routes(routes!(api::callback))
                .nest("/api/v1", api::routes().fallback(|| async { axum::http::StatusCode::NOT_FOUND }))
                .layer(axum::middleware::from_fn(api::as_json)),
        )
}

/// The document as JSON text, made once (each answer then only copies the pointer).
fn document() -> &'static str {
    static DOC: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| described().into_openapi().to_json().unwrap_or_default());
    DOC.as_str()
}

/// `GET /healthz`: 200 while the process lives.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the process lives", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /api/v1/openapi.json`: this document (no token needed: it says nothing of the state).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "the OpenAPI 3.1 document of this server", body = Object)))]
async fn openapi_json() -> axum::response::Response {
    ([("content-type", "application/json")], document()).into_response()
}
