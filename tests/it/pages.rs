//! Every web page on a desktop (1280x800) and a phone (320x640) in a real Chromium, checked by
//! axe-core (npm, tests/axe/) for WCAG 2.2 A and AA (target size included): no violation, and at
//! 320 CSS px nothing scrolls sideways (WCAG 1.4.10). The decision's page in a business person's
//! words; alice follows the inbox's link to it, approves through the confirmation that names the
//! action, and the run goes on to prod. Screenshots under target/ui-shots/.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, Locator};

use crate::exec::Setup;
use crate::server::{ALICE, Running, wait_for};
use crate::ui::{browser_at, screenshot, sign_in, text};

const BOB: &str = "prt_bob_not_an_approver_0002";

/// The WCAG tags axe-core checks.
const TAGS: [&str; 5] = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"];

fn axe_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/axe")
}

/// axe-core's script (installed with `npm ci` in tests/axe when missing). Missing under CI=true
/// fails the test; elsewhere the test is skipped with a word on stderr.
fn axe() -> Option<String> {
    let script = axe_dir().join("node_modules/axe-core/axe.min.js");
    if !script.exists() {
        let out = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(axe_dir()).output();
        let why = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!("`npm ci` in tests/axe failed: {}", String::from_utf8_lossy(&o.stderr))),
            Err(e) => Some(format!("`npm` could not run ({e}): Debian: apt-get install npm")),
        };
        if let Some(why) = why {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "the page tests need axe-core: {why} (.ci/run installs it)");
            eprintln!("SKIPPED: the page tests need axe-core: {why}");
            return None;
        }
    }
    Some(std::fs::read_to_string(script).unwrap())
}

/// axe-core's violations of the page shown, as lines (empty: none).
async fn violations(c: &Client, axe: &str) -> Vec<String> {
    c.execute(axe, vec![]).await.unwrap();
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}, resultTypes: ['violations']})
                .then(r => done(r.passes.length === 0 ? ['axe ran no rule'] : r.violations.map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ') + ' ' + (n.failureSummary || '').replace(/\\s+/g, ' ')).join(' | '))))
                .catch(e => done(['axe failed: ' + e]));",
            vec![serde_json::json!(TAGS)],
        )
        .await
        .unwrap();
    found.as_array().unwrap().iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
}

/// The page shown: axe-core finds nothing, and at `width` nothing is wider than the viewport.
async fn check(c: &Client, axe: &str, name: &str, width: u32, size: &str) {
    let wide = c.execute("return document.documentElement.scrollWidth", vec![]).await.unwrap().as_i64().unwrap();
    let inner = c.execute("return window.innerWidth", vec![]).await.unwrap().as_i64().unwrap();
    assert_eq!(inner, width as i64, "the viewport of {name} at {size}");
    assert!(wide <= width as i64, "{name} at {size} is {wide} px wide: it scrolls sideways");
    let found = violations(c, axe).await;
    assert!(found.is_empty(), "axe-core on {name} at {size}:\n{}", found.join("\n"));
    screenshot(c, &format!("{name}-{size}")).await;
}

