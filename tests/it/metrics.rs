//! The `metrics` stage against a real Prometheus (Debian's package, started per test on a
//! loopback port with backfilled series): pass, fail, inconclusive (a person decides), no data,
//! NaN, a bad query, Prometheus dying mid-analysis, and Kayenta comparisons.

use std::sync::Arc;
use std::time::Duration;

use promote::store::{RunState, StageState};

use crate::exec::{Setup, drive, promote, stage, text};
use crate::prom::{Prometheus, series};

/// A metrics stage `check` over `prom` with these checks (YAML list items, indented by 8).
fn pipeline(prom: &Prometheus, settings: &str, checks: &str) -> Setup {
    let stages =
        format!("  check:\n    metrics:\n      provider: {{prometheus: {{address: \"{}\", timeout: 2s}}}}\n{settings}      checks:\n{checks}", prom.url());
    Setup::new(&stages, "")
}

/// Deterministic noise: normal(mean, sd) from a seeded generator.
fn normal(seed: u64) -> impl FnMut(f64, f64) -> f64 {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    move |mean, sd| {
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (u1, u2) = (next(), next());
        mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn evidence(s: &promote::store::StageRecord) -> &serde_json::Value {
    &s.output.as_ref().expect("the stage keeps its evidence")["metrics"]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_release_passes_and_the_evidence_shows_every_value() {
    let prom = Prometheus::start(&[("success_rate", series("success_rate", "version=\"2.0.0\"", 600.0, 0.0, 15.0, |_| 0.995))]);
    let s = pipeline(
        &prom,
        "      interval: 100ms\n      count: 3\n",
        "        - name: success-rate\n          query: success_rate{version=\"${version}\"}\n          successCondition: result[0] >= 0.95\n",
    );
    let exec = s.executor().await;
    let id = s.start(&exec, "2.0.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Succeeded, "{sum:?}\n{}", prom.log());
    let check = &evidence(stage(&sum, "check"))["checks"][0];
    assert_eq!(check["phase"], "Successful");
    assert_eq!(check["tally"]["count"], 3);
    let ms = check["measurements"].as_array().unwrap();
    assert_eq!(ms.len(), 3);
    for m in ms {
        assert_eq!(m["value"], serde_json::json!([0.995]));
    }
    // The reason is written when it changes: here once.
    assert_eq!(ms[0]["why"], "result = [0.995]: successCondition `result[0] >= 0.95` is true");
    assert!(ms[1].get("why").is_none() && ms[2].get("why").is_none());
    // Measurements are `interval` apart.
    let at: Vec<i64> = ms.iter().map(|m| m["at"].as_i64().unwrap()).collect();
    assert!(at[1] - at[0] >= 100 && at[2] - at[1] >= 100, "{at:?}");
    assert_eq!(stage(&sum, "check").message.as_deref(), Some("success-rate: Successful: result = [0.995]: successCondition `result[0] >= 0.95` is true"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_release_fails_naming_the_value_and_the_condition_and_is_rolled_back() {
    let prom = Prometheus::start(&[("error_rate", series("error_rate", "", 600.0, 0.0, 15.0, |_| 0.2))]);
    let stages = format!(
        "  deploy-qa:\n    deploy: {{environment: qa}}\n  check:\n    needs: [deploy-qa]\n    metrics:\n      provider: {{prometheus: {{address: \"{}\"}}}}\n      interval: 50ms\n      count: 5\n      checks:\n        - name: errors\n          query: error_rate\n          failureCondition: result[0] > 0.05\n          failureLimit: 1\n",
        prom.url()
    );
    let s = Setup::new(&stages, "onFailure: {rollback: true}\n");
    let exec = s.executor().await;
    let id = s.start(&exec, "2.1.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Failed);
    let check = stage(&sum, "check");
    assert_eq!(check.state, StageState::Failed);
    let msg = check.message.as_deref().unwrap();
    assert!(msg.contains("errors: Failed: failed (2) > failureLimit (1)"), "{msg}");
    assert!(msg.contains("result = [0.2]: failureCondition `result[0] > 0.05` is true"), "{msg}");
    // Two failures were enough: it stopped early rather than taking all 5.
    assert_eq!(evidence(check)["checks"][0]["tally"]["count"], 2);
    // The QA deploy was reverted.
    assert_eq!(s.commits("qa").len(), 2, "{:?}", s.commits("qa"));
    assert!(s.commits("qa")[0].starts_with("roll back checkout in qa to 1.0.0"), "{:?}", s.commits("qa"));
}

#[tokio::test(flavor = "multi_thread")]
async fn inconclusive_waits_for_a_person_who_sees_the_evidence() {
    let prom = Prometheus::start(&[("latency_p99", series("latency_p99", "", 600.0, 0.0, 15.0, |_| 0.3))]);
    let s = pipeline(
        &prom,
        "      interval: 50ms\n      approvers: [alice]\n",
        "        - name: p99\n          query: latency_p99\n          successCondition: result[0] < 0.25\n          failureCondition: result[0] > 0.5\n",
    );
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "2.2.0").await;
    let (e2, id2) = (exec.clone(), id.clone());
    let task = tokio::spawn(async move { drive(&e2, &id2).await });
    let waiting = wait_for(&exec, &id, "check", StageState::Waiting).await;
    let msg = waiting.message.unwrap();
    assert!(msg.contains("inconclusive, a person decides: promote approve"), "{msg}");
    assert!(msg.contains("neither successCondition `result[0] < 0.25` nor failureCondition `result[0] > 0.5` is true"), "{msg}");
    assert!(msg.contains("result = [0.3]"), "{msg}");
    // Only a named decider may decide.
    let dir = s.path().to_path_buf();
    let out = promote(&dir, &["approve", &id, "check", "--as", "bob"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = promote(&dir, &["approve", &id, "check", "--as", "alice", "--comment", "p99 is fine for this release"]);
    assert!(out.status.success(), "{}", text(&out));
    let sum = task.await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded);
    assert_eq!(evidence(stage(&sum, "check"))["decidedBy"]["user"], "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_data_and_nan_never_pass() {
    let prom = Prometheus::start(&[("ratio", series("ratio", "", 600.0, 0.0, 15.0, |_| f64::NAN))]);
    // A failure condition over NaN is false, and `all` over nothing is true: both would pass silently.
    let s = pipeline(
        &prom,
        "      interval: 50ms\n",
        "        - name: nan\n          query: ratio\n          failureCondition: result[0] > 0.05\n        - name: missing\n          query: no_such_metric\n          failureCondition: \"!result.all(x, x < 0.05)\"\n",
    );
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "2.3.0").await;
    let (e2, id2) = (exec.clone(), id.clone());
    let task = tokio::spawn(async move { drive(&e2, &id2).await });
    let msg = wait_for(&exec, &id, "check", StageState::Waiting).await.message.unwrap();
    assert!(msg.contains("nan: Inconclusive: inconclusive (1) > inconclusiveLimit (0); last: the result contains NaN"), "{msg}");
    assert!(msg.contains("missing: Inconclusive: inconclusive (1) > inconclusiveLimit (0); last: no data: the query returned no series"), "{msg}");
    let out = promote(s.path(), &["reject", &id, "check", "--as", "alice", "--reason", "no traffic: cannot tell"]);
    assert!(out.status.success(), "{}", text(&out));
    let sum = task.await.unwrap();
    assert_eq!(sum.run.state, RunState::Failed);
    assert!(stage(&sum, "check").message.as_deref().unwrap().starts_with("inconclusive, rejected by alice: no traffic: cannot tell"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_query_is_an_error_with_prometheus_own_words() {
    let prom = Prometheus::start(&[("up2", series("up2", "", 60.0, 0.0, 15.0, |_| 1.0))]);
    let s = pipeline(
        &prom,
        "      interval: 20ms\n",
        "        - name: broken\n          query: sum(rate(http_requests_total[5m])\n          successCondition: result[0] < 1\n",
    );
    let exec = s.executor().await;
    let id = s.start(&exec, "2.4.0").await;
    let sum = drive(&exec, &id).await;
    let check = stage(&sum, "check");
    assert_eq!(check.state, StageState::Failed);
    let msg = check.message.as_deref().unwrap();
    assert!(msg.contains("broken: Error: consecutive errors (5) > consecutiveErrorLimit (4)"), "{msg}");
    assert!(msg.contains("query `sum(rate(http_requests_total[5m])` was refused by http://127.0.0.1:"), "{msg}");
    assert!(msg.contains("bad_data: invalid parameter \"query\": 1:"), "{msg}");
    assert!(msg.contains("parse error"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_dying_mid_analysis_errors_after_the_limit() {
    let mut prom = Prometheus::start(&[("success_rate", series("success_rate", "", 600.0, 0.0, 15.0, |_| 0.99))]);
    let s = pipeline(
        &prom,
        "      interval: 200ms\n      count: 50\n",
        "        - name: success\n          query: success_rate\n          successCondition: result[0] > 0.95\n          consecutiveErrorLimit: 2\n",
    );
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "2.5.0").await;
    let (e2, id2) = (exec.clone(), id.clone());
    let task = tokio::spawn(async move { drive(&e2, &id2).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    prom.kill();
    let sum = task.await.unwrap();
    assert_eq!(sum.run.state, RunState::Failed);
    let check = stage(&sum, "check");
    let ev = &evidence(check)["checks"][0];
    let phases: Vec<&str> = ev["measurements"].as_array().unwrap().iter().map(|m| m["phase"].as_str().unwrap()).collect();
    assert!(phases.len() >= 4 && phases[0] == "Successful", "{phases:?}");
    assert_eq!(&phases[phases.len() - 3..], ["Error", "Error", "Error"], "{phases:?}");
    let msg = check.message.as_deref().unwrap();
    assert!(msg.contains("success: Error: consecutive errors (3) > consecutiveErrorLimit (2)"), "{msg}");
    assert!(msg.contains("could not connect"), "{msg}");
}

/// 40 minutes of latency: the 30 before the last 10 are the baseline (mean 100 ms, sd 10); the
/// last 10 are the new version's, made by `after`.
fn latency(seed: u64, after: impl Fn(f64) -> f64) -> String {
    let mut n = normal(seed);
    series("latency_ms", "", 2400.0, 0.0, 15.0, |ago| if ago > 600.0 { n(100.0, 10.0) } else { after(n(100.0, 10.0)) })
}

fn compare_pipeline(prom: &Prometheus) -> Setup {
    pipeline(
        prom,
        "",
        "        - name: latency\n          query: latency_ms\n          compare: {baselineWindow: 30m, window: 10m, step: 15s, direction: increase}\n",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_baseline_comparison_catches_a_regression_beyond_the_baselines_own_noise_and_passes_noise() {
    // Same distribution after the deploy: noise as large as the baseline's own.
    for seed in 1..=3 {
        let prom = Prometheus::start(&[("latency_ms", latency(seed, |v| v))]);
        let s = compare_pipeline(&prom);
        let exec = s.executor().await;
        let id = s.start(&exec, "3.0.0").await;
        let sum = drive(&exec, &id).await;
        let check = stage(&sum, "check");
        assert_eq!(sum.run.state, RunState::Succeeded, "seed {seed}: {:?}", check.message);
        let cmp = &evidence(check)["checks"][0]["comparison"];
        assert_eq!(cmp["class"], "Pass");
        assert!(cmp["nNew"].as_u64().unwrap() >= 39 && cmp["nBaseline"].as_u64().unwrap() >= 119, "{cmp}");
        assert_eq!(evidence(check)["score"]["score"], 100.0);
    }
    // 30% slower after the deploy: the mean moves 3 of the baseline's standard deviations (a 20%
    // move, 2 sd, is within what real series do on their own: docs/metrics.md).
    let prom = Prometheus::start(&[("latency_ms", latency(7, |v| v * 1.3))]);
    let s = compare_pipeline(&prom);
    let exec = s.executor().await;
    let id = s.start(&exec, "3.1.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Failed);
    let check = stage(&sum, "check");
    let msg = check.message.as_deref().unwrap();
    assert!(msg.contains("latency: Failed") && msg.contains("compared with the baseline: High: mean "), "{msg}");
    assert!(msg.contains("significant (p < 0.02) and material (the mean moved more than 2.5 baseline sd)"), "{msg}");
    assert!(msg.contains("score 0 < marginal 75"), "{msg}");
    let cmp = &evidence(check)["checks"][0]["comparison"];
    let (lower, ratio) = (cmp["lower"].as_f64().unwrap(), cmp["ratio"].as_f64().unwrap());
    assert!(lower > 10.0 && (1.2..1.4).contains(&ratio), "{cmp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_baseline_query_compares_old_and_new_versions_side_by_side() {
    let (mut a, mut b) = (normal(11), normal(12));
    let old = series("req_latency", "version=\"old\"", 900.0, 0.0, 15.0, |_| a(200.0, 20.0));
    let new = series("req_latency", "version=\"new\"", 900.0, 0.0, 15.0, |_| b(150.0, 20.0));
    let prom = Prometheus::start(&[("req_latency", format!("{old}{new}"))]);
    // Faster is fine when only an increase is bad; with `either`, a change this large fails.
    for (direction, ok) in [("increase", true), ("either", false)] {
        let s = pipeline(
            &prom,
            "",
            &format!(
                "        - name: latency\n          query: req_latency{{version=\"new\"}}\n          compare: {{baselineQuery: 'req_latency{{version=\"old\"}}', window: 10m, step: 15s, direction: {direction}, critical: true}}\n"
            ),
        );
        let exec = s.executor().await;
        let id = s.start(&exec, "3.2.0").await;
        let sum = drive(&exec, &id).await;
        let check = stage(&sum, "check");
        assert_eq!(sum.run.state == RunState::Succeeded, ok, "{direction}: {:?}", check.message);
        if !ok {
            assert!(check.message.as_deref().unwrap().contains("score 0: critical metric `latency`: Low: "), "{:?}", check.message);
        }
    }
}

/// Polls the store until `stage` is in `state`.
async fn wait_for(exec: &promote::exec::Executor, run: &str, name: &str, state: StageState) -> promote::store::StageRecord {
    for _ in 0..500 {
        let s = exec.store.stages(run).await.unwrap().into_iter().find(|s| s.name == name).unwrap();
        if s.state == state {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("stage {name} never became {state}");
}

/// A bcrypt hash of `test-only-password-7f3a` (made with Python's bcrypt, 4 rounds): Prometheus'
/// `basic_auth_users` keep hashes, never passwords.
const WEB_CONFIG: &str = "basic_auth_users:\n  promote: $2b$04$idqqlXtRPACanialEbynvevFhktahSbwyBeNUen81obzJkerssUBW\n";

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_behind_basic_auth_gets_the_password_from_a_file_and_never_shows_it() {
    let prom = Prometheus::start_with(&[("up3", series("up3", "", 60.0, 0.0, 15.0, |_| 1.0))], Some(WEB_CONFIG));
    for (password, ok) in [("test-only-password-7f3a\n", true), ("wrong-password-9c1d", false)] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, password).unwrap();
        let stages = format!(
            "  check:\n    metrics:\n      provider: {{prometheus: {{address: \"{}\", auth: {{username: promote, passwordFile: \"{}\"}}}}}}\n      checks:\n        - name: up\n          query: up3\n          successCondition: result[0] == 1.0\n          consecutiveErrorLimit: 0\n",
            prom.url(),
            file.display()
        );
        let s = Setup::new(&stages, "");
        let exec = s.executor().await;
        let id = s.start(&exec, "5.0.0").await;
        let sum = drive(&exec, &id).await;
        let msg = stage(&sum, "check").message.clone().unwrap_or_default();
        assert_eq!(sum.run.state == RunState::Succeeded, ok, "{msg}");
        if !ok {
            assert!(msg.contains("HTTP 401 Unauthorized"), "{msg}");
            assert!(!msg.contains("wrong-password-9c1d"), "the password never shows: {msg}");
        }
    }
    // A password file that is not there fails the stage before any query, naming the file.
    let stages = format!(
        "  check:\n    metrics:\n      provider: {{prometheus: {{address: \"{}\", auth: {{username: promote, passwordFile: /nonexistent/promote-password}}}}}}\n      checks:\n        - name: up\n          query: up3\n          successCondition: result[0] == 1.0\n",
        prom.url()
    );
    let s = Setup::new(&stages, "");
    let exec = s.executor().await;
    let id = s.start(&exec, "5.0.1").await;
    let sum = drive(&exec, &id).await;
    let msg = stage(&sum, "check").message.clone().unwrap();
    assert!(msg.starts_with("credentials: the password file /nonexistent/promote-password cannot be read"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_provider_reads_json_with_a_bearer_token_and_a_json_path() {
    use axum::http::{HeaderMap, StatusCode};
    // A real local JSON endpoint that wants `Authorization: Bearer tok-5e1f`.
    let app = axum::Router::new().route(
        "/stats",
        axum::routing::get(|headers: HeaderMap, axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok-5e1f") {
                return (StatusCode::UNAUTHORIZED, "no".to_string());
            }
            let q = q.unwrap_or_default();
            let rate = if q.contains("errors%3Dcheckout") { 0.01 } else { 0.5 };
            (StatusCode::OK, serde_json::json!({"data": {"series": [{"name": q, "value": rate}]}}).to_string())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    for (token, ok) in [("tok-5e1f", true), ("tok-bad0", false)] {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, token).unwrap();
        let stages = format!(
            "  check:\n    metrics:\n      provider:\n        web: {{url: \"http://127.0.0.1:{port}/stats?q=${{query}}\", jsonPath: \"$.data.series[0].value\", auth: {{bearerTokenFile: \"{}\"}}}}\n      checks:\n        - name: errors\n          query: errors=checkout\n          successCondition: result < 0.05\n          consecutiveErrorLimit: 0\n",
            token_file.display()
        );
        let s = Setup::new(&stages, "");
        let exec = s.executor().await;
        let id = s.start(&exec, "5.1.0").await;
        let sum = drive(&exec, &id).await;
        let check = stage(&sum, "check");
        let msg = check.message.clone().unwrap_or_default();
        assert_eq!(sum.run.state == RunState::Succeeded, ok, "{msg}");
        if ok {
            assert_eq!(evidence(check)["checks"][0]["measurements"][0]["value"], 0.01);
        } else {
            assert!(
                msg.contains(&format!("query `errors=checkout` was refused by http://127.0.0.1:{port}/stats?q=[redacted]: HTTP 401 Unauthorized")),
                "{msg}"
            );
            assert!(!msg.contains("tok-bad0"), "{msg}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_baseline_query_names_the_version_the_environment_held_before() {
    // The old version (what QA held: 1.0.0) and the new one serve side by side; the new one is
    // 3 sd slower.
    let mut n = normal(11);
    let mut m = normal(12);
    let old = series("latency_ms", "version=\"1.0.0\"", 600.0, 0.0, 15.0, |_| n(100.0, 10.0));
    let new = series("latency_ms", "version=\"1.1.0\"", 600.0, 0.0, 15.0, |_| m(130.0, 10.0));
    let prom = Prometheus::start(&[("latency_ms", format!("{old}{new}"))]);
    let stages = format!(
        "  qa:\n    deploy: {{environment: qa}}\n  check:\n    needs: [qa]\n    metrics:\n      provider: {{prometheus: {{address: \"{}\", timeout: 2s}}}}\n      checks:\n        - name: latency\n          query: latency_ms{{version=\"${{version}}\"}}\n          compare: {{baselineQuery: 'latency_ms{{version=\"${{previousVersion}}\"}}', window: 10m, step: 15s}}\n",
        prom.url()
    );
    let s = Setup::new(&stages, "");
    let exec = s.executor().await;
    let id = s.start(&exec, "1.1.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Failed, "{:?}", stage(&sum, "check").message);
    let cmp = &evidence(stage(&sum, "check"))["checks"][0]["comparison"];
    assert_eq!(cmp["class"], "High", "{cmp}");
    assert!(cmp["nBaseline"].as_u64().unwrap() >= 39, "the baseline is 1.0.0's series: {cmp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn as_in_argo_an_inconclusive_check_stops_the_others_which_count_as_successful() {
    let prom = Prometheus::start(&[("ratio", series("ratio", "", 600.0, 0.0, 15.0, |_| f64::NAN)), ("errs", series("errs", "", 600.0, 0.0, 15.0, |_| 0.01))]);
    let s = pipeline(
        &prom,
        "      interval: 200ms\n",
        "        - name: ratio\n          query: ratio\n          failureCondition: result[0] > 0.05\n        - name: errors\n          query: errs\n          count: 20\n          failureCondition: result[0] > 0.05\n",
    );
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "2.4.0").await;
    let (e2, id2) = (exec.clone(), id.clone());
    let task = tokio::spawn(async move { drive(&e2, &id2).await });
    let msg = wait_for(&exec, &id, "check", StageState::Waiting).await.message.unwrap();
    assert!(msg.contains("ratio: Inconclusive"), "{msg}");
    assert!(msg.contains("errors: Successful: stopped when another check decided the analysis, having passed no limit"), "{msg}");
    let out = promote(s.path(), &["approve", &id, "check", "--as", "alice"]);
    assert!(out.status.success(), "{}", text(&out));
    let sum = task.await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded);
    let errors = &evidence(stage(&sum, "check"))["checks"][1];
    assert!(errors["measurements"].as_array().unwrap().len() < 20, "stopped early: {errors}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_answer_that_is_not_json_is_judged_as_a_string() {
    use axum::routing::get;
    let app = axum::Router::new().route("/ok", get(|| async { "OK\n" })).route("/degraded", get(|| async { "DEGRADED" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    for (path, ok) in [("ok", true), ("degraded", false)] {
        let stages = format!(
            "  check:\n    metrics:\n      provider: {{web: {{url: \"http://127.0.0.1:{port}/{path}\"}}}}\n      checks:\n        - name: status\n          query: status\n          successCondition: result == \"OK\"\n"
        );
        let s = Setup::new(&stages, "");
        let exec = s.executor().await;
        let id = s.start(&exec, "5.2.0").await;
        let sum = drive(&exec, &id).await;
        let msg = stage(&sum, "check").message.clone().unwrap_or_default();
        assert_eq!(sum.run.state == RunState::Succeeded, ok, "{path}: {msg}");
        assert!(msg.contains("successCondition `result == \"OK\"`"), "{msg}");
    }
}

#[test]
fn a_limit_that_count_could_never_pass_is_refused_as_argo_refuses_it() {
    let s = Setup::new(
        "  check:\n    metrics:\n      provider: {prometheus: {address: \"http://127.0.0.1:9\"}}\n      checks:\n        - name: errors\n          query: errs\n          count: 1\n          failureLimit: 3\n          successCondition: result[0] < 0.05\n",
        "",
    );
    let out = promote(s.path(), &["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("check `errors`: `count: 1` is less than `failureLimit: 3`"), "{}", text(&out));
}

#[test]
fn previous_version_is_refused_where_it_has_no_value() {
    let s = Setup::new("  qa:\n    deploy:\n      environment: qa\n      health: {http: {url: \"http://127.0.0.1:9/${previousVersion}\"}}\n", "");
    let out = promote(s.path(), &["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("`${previousVersion}` has a value only in `metrics`, `logs` and `webhook` stages and in watches"), "{}", text(&out));
    assert!(text(&out).contains("pipeline.yaml:"), "{}", text(&out));
}
