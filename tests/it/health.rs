//! `deploy` health after the commit: an HTTP endpoint (a real local server), and an Argo CD
//! Application and a Deployment read through kube.
//!
//! FAKE: no Kubernetes API server can run here, so the kube tests use an in-process fake API
//! server that answers the real paths (`/apis/argoproj.io/v1alpha1/namespaces/NS/applications/NAME`,
//! `/apis/apps/v1/namespaces/NS/deployments/NAME`, `/api/v1/namespaces/NS/pods` and a pod's `log`)
//! with the real JSON objects and log text, reached through a real kubeconfig (KUBECONFIG) by the
//! real kube client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use promote::store::{RunState, StageState};
use serde_json::json;

use crate::exec::{Setup, drive, stage};

type Objects = Arc<Mutex<HashMap<String, serde_json::Value>>>;

/// The fake API server, shared by the tests of this module (KUBECONFIG is process-wide); each test
/// uses its own object names.
fn api() -> &'static Objects {
    static API: OnceLock<Objects> = OnceLock::new();
    API.get_or_init(|| {
        let objects: Objects = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = objects.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let not_found = |kind: &str, name: &str| {
                    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound", "code": 404});
                    (StatusCode::NOT_FOUND, Json(body)).into_response()
                };
                async fn get(objects: &Objects, key: String) -> Option<serde_json::Value> {
                    objects.lock().unwrap().get(&key).cloned()
                }
                fn count(objects: &Objects, key: String) {
                    let mut all = objects.lock().unwrap();
                    let n = all.get(&key).and_then(|v| v.as_u64()).unwrap_or(0);
                    all.insert(key, json!(n + 1));
                }
                let app = axum::Router::new()
                    .route(
                        "/apis/argoproj.io/v1alpha1/namespaces/{ns}/applications/{name}",
                        axum::routing::get(move |State(o): State<Objects>, UrlPath((ns, name)): UrlPath<(String, String)>| async move {
                            count(&o, format!("gets/applications/{ns}/{name}"));
                            match get(&o, format!("applications/{ns}/{name}")).await {
                                Some(v) => Json(v).into_response(),
                                None => not_found("applications.argoproj.io", &name),
                            }
                        })
                        // A merge patch of the annotations, as `kubectl annotate` sends it.
                        .patch(move |State(o): State<Objects>, UrlPath((ns, name)): UrlPath<(String, String)>, headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                            assert_eq!(headers["content-type"], "application/merge-patch+json");
                            let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            count(&o, format!("patches/applications/{ns}/{name}"));
                            o.lock().unwrap().insert(format!("patch/applications/{ns}/{name}"), patch.clone());
                            let key = format!("applications/{ns}/{name}");
                            let mut all = o.lock().unwrap();
                            let Some(app) = all.get_mut(&key) else { return not_found("applications.argoproj.io", &name) };
                            for (k, v) in patch["metadata"]["annotations"].as_object().unwrap() {
                                app["metadata"]["annotations"][k] = v.clone();
                            }
                            Json(app.clone()).into_response()
                        }),
                    )
                    .route(
                        "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
                        axum::routing::get(move |State(o): State<Objects>, UrlPath((ns, name)): UrlPath<(String, String)>| async move {
                            match get(&o, format!("deployments/{ns}/{name}")).await {
                                Some(v) => Json(v).into_response(),
                                None => not_found("deployments.apps", &name),
                            }
                        }),
                    )
                    .route(
                        "/api/v1/namespaces/{ns}/pods",
                        axum::routing::get(move |State(o): State<Objects>, UrlPath(ns): UrlPath<String>, axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
                            // Only the selector the test registered answers: proves it was sent.
                            let key = format!("pods/{ns}?{}", q.unwrap_or_default());
                            match get(&o, key).await {
                                Some(v) => Json(v).into_response(),
                                None => Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": []})).into_response(),
                            }
                        }),
                    )
                    .route(
                        "/api/v1/namespaces/{ns}/pods/{name}/log",
                        axum::routing::get(move |State(o): State<Objects>, UrlPath((ns, name)): UrlPath<(String, String)>| async move {
                            // Lines stored as [ms ago, text]: stamped at the time of the request, as a kubelet would.
                            match get(&o, format!("logs/{ns}/{name}")).await {
                                Some(v) => {
                                    let now = promote::clock::now_ms();
                                    let text: String = v.as_array().unwrap().iter().map(|l| format!("{} {}\n", rfc3339(now - l[0].as_i64().unwrap()), l[1].as_str().unwrap())).collect();
                                    text.into_response()
                                }
                                None => not_found("pods", &name),
                            }
                        }),
                    )
                    .with_state(shared);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap().port()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let port = rx.recv().unwrap();
        let dir = std::env::temp_dir().join(format!("promote-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config");
        std::fs::write(
            &config,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n- name: elsewhere\n  cluster: {{server: \"http://127.0.0.1:9\"}}\nusers:\n- name: me\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: me}}\n- name: elsewhere\n  context: {{cluster: elsewhere, user: me}}\ncurrent-context: fake\n"
            ),
        )
        .unwrap();
        // SAFETY: set once, before any kube client of this process reads it.
        unsafe { std::env::set_var("KUBECONFIG", &config) };
        objects
    })
}

