//! The package: the Kubernetes manifests in deploy/ read into k8s-openapi's types with unknown
//! fields refused (and what they promise checked), and the Dockerfile's runtime stage: its user,
//! its volume, and its entrypoint and HEALTHCHECK run with the real binary. (No container engine
//! runs on the test machines, so the image itself is not built here: docs/operations.md.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads `doc` as `T`, refusing any field `T` does not have (serde would skip it silently).
fn typed<T: DeserializeOwned>(doc: &serde_json::Value, file: &str) -> T {
    let mut unknown = Vec::new();
    let value: T = serde_ignored::deserialize(doc, |path| unknown.push(path.to_string())).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(unknown.is_empty(), "{file}: {} has no field {unknown:?}", std::any::type_name::<T>());
    value
}

/// The Prometheus Operator's ServiceMonitor (a CRD, so not in k8s-openapi): the fields used.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    endpoints: Vec<Endpoint>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Endpoint {
    port: String,
    path: String,
    interval: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Kustomization {
    api_version: String,
    kind: String,
    namespace: String,
    resources: Vec<String>,
    images: Vec<serde_json::Value>,
}

/// Every document of every manifest, by kind.
#[derive(Default)]
struct Manifests {
    deployment: Option<Deployment>,
    services: Vec<Service>,
    pdbs: Vec<PodDisruptionBudget>,
    policies: Vec<NetworkPolicy>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    accounts: Vec<ServiceAccount>,
    monitors: Vec<ServiceMonitor>,
    files: Vec<String>,
}

fn manifests() -> Manifests {
    let mut m = Manifests::default();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("deploy")).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, doc) in text.split("\n---\n").enumerate() {
            let file = format!("deploy/{name} (document {})", i + 1);
            let value: serde_json::Value = serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            match value["kind"].as_str().unwrap_or_else(|| panic!("{file}: no kind")) {
                "Kustomization" => {
                    let k: Kustomization = typed(&value, &file);
                    assert_eq!(k.namespace, "promote");
                    m.files = k.resources;
                }
                "Namespace" => drop(typed::<Namespace>(&value, &file)),
                "ServiceAccount" => m.accounts.push(typed(&value, &file)),
                "ClusterRole" => m.roles.push(typed(&value, &file)),
                "ClusterRoleBinding" => m.bindings.push(typed(&value, &file)),
                "Deployment" => m.deployment = Some(typed(&value, &file)),
                "Service" => m.services.push(typed(&value, &file)),
                "PodDisruptionBudget" => m.pdbs.push(typed(&value, &file)),
                "NetworkPolicy" => m.policies.push(typed(&value, &file)),
                "ServiceMonitor" => m.monitors.push(typed(&value, &file)),
                other => panic!("{file}: a kind this test does not know: {other}"),
            }
        }
    }
    m
}

#[test]
fn the_manifests_are_valid_kubernetes_objects_that_fit_together() {
    let m = manifests();
    // The kustomization lists every manifest there is.
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut listed = m.files.clone();
    listed.sort();
    assert_eq!(listed, on_disk);

    let d = m.deployment.expect("a Deployment");
    let spec = d.spec.unwrap();
    assert!(spec.replicas.unwrap() >= 2, "several replicas (on PostgreSQL)");
    let labels: BTreeMap<String, String> = spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
    let selected = |sel: &BTreeMap<String, String>| sel.iter().all(|(k, v)| labels.get(k) == Some(v));
    assert!(selected(spec.selector.match_labels.as_ref().unwrap()));
    let pod = spec.template.spec.unwrap();
    let sc = pod.security_context.unwrap();
    assert_eq!((sc.run_as_non_root, sc.run_as_user.map(|u| u != 0)), (Some(true), Some(true)), "not root");
    let c = &pod.containers[0];
    let csc = c.security_context.as_ref().unwrap();
    assert_eq!((csc.read_only_root_filesystem, csc.allow_privilege_escalation), (Some(true), Some(false)));
    // The state is the database the Secret names; the key a mounted Secret; none of them inline.
    let env: BTreeMap<&str, &k8s_openapi::api::core::v1::EnvVar> = c.env.as_ref().unwrap().iter().map(|e| (e.name.as_str(), e)).collect();
    let db = env["PROMOTE_DATABASE_URL"];
    assert!(db.value.is_none() && db.value_from.as_ref().unwrap().secret_key_ref.is_some(), "the database URL comes from a Secret");
    let key_file = env["PROMOTE_KEY_FILE"].value.clone().unwrap();
    let mounts = c.volume_mounts.as_ref().unwrap();
    let volumes = pod.volumes.as_ref().unwrap();
    let key_mount = mounts.iter().find(|m| key_file.starts_with(&format!("{}/", m.mount_path))).expect("the key file is in a mount");
    let key_volume = volumes.iter().find(|v| v.name == key_mount.name).unwrap();
    assert!(key_volume.secret.is_some() && key_mount.read_only == Some(true), "the key is a read-only Secret");
    for e in c.env.as_ref().unwrap() {
        assert!(e.value.as_deref().is_none_or(|v| !v.contains("://") || !v.contains('@')), "no credentials inline: {}", e.name);
    }
    // The working folder (git caches) is writable.
    let work = c.working_dir.clone().unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == work && m.read_only != Some(true)), "the working folder {work} is a writable volume");
    // Probes on the server's own health endpoints and port.
    let port = c.ports.as_ref().unwrap()[0].container_port;
    let args = c.args.clone().unwrap();
    assert!(args.iter().any(|a| a.ends_with(&format!(":{port}"))), "{args:?} listens on {port}");
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap();
    assert_eq!((probe(&c.liveness_probe).as_str(), probe(&c.readiness_probe).as_str()), ("/healthz", "/readyz"));
    // The binary takes the container's arguments (clap checks each before `--help`).
    let out = Command::new(crate::promote_bin()).args(&args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));

    // Service, disruption budget, network policy and monitor select the pods.
    for s in &m.services {
        assert!(selected(s.spec.as_ref().unwrap().selector.as_ref().unwrap()));
    }
    let pdb = m.pdbs[0].spec.as_ref().unwrap();
    assert!(selected(pdb.selector.as_ref().unwrap().match_labels.as_ref().unwrap()));
    assert!(m.policies.iter().all(|p| selected(p.spec.as_ref().unwrap().pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap())));
    assert!(m.monitors.iter().all(|x| selected(x.spec.selector.match_labels.as_ref().unwrap()) && x.spec.endpoints[0].path == "/metrics"));

    // RBAC reads Argo CD Applications, Deployments and pod logs, and nothing else, never a write.
    let rules = m.roles[0].rules.clone().unwrap();
    let mut granted: Vec<String> = Vec::new();
    for r in &rules {
        for v in &r.verbs {
            assert!(["get", "list", "watch"].contains(&v.as_str()), "a write verb: {v}");
        }
        for g in r.api_groups.as_ref().unwrap() {
            for res in r.resources.as_ref().unwrap() {
                granted.push(format!("{g}/{res}"));
            }
        }
    }
    granted.sort();
    assert_eq!(granted, ["/pods", "/pods/log", "apps/deployments", "argoproj.io/applications"]);
    assert_eq!(m.bindings[0].subjects.as_ref().unwrap()[0].name, m.accounts[0].metadata.name.clone().unwrap());
    assert_eq!(pod.service_account_name.as_deref(), m.accounts[0].metadata.name.as_deref());
}