/// A pipeline whose approval waits with a metrics analysis before it, and a server.
pub async fn waiting(port: u16) -> (Setup, Running, String) {
    let s = Setup::new(
        &format!(
            "  qa:\n    deploy: {{environment: qa}}\n  check-errors:\n    needs: [qa]\n    metrics:\n      provider:\n        web: {{url: \"http://127.0.0.1:{port}/stats?q=${{query}}\", jsonPath: \"$.value\"}}\n      checks:\n        - name: error-rate\n          query: errors\n          successCondition: result < 0.05\n          count: 3\n          interval: 100ms\n  sign-off:\n    needs: [check-errors]\n    approval: {{approvers: [alice], message: \"Release manager sign-off\", timeout: 48h}}\n  prod:\n    needs: [sign-off]\n    deploy: {{environment: prod}}\n"
        ),
        "users: users.yaml\naccess: {run: [alice, bob], rollback: [alice]}\n",
    );
    let hash = promote::governance::users::hash_token;
    std::fs::write(
        s.path().join("users.yaml"),
        format!(
            "users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n  bob: {{name: Bob, email: bob@example.com, token: \"{}\"}}\n",
            hash(ALICE),
            hash(BOB)
        ),
    )
    .unwrap();
    let server = Running::start(&s).await;
    let r = server
        .http
        .post(format!("{}/api/v1/runs", server.url))
        .bearer_auth(BOB)
        .json(&serde_json::json!({"pipeline": "checkout", "version": "1.7.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let started: serde_json::Value = r.json().await.unwrap();
    let id = started["run"]["id"].as_str().unwrap().to_string();
    wait_for("the sign-off", async || server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["stages"][2]["state"] == "waiting").await;
    (s, server, id)
}

/// Error rates as a JSON API: 0.4%, 1.1%, 0.7%, ...
pub async fn stats() -> u16 {
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/stats",
        axum::routing::get(move || {
            let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let v = [0.004, 0.011, 0.007, 0.009][n % 4];
            async move { serde_json::json!({"value": v}).to_string() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_passes_axe_at_desktop_and_phone_size_and_none_scrolls_sideways_at_320_px() {
    let Some(axe) = axe() else { return };
    let (_s, server, id) = waiting(stats().await).await;
    let url = server.url.clone();
    for (width, height, size) in [(1280, 800, "desktop"), (320, 640, "phone")] {
        let (_driver, c, _profile) = browser_at(width, height).await;
        c.goto(&format!("{url}/ui/login")).await.unwrap();
        check(&c, &axe, "login", width, size).await;
        sign_in(&c, &url, ALICE).await;
        check(&c, &axe, "inbox", width, size).await;
        // The card's detail open too: the engineer's tables reflow.
        c.find(Locator::Css("article.decision details.detail summary")).await.unwrap().click().await.unwrap();
        check(&c, &axe, "inbox-detail", width, size).await;
        c.goto(&format!("{url}/ui/runs/{id}/decisions/sign-off")).await.unwrap();
        check(&c, &axe, "decision", width, size).await;
        // A reject without a reason: the page again, the message next to the field.
        c.find(Locator::Css("button.reject")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css(".field-error")).await.unwrap();
        check(&c, &axe, "decision-reason", width, size).await;
        c.find(Locator::Css("button.approve")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Id("confirm")).await.unwrap();
        check(&c, &axe, "confirm", width, size).await;
        c.goto(&format!("{url}/ui/runs/{id}")).await.unwrap();
        check(&c, &axe, "run", width, size).await;
        c.goto(&format!("{url}/ui/runs/{id}/report")).await.unwrap();
        check(&c, &axe, "report", width, size).await;
        c.goto(&format!("{url}/ui/runs")).await.unwrap();
        check(&c, &axe, "runs", width, size).await;
        c.goto(&format!("{url}/ui/environments")).await.unwrap();
        check(&c, &axe, "environments", width, size).await;
        c.goto(&format!("{url}/ui/audit")).await.unwrap();
        check(&c, &axe, "audit", width, size).await;
        c.goto(&format!("{url}/ui/runs/nope")).await.unwrap();
        check(&c, &axe, "message", width, size).await;
        c.close().await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alice_opens_the_decision_from_the_inbox_reads_it_in_plain_words_and_approves_through_the_confirmation() {
    let (s, server, id) = waiting(stats().await).await;
    let url = server.url.clone();
    let (_driver, c, _profile) = browser_at(320, 640).await;
    sign_in(&c, &url, ALICE).await;
    c.find(Locator::Css(&format!("#decision-{id}-sign-off a.open-decision"))).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Css("p.question")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), format!("/ui/runs/{id}/decisions/sign-off"));
    // One sentence on top, with what the state knows.
    let question = text(&c, "p.question").await;
    for want in ["Approve deploying checkout 1.7.0 to prod?", "Requested by bob just now (", "0 of 1 approval", "decide by", "(in 2 days), or it is rejected"] {
        assert!(question.contains(want), "`{want}` in: {question}");
    }
    // Times are in the viewer's zone, from a UTC `datetime` the server wrote.
    let at = c.find(Locator::Css("p.question time")).await.unwrap().attr("datetime").await.unwrap().unwrap();
    assert!(at.ends_with('Z'), "{at}");
    // The evidence as plain verdicts; the engineer's detail folded.
    let evidence = text(&c, "ul.verdicts").await;
    assert!(evidence.contains("check-errors: passed"), "{evidence}");
    assert!(evidence.contains("error rate at most 1.1% over 3 measurements (limit 5%): passed"), "{evidence}");
    assert!(!text(&c, "article.decision").await.contains("result < 0.05"), "the condition is in the detail");
    // Approve, through a confirmation that names the action.
    c.find(Locator::Css("article.decision textarea")).await.unwrap().send_keys("the error rate stayed low").await.unwrap();
    c.find(Locator::Css("button.approve")).await.unwrap().click().await.unwrap();
    let confirm = c.wait().for_element(Locator::Id("confirm")).await.unwrap();
    assert_eq!(confirm.text().await.unwrap(), "Approve deploying checkout 1.7.0 to prod");
    assert_eq!(text(&c, "#your-comment").await, "the error rate stayed low");
    // Nothing is decided before the confirmation.
    assert_eq!(server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["stages"][2]["state"], "waiting");
    confirm.click().await.unwrap();
    let done = c.wait().for_element(Locator::Id("done")).await.unwrap().text().await.unwrap();
    assert!(done.contains("approved `sign-off`"), "{done}");
    wait_for("prod", async || server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["run"]["state"] == "succeeded").await;
    assert_eq!(s.commits("prod"), ["promote checkout 1.7.0 to prod"]);
    // The decision's page says it no longer waits, and offers no button.
    c.goto(&format!("{url}/ui/runs/{id}/decisions/sign-off")).await.unwrap();
    c.wait().for_element(Locator::Id("not-waiting")).await.unwrap();
    assert!(c.find(Locator::Css("button.approve")).await.is_err());
    c.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_run_page_offers_the_decision_to_who_may_make_it_and_not_to_others() {
    let (_s, server, id) = waiting(stats().await).await;
    let url = server.url.clone();
    let (_driver, c, _profile) = browser_at(1280, 800).await;
    // Bob started the run: no decision for him.
    sign_in(&c, &url, BOB).await;
    c.goto(&format!("{url}/ui/runs/{id}")).await.unwrap();
    c.wait().for_element(Locator::Css("#dag g.stage[data-stage=sign-off]")).await.unwrap();
    assert!(c.find(Locator::Css("button.approve")).await.is_err(), "no button for bob");
    // The DAG says each stage's state to a screen reader, and is reachable by keyboard.
    let label = c.find(Locator::Css("#dag g.stage[data-stage=sign-off]")).await.unwrap().attr("aria-label").await.unwrap().unwrap();
    assert_eq!(label, "sign-off: approval, waiting");
    assert_eq!(c.find(Locator::Id("dag")).await.unwrap().attr("tabindex").await.unwrap().as_deref(), Some("0"));
    c.find(Locator::Css("form.who button")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("token")).await.unwrap();
    // Alice may: the same controls as the inbox, back to the run page after.
    sign_in(&c, &url, ALICE).await;
    c.goto(&format!("{url}/ui/runs/{id}")).await.unwrap();
    let question = text(&c, &format!("#decision-{id}-sign-off p.question")).await;
    assert!(question.contains("Approve deploying checkout 1.7.0 to prod?"), "{question}");
    c.find(Locator::Css("button.approve")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("confirm")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("done")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), format!("/ui/runs/{id}"));
    c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("#dag g.stage.succeeded[data-stage=prod]")).await.unwrap();
    c.close().await.unwrap();
    server.stop().await;
}