/// Unix ms as the Kubernetes API writes times (RFC 3339, UTC, nanoseconds).
fn rfc3339(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}000000Z", rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000)
}

fn put(key: &str, value: serde_json::Value) {
    api().lock().unwrap().insert(key.to_string(), value);
}

/// An Argo CD Application as the API returns it.
fn application(name: &str, sync: &str, revision: &str, health: &str, operation: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd", "resourceVersion": "1", "uid": "8d1c3b0e-0000-4000-8000-000000000001"},
        "spec": {"project": "default", "source": {"repoURL": "https://git.example.com/envs/qa.git", "path": "app", "targetRevision": "main"},
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop"}},
        "status": {"sync": {"status": sync, "revision": revision}, "health": {"status": health}, "operationState": operation},
    })
}

/// A Deployment as the API returns it.
fn deployment(name: &str, image: &str, generation: i64, observed: i64, updated: i32, total: i32, available: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "generation": generation, "resourceVersion": "7", "uid": "8d1c3b0e-0000-4000-8000-000000000002"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": image}]}}},
        "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated, "availableReplicas": available, "readyReplicas": available,
                   "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": "progressing"}]},
    })
}

fn setup(health: &str) -> Setup {
    Setup::new(&format!("  deploy-qa:\n    deploy:\n      environment: qa\n      health:\n{health}"), "onFailure: {rollback: true}\n")
}

