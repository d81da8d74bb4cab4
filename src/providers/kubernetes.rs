//! Health read through the Kubernetes API (kube): an Argo CD Application synced to the promotion
//! commit and Healthy, a Deployment whose rollout finished with the new image.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

/// What a health probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Done and healthy.
    Healthy(String),
    /// Not yet; keep waiting (what it is waiting for).
    Progressing(String),
    /// It will not become healthy by waiting (a failed sync, a rollout past its deadline).
    Failed(String),
}

/// Why the cluster could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No kubeconfig or in-cluster configuration.
    #[error("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Config(String),
    /// The API server refused or could not be reached.
    #[error("{what}: {why}")]
    Api {
        /// What was asked.
        what: String,
        /// Why it failed.
        why: String,
    },
}

/// A client from the usual configuration (KUBECONFIG, ~/.kube/config, in-cluster).
pub async fn client() -> Result<kube::Client, KubeError> {
    super::install_crypto();
    kube::Client::try_default().await.map_err(|e| KubeError::Config(e.to_string()))
}

/// A client of the kubeconfig's `context` (`None`: the usual configuration, [`client`]).
pub async fn client_for(context: Option<&str>) -> Result<kube::Client, KubeError> {
    let Some(context) = context else { return client().await };
    super::install_crypto();
    let options = kube::config::KubeConfigOptions { context: Some(context.to_string()), ..Default::default() };
    let config = kube::Config::from_kubeconfig(&options).await.map_err(|e| KubeError::Config(format!("context `{context}`: {e}")))?;
    kube::Client::try_from(config).map_err(|e| KubeError::Config(format!("context `{context}`: {e}")))
}

/// Asks Argo CD to refresh Application `namespace/name` now (the `argocd.argoproj.io/refresh`
/// annotation, which Argo CD removes once it has compared the Application with Git again).
pub async fn refresh_argocd(client: &kube::Client, namespace: &str, name: &str) -> Result<(), KubeError> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "applications");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let patch = serde_json::json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}});
    api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| api_error(format!("refreshing Argo CD Application {namespace}/{name}"), e))
}

fn api_error(what: String, e: kube::Error) -> KubeError {
    let why = match &e {
        kube::Error::Api(s) if s.code == 404 => "not found".to_string(),
        kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
        other => other.to_string(),
    };
    KubeError::Api { what, why }
}

/// The Argo CD Application's health against the promotion `commit`.
pub async fn argocd(client: &kube::Client, namespace: &str, name: &str, commit: Option<&str>) -> Result<Health, KubeError> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "applications");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let app = api.get(name).await.map_err(|e| api_error(format!("Argo CD Application {namespace}/{name}"), e))?;
    Ok(judge_application(&app.data, commit))
}

/// Judges an Application's `status`: Synced at `commit` and Healthy; a failed sync operation fails.
pub fn judge_application(app: &serde_json::Value, commit: Option<&str>) -> Health {
    let status = &app["status"];
    let sync = status["sync"]["status"].as_str().unwrap_or("Unknown");
    let health = status["health"]["status"].as_str().unwrap_or("Unknown");
    let mut revisions: Vec<&str> = status["sync"]["revisions"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    if let Some(r) = status["sync"]["revision"].as_str() {
        revisions.push(r);
    }
    let op = &status["operationState"];
    let op_phase = op["phase"].as_str().unwrap_or("");
    let op_revision = op["syncResult"]["revision"].as_str().or(op["operation"]["sync"]["revision"].as_str());
    let at_commit = commit.is_none_or(|c| revisions.contains(&c));
    if matches!(op_phase, "Failed" | "Error") && (commit.is_none() || op_revision == commit) {
        let msg = op["message"].as_str().unwrap_or("no message");
        return Health::Failed(format!("the sync failed ({op_phase}): {msg}"));
    }
    let shown = revisions.first().map(|r| &r[..r.len().min(10)]).unwrap_or("none");
    if !at_commit {
        return Health::Progressing(format!("{sync} at revision {shown}, waiting for {}", commit.map(|c| &c[..c.len().min(10)]).unwrap_or("")));
    }
    if sync != "Synced" || health != "Healthy" {
        let msg = status["health"]["message"].as_str().map(|m| format!(" ({m})")).unwrap_or_default();
        return Health::Progressing(format!("{sync} and {health}{msg} at revision {shown}"));
    }
    Health::Healthy(format!("Synced and Healthy at revision {shown}"))
}

/// The Deployment's rollout against the promoted `value` (a tag, digest or whole image).
pub async fn deployment(client: &kube::Client, namespace: &str, name: &str, value: &str) -> Result<Health, KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let d = api.get(name).await.map_err(|e| api_error(format!("Deployment {namespace}/{name}"), e))?;
    Ok(judge_deployment(&d, value))
}

/// Judges a rollout as `kubectl rollout status` does, and checks that a container runs `value`.
pub fn judge_deployment(d: &Deployment, value: &str) -> Health {
    let images: Vec<&str> =
        d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).map(|p| p.containers.iter().filter_map(|c| c.image.as_deref()).collect()).unwrap_or_default();
    let runs_value = images.iter().any(|i| *i == value || i.ends_with(&format!(":{value}")) || i.ends_with(&format!("@{value}")));
    if !runs_value {
        return Health::Progressing(format!("the pod template runs {}, not {value} yet", images.join(", ")));
    }
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(st) = d.status.as_ref() else { return Health::Progressing("no status yet".into()) };
    if let Some(c) = st.conditions.iter().flatten().find(|c| c.type_ == "Progressing")
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return Health::Failed(format!("the rollout exceeded its progress deadline: {}", c.message.as_deref().unwrap_or("")));
    }
    if st.observed_generation.unwrap_or(0) < generation {
        return Health::Progressing("waiting for the controller to see the new spec".into());
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = st.updated_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    if updated < want {
        return Health::Progressing(format!("{updated} of {want} replicas updated"));
    }
    if total > updated {
        return Health::Progressing(format!("{} old replicas pending termination", total - updated));
    }
    if available < updated {
        return Health::Progressing(format!("{available} of {updated} updated replicas available"));
    }
    Health::Healthy(format!("rolled out: {updated} of {want} replicas updated and available, running {value}"))
}
