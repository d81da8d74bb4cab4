//! The package: the Kubernetes manifests in deploy/ read into k8s-openapi's types with unknown
//! fields refused (and what they promise checked), the pipelines as the pod sees them, and the
//! Dockerfile's runtime stage: its user, its volume, and its entrypoint and HEALTHCHECK run with
//! the real binary. The image itself is built and run by scripts/image.sh and
//! scripts/image-check.sh in CI (.ci/run).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
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
    namespace: Option<String>,
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
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
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
            let kind = value["kind"].as_str().unwrap_or_else(|| panic!("{file}: no kind"));
            if !["Kustomization", "Namespace"].contains(&kind) {
                assert!(value["metadata"]["namespace"].as_str().is_some_and(|n| !n.is_empty()), "{file}: {kind} names no namespace");
            }
            match kind {
                "Kustomization" => {
                    let k: Kustomization = typed(&value, &file);
                    assert_eq!(k.namespace, None, "{file}: a namespace here would move the Roles out of the namespaces they are for");
                    m.files = k.resources;
                }
                "Namespace" => drop(typed::<Namespace>(&value, &file)),
                "ServiceAccount" => m.accounts.push(typed(&value, &file)),
                "Role" => m.roles.push(typed(&value, &file)),
                "RoleBinding" => m.bindings.push(typed(&value, &file)),
                "ClusterRole" | "ClusterRoleBinding" => panic!("{file}: cluster-wide RBAC; promote reads only the namespaces its pipelines name"),
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
    // Secrets are files in read-only Secret volumes, never environment variables (which git,
    // ssh and gpg children inherit): the database URL, the git token, the key.
    let env: BTreeMap<&str, &k8s_openapi::api::core::v1::EnvVar> = c.env.as_ref().unwrap().iter().map(|e| (e.name.as_str(), e)).collect();
    for e in c.env.as_ref().unwrap() {
        assert!(e.value_from.is_none(), "{} comes from a Secret or ConfigMap into the environment", e.name);
        assert!(e.value.as_deref().is_none_or(|v| !v.contains("://") || !v.contains('@')), "no credentials inline: {}", e.name);
    }
    assert!(!env.contains_key("PROMOTE_DATABASE_URL") && !env.contains_key("PROMOTE_GIT_TOKEN"));
    let mounts = c.volume_mounts.as_ref().unwrap();
    let volumes = pod.volumes.as_ref().unwrap();
    for (var, secret, key) in [
        ("PROMOTE_DATABASE_URL_FILE", "promote-database", "url"),
        ("PROMOTE_GIT_TOKEN_FILE", "promote-tokens", "git-token"),
        ("PROMOTE_KEY_FILE", "promote-key", "key"),
    ] {
        let file = env.get(var).and_then(|e| e.value.clone()).unwrap_or_else(|| panic!("{var} is set"));
        let mount = mounts.iter().find(|m| file.starts_with(&format!("{}/", m.mount_path))).unwrap_or_else(|| panic!("{var}: {file} is in no mount"));
        assert_eq!(mount.read_only, Some(true), "{var}: read-only");
        let rel = &file[mount.mount_path.len() + 1..];
        let v = volumes.iter().find(|v| v.name == mount.name).unwrap();
        let from_secret = match (&v.secret, &v.projected) {
            (Some(s), _) => {
                s.secret_name.as_deref() == Some(secret) && s.items.as_ref().is_none_or(|i| i.iter().any(|i| i.key == key && i.path == rel)) && rel == key
            }
            (_, Some(p)) => p
                .sources
                .iter()
                .flatten()
                .filter_map(|s| s.secret.as_ref())
                .any(|s| s.name == secret && s.items.as_ref().is_some_and(|items| items.iter().any(|i| i.key == key && i.path == rel))),
            _ => false,
        };
        assert!(from_secret, "{var}: {file} is key `{key}` of Secret {secret}");
    }
    // What the binary reads those variables as: a URL file it accepts (and refuses an empty one).
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, "").unwrap();
    let out = Command::new(crate::promote_bin())
        .current_dir(dir.path())
        .env_remove("PROMOTE_DATABASE_URL")
        .env("PROMOTE_DATABASE_URL_FILE", &url_file)
        .env("PROMOTE_KEY_FILE", dir.path().join("key"))
        .args(["status", "--log-format", "json"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("PROMOTE_DATABASE_URL_FILE"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join(".promote").exists(), "an unreadable URL file is no reason to make a SQLite state");
    // The working folder (git caches) is writable.
    let work = c.working_dir.clone().unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == work && m.read_only != Some(true)), "the working folder {work} is a writable volume");
    // Probes on the server's own health endpoints and port.
    let port = c.ports.as_ref().unwrap()[0].container_port;
    let args = c.args.clone().unwrap();
    assert!(args.iter().any(|a| a.ends_with(&format!(":{port}"))), "{args:?} listens on {port}");
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap();
    assert_eq!((probe(&c.liveness_probe).as_str(), probe(&c.readiness_probe).as_str()), ("/healthz", "/readyz"));
    // A startup probe that outlasts the wait for the database, so a slow database is no restart.
    assert_eq!(probe(&c.startup_probe), "/healthz");
    let startup = c.startup_probe.as_ref().unwrap();
    let allowed = startup.period_seconds.unwrap_or(10) * startup.failure_threshold.unwrap_or(3);
    let wait: i32 = env["PROMOTE_DATABASE_WAIT"].value.as_deref().unwrap().parse().unwrap();
    assert!(allowed > wait, "the startup probe allows {allowed} s, the database wait is {wait} s");
    // Logs are JSON, one object a line, off a terminal.
    assert!(args.windows(2).any(|w| w == ["--log-format", "json"]), "{args:?}");
    // The binary takes the container's arguments (clap checks each before `--help`).
    let out = Command::new(crate::promote_bin()).args(&args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));

    // Service, disruption budget, network policy and monitor select the pods.
    for s in &m.services {
        assert!(selected(s.spec.as_ref().unwrap().selector.as_ref().unwrap()));
    }
    let pdb = m.pdbs[0].spec.as_ref().unwrap();
    assert!(selected(pdb.selector.as_ref().unwrap().match_labels.as_ref().unwrap()));
    // A drain may take one replica at a time, whatever the number of replicas.
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!((pdb.max_unavailable.clone(), pdb.min_available.clone()), (Some(IntOrString::Int(1)), None));
    assert!(m.policies.iter().all(|p| selected(p.spec.as_ref().unwrap().pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap())));
    // In: only from the ingress controller's namespace and Prometheus, never from every pod.
    let ingress: Vec<_> = m.policies.iter().flat_map(|p| p.spec.as_ref().unwrap().ingress.clone().unwrap_or_default()).collect();
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    for rule in &ingress {
        let from = rule.from.as_ref().filter(|f| !f.is_empty()).expect("every ingress rule says from where");
        assert!(from.iter().all(|peer| peer.namespace_selector.is_some() && peer.ip_block.is_none()), "{from:?}");
    }
    let namespaces: Vec<String> = ingress
        .iter()
        .flat_map(|r| r.from.clone().unwrap())
        .filter_map(|p| p.namespace_selector?.match_labels?.get("kubernetes.io/metadata.name").cloned())
        .collect();
    assert_eq!(namespaces, ["ingress-nginx", "monitoring"]);
    // Out: what the stages reach besides Git and the database: HTTP health checks, web metrics
    // and webhook stages (80, 8080), Prometheus (9090), Loki (3100), Kayenta (8090), SMTP.
    let egress_ports: Vec<i32> = m
        .policies
        .iter()
        .flat_map(|p| p.spec.as_ref().unwrap().egress.clone().unwrap_or_default())
        .flat_map(|r| r.ports.unwrap_or_default())
        .filter_map(|p| match p.port {
            Some(IntOrString::Int(n)) => Some(n),
            _ => None,
        })
        .collect();
    for port in [53, 5432, 443, 22, 6443, 80, 8080, 9090, 3100, 8090, 587] {
        assert!(egress_ports.contains(&port), "egress to port {port}: {egress_ports:?}");
    }
    assert!(m.monitors.iter().all(|x| selected(x.spec.selector.match_labels.as_ref().unwrap()) && x.spec.endpoints[0].path == "/metrics"));

    // RBAC: namespaced Roles that read Argo CD Applications (in Argo CD's namespace) and
    // Deployments, pods and their logs (in an application's), nothing else, and write nothing but
    // an Application's refresh annotation (`patch` on applications, nothing else); each bound to
    // promote's service account in its own namespace.
    let mut granted: Vec<String> = Vec::new();
    for role in &m.roles {
        let ns = role.metadata.namespace.clone().unwrap();
        assert_ne!(ns, "promote", "a Role in promote's own namespace reads nothing promote needs");
        for r in role.rules.clone().unwrap() {
            let applications = r.resources.as_ref().is_some_and(|x| x == &["applications".to_string()]);
            for v in &r.verbs {
                assert!(["get", "list", "watch"].contains(&v.as_str()) || (v == "patch" && applications), "a write verb: {v} on {:?}", r.resources);
            }
            for g in r.api_groups.as_ref().unwrap() {
                for res in r.resources.as_ref().unwrap() {
                    granted.push(format!("{ns}: {g}/{res}"));
                }
            }
        }
        let binding = m.bindings.iter().find(|b| b.metadata.namespace == role.metadata.namespace).unwrap_or_else(|| panic!("a RoleBinding in {ns}"));
        assert_eq!((binding.role_ref.kind.as_str(), binding.role_ref.name.as_str()), ("Role", role.metadata.name.as_deref().unwrap()));
        let subject = &binding.subjects.as_ref().unwrap()[0];
        assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), (m.accounts[0].metadata.name.as_deref().unwrap(), Some("promote")));
    }
    granted.sort();
    assert_eq!(granted, ["argocd: argoproj.io/applications", "checkout: /pods", "checkout: /pods/log", "checkout: apps/deployments"]);
    assert_eq!(pod.service_account_name.as_deref(), m.accounts[0].metadata.name.as_deref());
}