/// The newest commit of env `qa` once it is not the initial one.
async fn promotion_commit(s: &Setup) -> String {
    let bare = s.path().join("envs/qa.git");
    for _ in 0..500 {
        // One read of both (the ref may move between two commands).
        let head = crate::repos::git(&bare, &["log", "-1", "--format=%H %s", "main"]);
        if let Some((sha, subject)) = head.trim().split_once(' ')
            && subject.starts_with("promote ")
        {
            return sha.to_string();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no promotion commit");
}

#[tokio::test(flavor = "multi_thread")]
async fn argocd_health_waits_for_the_promotion_commit_synced_and_healthy() {
    put("applications/argocd/checkout-a", application("checkout-a", "Synced", "0000000000000000000000000000000000000000", "Healthy", json!(null)));
    let s = setup("        argocd: {application: checkout-a}\n        timeout: 20s\n");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "4.0.0").await;
    let (e2, id2) = (exec.clone(), id.clone());
    let task = tokio::spawn(async move { drive(&e2, &id2).await });
    let commit = promotion_commit(&s).await;
    // Synced and Healthy, but at the old revision: not yet. Then Argo CD catches up, still Progressing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = exec.store.stages(&id).await.unwrap().into_iter().find(|x| x.name == "deploy-qa").unwrap();
    assert_eq!(waiting.state, StageState::Waiting);
    assert!(waiting.message.as_deref().unwrap().contains("argocd checkout-a: Synced at revision 0000000000, waiting for "), "{waiting:?}");
    put("applications/argocd/checkout-a", application("checkout-a", "Synced", &commit, "Progressing", json!({"phase": "Succeeded"})));
    tokio::time::sleep(Duration::from_millis(200)).await;
    put("applications/argocd/checkout-a", application("checkout-a", "Synced", &commit, "Healthy", json!({"phase": "Succeeded"})));
    let sum = task.await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded, "{sum:?}");
    let out = stage(&sum, "deploy-qa").output.as_ref().unwrap();
    assert_eq!(out["health"][0], format!("argocd checkout-a: Synced and Healthy at revision {}", &commit[..10]));
    // Argo CD was asked to refresh right after the commit, not left to its next poll.
    assert_eq!(out["health"][1], "argocd checkout-a: refresh asked after the commit");
    let (patches, patch) = {
        let all = api().lock().unwrap();
        (all["patches/applications/argocd/checkout-a"].clone(), all["patch/applications/argocd/checkout-a"].clone())
    };
    assert_eq!(patches, 1, "one refresh asked");
    assert_eq!(patch, json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}}));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_argocd_check_asks_the_cluster_of_its_context() {
    // The Application is on the current context's cluster; the check names another context,
    // whose cluster does not answer: it is that cluster it asks (and so never becomes healthy).
    put("applications/argocd/checkout-z", application("checkout-z", "Synced", "0000000000000000000000000000000000000000", "Healthy", json!(null)));
    let s = setup("        argocd: {application: checkout-z, context: elsewhere}\n        timeout: 1s\n");
    let exec = s.executor().await;
    let id = s.start(&exec, "4.9.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Failed);
    let why = stage(&sum, "deploy-qa").message.clone().unwrap();
    assert!(why.contains("argocd checkout-z: Argo CD Application argocd/checkout-z: "), "{why}");
    assert!(api().lock().unwrap().get("gets/applications/argocd/checkout-z").is_none(), "the current context's cluster was never asked");
    // A context that the kubeconfig does not have is said as such.
    let s = setup("        argocd: {application: checkout-z, context: nowhere}\n        timeout: 1s\n");
    let exec = s.executor().await;
    let id = s.start(&exec, "4.9.1").await;
    let sum = drive(&exec, &id).await;
    let why = stage(&sum, "deploy-qa").message.clone().unwrap();
    assert!(why.contains("context `nowhere`"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_argocd_sync_fails_the_deploy_at_once_and_it_is_reverted() {
    put("applications/argocd/checkout-b", application("checkout-b", "OutOfSync", "0000000000000000000000000000000000000000", "Healthy", json!(null)));
    let s = setup("        argocd: {application: checkout-b}\n        timeout: 60s\n");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "4.1.0").await;
    let (e2, id2) = (exec.clone(), id.clone());
    let task = tokio::spawn(async move { drive(&e2, &id2).await });
    let commit = promotion_commit(&s).await;
    let op = json!({"phase": "Failed", "message": "one or more objects failed to apply: Deployment.apps \"checkout\" is invalid", "syncResult": {"revision": commit}});
    put("applications/argocd/checkout-b", application("checkout-b", "OutOfSync", &commit, "Degraded", op));
    let sum = tokio::time::timeout(Duration::from_secs(10), task).await.expect("fails without waiting for the 60s timeout").unwrap();
    assert_eq!(sum.run.state, RunState::Failed);
    let msg = stage(&sum, "deploy-qa").message.clone().unwrap();
    assert!(msg.contains("not healthy: argocd checkout-b: the sync failed (Failed): one or more objects failed to apply"), "{msg}");
    assert!(s.commits("qa")[0].starts_with("roll back checkout in qa"), "{:?}", s.commits("qa"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_must_finish_its_rollout_with_the_new_image() {
    let image = "registry.example.com/acme/checkout";
    put("deployments/shop/checkout-c", deployment("checkout-c", &format!("{image}:1.0.0"), 1, 1, 3, 3, 3));
    let s = setup("        kubernetes: {namespace: shop, deployment: checkout-c}\n        timeout: 20s\n");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "4.2.0").await;
    let (e2, id2) = (exec.clone(), id.clone());
    let task = tokio::spawn(async move { drive(&e2, &id2).await });
    promotion_commit(&s).await;
    // The operator applied the new spec: 1 of 3 updated, then 3 updated with an old pod left, then done.
    for (updated, total, available) in [(1, 4, 3), (3, 4, 3), (3, 3, 3)] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if updated < 3 || total > 3 {
            let st = exec.store.stages(&id).await.unwrap().into_iter().find(|x| x.name == "deploy-qa").unwrap();
            assert_eq!(st.state, StageState::Waiting, "{st:?}");
        }
        put("deployments/shop/checkout-c", deployment("checkout-c", &format!("{image}:4.2.0"), 2, 2, updated, total, available));
    }
    let sum = task.await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded, "{sum:?}");
    let health = &stage(&sum, "deploy-qa").output.as_ref().unwrap()["health"][0];
    assert_eq!(health, "deployment shop/checkout-c: rolled out: 3 of 3 replicas updated and available, running 4.2.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_not_reached_in_time_fails_with_what_was_seen_last() {
    let image = "registry.example.com/acme/checkout";
    put("deployments/shop/checkout-d", deployment("checkout-d", &format!("{image}:1.0.0"), 1, 1, 3, 3, 3));
    let s = setup("        kubernetes: {namespace: shop, deployment: checkout-d}\n        argocd: {application: nowhere}\n        timeout: 1s\n");
    let exec = s.executor().await;
    let id = s.start(&exec, "4.3.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Failed);
    let msg = stage(&sum, "deploy-qa").message.clone().unwrap();
    assert!(msg.contains("health not reached within 1.0s"), "{msg}");
    assert!(msg.contains("argocd nowhere: Argo CD Application argocd/nowhere: not found"), "{msg}");
    assert!(msg.contains("deployment shop/checkout-d: the pod template runs registry.example.com/acme/checkout:1.0.0, not 4.3.0 yet"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_health_waits_for_the_expected_status() {
    // A real local server: 503 for the first three requests, then 200.
    let hits = Arc::new(Mutex::new(0));
    let h2 = hits.clone();
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let hits = h2.clone();
            async move {
                let mut n = hits.lock().unwrap();
                *n += 1;
                if *n <= 3 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let s = setup(&format!("        http: {{url: \"http://127.0.0.1:{port}/healthz?v=${{version}}\"}}\n        timeout: 20s\n"));
    let exec = s.executor().await;
    let id = s.start(&exec, "4.4.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Succeeded, "{sum:?}");
    assert_eq!(*hits.lock().unwrap(), 4);
    let events = exec.store.events(&id).await.unwrap();
    assert!(
        events.iter().any(|e| e
            .detail
            .contains(&format!("health: http: http://127.0.0.1:{port}/healthz?v=[redacted] answered HTTP 503 Service Unavailable (expected 200)"))),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_from_the_pods_of_a_selector_are_split_at_the_deploy() {
    assert_eq!(rfc3339(1_795_643_800_123), "2026-11-25T21:56:40.123000000Z");
    assert_eq!(promote::providers::logsource::rfc3339_ms(&rfc3339(1_795_643_800_123)), Some(1_795_643_800_123));
    let pod = |name: &str| json!({"metadata": {"name": name, "namespace": "shop", "labels": {"app": "checkout-logs"}}, "spec": {"containers": [{"name": "app", "image": "x"}]}});
    put(
        "pods/shop?&labelSelector=app%3Dcheckout-logs",
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": [pod("checkout-1"), pod("checkout-2")]}),
    );
    // Before the deploy (1.4 s before the stage reads, with a 1 s window): normal lines; after it,
    // the same, and a new error on one pod.
    let normal = |ago: i64| (0..20).map(move |i| json!([ago + i, format!("INFO served request {i} in {} ms", 10 + i)]));
    let mut one: Vec<serde_json::Value> = normal(1400).chain(normal(500)).collect();
    one.push(json!([400, "ERROR payment provider timed out after 3000 ms: java.net.SocketTimeoutException"]));
    put("logs/shop/checkout-1", json!(one));
    put("logs/shop/checkout-2", json!(normal(1400).chain(normal(500)).collect::<Vec<_>>()));
    let s = Setup::new(
        "  deploy-qa:\n    deploy: {environment: qa}\n  analyse-logs:\n    needs: [deploy-qa]\n    logs:\n      source: {kubernetes: {namespace: shop, selector: app=checkout-logs}}\n      window: 1s\n",
        "",
    );
    let exec = s.executor().await;
    let id = s.start(&exec, "4.5.0").await;
    let sum = drive(&exec, &id).await;
    let st = stage(&sum, "analyse-logs");
    assert_eq!(st.state, StageState::Failed, "{:?}", st.message);
    let v = &st.output.as_ref().unwrap()["logs"]["verdict"];
    assert_eq!((v["linesBefore"].as_u64(), v["linesAfter"].as_u64()), (Some(40), Some(41)), "{v}");
    // One line is enough: the baseline never wrote a one-off error.
    let msg = st.message.as_deref().unwrap();
    assert!(
        msg.contains("java.net.SocketTimeoutException` new at error level, says `timed out` (1 line(s)")
            && msg.contains("the baseline's 0 one-off error template(s)"),
        "{msg}"
    );
    assert!(msg.contains("(0 before, 1 after"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_that_waited_for_its_environment_runs_again_before_it_commits_and_says_so_once() {
    // A real local server: 503 twice, then 200.
    let hits = Arc::new(Mutex::new(0));
    let h2 = hits.clone();
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let hits = h2.clone();
            async move {
                let mut n = hits.lock().unwrap();
                *n += 1;
                if *n <= 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let s = setup(&format!("        http: {{url: \"http://127.0.0.1:{port}/healthz\"}}\n        timeout: 20s\n"));
    let exec = std::sync::Arc::new(s.executor().await);
    // Another run holds qa until it ends.
    let holder = s.start(&exec, "5.5.4").await;
    assert_eq!(exec.store.lock_environment("qa", "checkout", &holder, true).await.unwrap(), promote::store::LockState::Taken);
    let id = s.start(&exec, "5.5.5").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    crate::exec::wait_for_state(&exec.store, &id, "deploy-qa", StageState::Waiting).await;
    exec.store.finish_run(&holder, RunState::Failed, Some("gave up")).await.unwrap();
    let sum = walker.await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded, "{sum:?}");
    let steps: Vec<String> = exec
        .store
        .events(&id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.stage.as_deref() == Some("deploy-qa"))
        .map(|e| e.detail.split(':').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(steps, ["started (attempt 1)", "waiting", "running again", "waiting", "running again", "succeeded"], "{steps:?}");
}