/// The runtime stage of the Dockerfile: (instruction, rest) after its last FROM.
fn runtime_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut lines: Vec<String> = Vec::new();
    let mut cont = String::new();
    for l in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        cont.push_str(l.trim_end_matches('\\'));
        if !l.ends_with('\\') {
            lines.push(std::mem::take(&mut cont));
        }
    }
    let start = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines[start..].iter().filter(|l| !l.trim().is_empty()).map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.trim().to_string())).unwrap()).collect()
}

fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest.trim_start_matches("CMD ").trim()).unwrap_or_else(|e| panic!("not exec form: {rest}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_images_entrypoint_serves_and_its_healthcheck_says_so() {
    let stage = runtime_stage();
    let get = |k: &str| stage.iter().filter(|(i, _)| i == k).map(|(_, r)| r.clone()).collect::<Vec<_>>();
    // Not root; the state and the key under the volume; only what serve needs installed.
    let user = get("USER").pop().unwrap();
    assert!(!user.starts_with('0') && user != "root", "{user}");
    let workdir = get("WORKDIR").pop().unwrap();
    assert!(get("VOLUME").pop().unwrap().contains(&format!("\"{workdir}\"")), "the working folder (state, key, caches) is the volume");
    let run = get("RUN").join(" ");
    for p in ["git", "ca-certificates"] {
        assert!(run.contains(&format!(" {p}")), "{p} installed: {run}");
    }
    assert!(!run.contains("curl") && !run.contains("build-essential"), "nothing serve does not need: {run}");
    let entrypoint = exec_form(&get("ENTRYPOINT").pop().unwrap());
    let cmd = exec_form(&get("CMD").pop().unwrap());
    assert_eq!(entrypoint, ["promote"]);
    let health = exec_form(get("HEALTHCHECK").pop().unwrap().split_once("CMD").unwrap().1);
    assert_eq!(&health[..2], ["promote", "probe"]);

    // The image's command, with this machine's port and a pipelines folder, and its HEALTHCHECK.
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let args: Vec<String> = cmd
        .iter()
        .map(|a| {
            if a == "0.0.0.0:8080" {
                format!("127.0.0.1:{port}")
            } else if a == "/etc/promote/pipelines" {
                dir.path().display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    assert_ne!(args, cmd, "the CMD listens on 0.0.0.0:8080 and reads /etc/promote/pipelines");
    let mut server = Command::new(crate::promote_bin()).current_dir(dir.path()).env("HOME", dir.path()).args(&args).spawn().unwrap();
    let probe_url = health[2].replace(":8080", &format!(":{port}"));
    let probe = || Command::new(crate::promote_bin()).args(["probe", &probe_url]).output().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !probe().status.success() {
        assert!(std::time::Instant::now() < deadline, "the HEALTHCHECK never passed: {}", String::from_utf8_lossy(&probe().stderr));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
    // And fails once nothing answers.
    let down = probe();
    assert_eq!(down.status.code(), Some(1), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(String::from_utf8_lossy(&down.stderr).contains("promote probe: "));
}