/// Every file under `dir`, as paths relative to it, sorted.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// The `kubectl create configmap promote-pipelines` command of docs/operations.md: its
/// `--from-file=KEY=PATH` pairs.
fn documented_configmap() -> BTreeMap<String, String> {
    let docs = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let joined = docs.replace("\\\n", " ");
    let line = joined.lines().find(|l| l.contains("create configmap promote-pipelines")).expect("docs/operations.md says how to make the pipelines ConfigMap");
    line.split_whitespace()
        .filter_map(|w| w.strip_prefix("--from-file="))
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("--from-file={kv}: name each key, or sub-folders are lost"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn the_pipelines_the_pod_mounts_validate_as_the_pod_reads_them() {
    let d = manifests().deployment.unwrap();
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    let folder = args.windows(2).find(|w| w[0] == "--pipelines").map(|w| w[1].clone()).expect("--pipelines");
    let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == folder).expect("the pipelines folder is a mount");
    let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == mount.name).unwrap();
    let source = volume.projected.as_ref().expect("a projected volume").sources.iter().flatten().find_map(|s| s.config_map.as_ref()).unwrap();
    let items = source.items.clone().expect("items put each key back at its path");

    // The ConfigMap as the documented command makes it holds every file of pipelines/, and the
    // volume puts every key of it somewhere.
    let configmap = documented_configmap();
    let mut documented: Vec<String> = configmap.values().cloned().collect();
    documented.sort();
    let shipped: Vec<String> = files_under(&root().join("pipelines")).into_iter().map(|f| format!("pipelines/{f}")).collect();
    assert_eq!(documented, shipped, "the documented ConfigMap leaves out a file of pipelines/");
    let mut mapped: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    mapped.sort();
    assert_eq!(mapped, configmap.keys().map(String::as_str).collect::<Vec<_>>(), "a key of the ConfigMap the volume does not mount");

    // The folder as the pod sees it, each item at its path; read as `promote serve` reads it.
    let pod_root = tempfile::tempdir().unwrap();
    let seen = pod_root.path().join(folder.trim_start_matches('/'));
    for i in &items {
        let to = seen.join(&i.path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root().join(&configmap[&i.key]), &to).unwrap();
    }
    assert_eq!(files_under(&seen), files_under(&root().join("pipelines")), "the pod sees the repo's layout");
    let out = Command::new(crate::promote_bin()).arg("validate").arg(&seen).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("checkout.yaml: ok"), "{}", String::from_utf8_lossy(&out.stdout));

    // What `kubectl create configmap --from-file=pipelines/` gave: the top folder's files only;
    // the users file and the policies are gone and the pipeline does not load.
    let flat = tempfile::tempdir().unwrap();
    for f in files_under(&root().join("pipelines")).iter().filter(|f| !f.contains('/')) {
        std::fs::copy(root().join("pipelines").join(f), flat.path().join(f)).unwrap();
    }
    let out = Command::new(crate::promote_bin()).arg("validate").arg(flat.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
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

#[test]
fn a_replica_started_before_its_database_waits_for_it_saying_so() {
    let pg = crate::pg::Postgres::start();
    pg.stop();
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, format!("postgres://promote@127.0.0.1:{}/promote\n", pg.port)).unwrap();
    let promote = |wait: &str| {
        let mut c = Command::new(crate::promote_bin());
        c.current_dir(dir.path())
            .env_remove("PROMOTE_DATABASE_URL")
            .env("PROMOTE_DATABASE_URL_FILE", &url_file)
            .env("PROMOTE_DATABASE_WAIT", wait)
            .env("PROMOTE_KEY_FILE", dir.path().join("key"))
            .args(["status", "--log-format", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    // Nobody answers within the wait: exit 1, naming the wait, after trying more than once.
    let started = std::time::Instant::now();
    let out = promote("2").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "it waited: {:?}", started.elapsed());
    assert!(err.contains("the database did not answer for") && err.contains("PROMOTE_DATABASE_WAIT"), "{err}");
    let tries: Vec<serde_json::Value> = err.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(tries.len() >= 2 && tries.iter().all(|t| t["fields"]["message"].as_str().unwrap_or("").starts_with("waiting for the database")), "{err}");
    assert!(!err.contains('\u{1b}'), "no colours off a terminal: {err:?}");
    assert!(!dir.path().join(".promote/state.db").exists(), "no SQLite state instead");

    // The database comes up while it waits: it carries on, and says so.
    let child = promote("60").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    pg.start_server();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("waiting for the database") && err.contains("the database answers"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no runs yet in postgres://promote@127.0.0.1"), "{}", String::from_utf8_lossy(&out.stdout));
}
