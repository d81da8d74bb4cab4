//! The web pages in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven
//! over WebDriver): alice signs in with her token, sees the approval waiting with the analysis'
//! measured values, approves, and watches the run reach prod live; bob, no approver, sees no
//! button and his forged POST is refused; a POST without the CSRF token is refused; a rejection
//! needs a reason, asked for in place. Screenshots go to target/ui-shots/. The metrics the analysis reads come
//! from a local JSON endpoint through the `web` provider (a product feature, used for real).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::exec::Setup;
use crate::server::{ALICE, Running, wait_for};

const BOB: &str = "prt_bob_not_an_approver_0002";

/// A chromedriver on a free port, killed when dropped.
pub(crate) struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn need(binary: &str) -> String {
    let path = ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"].iter().map(|d| format!("{d}/{binary}")).find(|p| std::path::Path::new(p).exists());
    path.unwrap_or_else(|| {
        panic!("`{binary}` is not installed: the web page tests need a real Chromium (Debian: apt-get install chromium chromium-driver; .ci/run installs them)")
    })
}

pub(crate) async fn browser() -> (Driver, Client, tempfile::TempDir) {
    browser_at(1280, 1000).await
}

/// A Chromium whose window is `width` x `height` CSS px (the viewport of a phone at 320).
pub(crate) async fn browser_at(width: u32, height: u32) -> (Driver, Client, tempfile::TempDir) {
    let driver = need("chromedriver");
    let chromium = need("chromium");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(driver).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let d = Driver(child, port);
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", format!("--window-size={},{}", width.max(500), height),
                     format!("--user-data-dir={}", profile.path().display())]
        }),
    );
    // A window is at least 500 px wide: a phone's viewport is emulated.
    if width < 500 {
        caps["goog:chromeOptions"]["mobileEmulation"] = serde_json::json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}});
    }
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::new(connector.clone()).capabilities(caps.clone()).connect(&format!("http://127.0.0.1:{}", d.1)).await {
            Ok(c) => return (d, c, profile),
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "chromedriver did not start a Chromium session: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

pub(crate) async fn screenshot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-shots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), c.screenshot().await.unwrap()).unwrap();
}

pub(crate) async fn sign_in(c: &Client, url: &str, token: &str) {
    c.goto(&format!("{url}/ui/login")).await.unwrap();
    c.find(Locator::Id("token")).await.unwrap().send_keys(token).await.unwrap();
    c.find(Locator::Css("form.login button")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("signed-in")).await.unwrap();
}

pub(crate) async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// The session cookie and a form's CSRF token of the page shown.
async fn credentials(c: &Client) -> (String, String) {
    let cookie = c.get_named_cookie("promote_session").await.unwrap().value().to_string();
    let csrf = c.find(Locator::Css("form.who input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap();
    (cookie, csrf)
}

#[tokio::test(flavor = "multi_thread")]
async fn alice_approves_in_the_browser_with_the_evidence_in_front_of_her_and_bob_cannot() {
    // Error rates as a JSON API (three measurements, all well under the limit), and a run started
    // by bob (alice may not approve her own run) waiting for her sign-off.
    let (s, server, id) = crate::pages::waiting(crate::pages::stats().await).await;

    let (_driver, c, _profile) = browser().await;
    let url = server.url.clone();
    // Not signed in: the sign-in page.
    c.goto(&format!("{url}/ui/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    // A wrong token is refused.
    c.find(Locator::Id("token")).await.unwrap().send_keys("prt_wrong").await.unwrap();
    c.find(Locator::Css("form.login button")).await.unwrap().click().await.unwrap();
    let shown = c.wait().for_element(Locator::Css("p.error")).await.unwrap().text().await.unwrap();
    assert!(shown.contains("no one's"), "{shown}");

    // Bob is no approver: nothing waits for him, no button; his forged POST is refused.
    sign_in(&c, &url, BOB).await;
    assert_eq!(text(&c, "#waiting-count").await, "0");
    assert!(c.find(Locator::Css("button.approve")).await.is_err(), "no approve button for bob");
    let (bob_cookie, bob_csrf) = credentials(&c).await;
    let post = |cookie: String, form: Vec<(&'static str, String)>| {
        let http = server.http.clone();
        let url = url.clone();
        async move {
            let r = http.post(format!("{url}/ui/decide")).header("cookie", format!("promote_session={cookie}")).form(&form).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let form = |csrf: Option<&str>, decision: &str, comment: &str| {
        let mut f = vec![("run", id.clone()), ("stage", "sign-off".to_string()), ("decision", decision.to_string()), ("comment", comment.to_string())];
        if let Some(t) = csrf {
            f.push(("csrf", t.to_string()));
        }
        f
    };
    let (status, page) = post(bob_cookie.clone(), form(Some(&bob_csrf), "approve", "looks fine to me")).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("bob"), "the page says why: {page}");
    c.find(Locator::Css("form.who button")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("token")).await.unwrap();

    // Alice: the approval with what it will commit and the evidence's values.
    sign_in(&c, &url, ALICE).await;
    assert_eq!(text(&c, "#waiting-count").await, "1");
    let card = text(&c, "article.decision").await;
    for want in [
        "checkout 1.7.0",
        "sign-off",
        "Release manager sign-off",
        "prod",
        "1.7.0",
        "Approve deploying checkout 1.7.0 to prod?",
        "Requested by bob",
        "error rate at most 1.1% over 3 measurements (limit 5%): passed",
        "check-errors",
        "1 approval needed",
    ] {
        assert!(card.contains(want), "`{want}` in the inbox card:\n{card}");
    }
    // The engineer's detail, one click away.
    assert!(!card.contains("passes if result < 0.05"), "the detail is folded:\n{card}");
    c.find(Locator::Css("article.decision details.detail summary")).await.unwrap().click().await.unwrap();
    let card = text(&c, "article.decision").await;
    for want in ["error-rate", "Successful", "passes if result < 0.05", "last 0.007 (0.004 to 0.011, 3 measurements)"] {
        assert!(card.contains(want), "`{want}` in the detail:\n{card}");
    }
    assert!(c.find(Locator::Css("article.decision svg.spark polyline")).await.is_ok(), "a chart of the measured series");
    screenshot(&c, "inbox").await;
    // Without the CSRF token even alice's POST is refused.
    let (alice_cookie, _) = credentials(&c).await;
    let (status, page) = post(alice_cookie, form(None, "approve", "")).await;
    assert_eq!(status, 403, "{page}");
    // The run page, opened before the decision, in a tab of its own: it must follow the run live.
    let inbox_tab = c.window().await.unwrap();
    let run_tab = c.new_window(true).await.unwrap().handle;
    c.switch_to_window(run_tab.clone()).await.unwrap();
    c.goto(&format!("{url}/ui/runs/{id}")).await.unwrap();
    c.wait().for_element(Locator::Css("#dag g.stage.waiting[data-stage=sign-off]")).await.unwrap();
    assert!(c.find(Locator::Css("#dag g.stage.pending[data-stage=prod]")).await.is_ok(), "prod has not started");
    c.switch_to_window(inbox_tab).await.unwrap();
    // A rejection needs a reason: asked for next to the field, on the decision's page.
    c.find(Locator::Css("button.reject")).await.unwrap().click().await.unwrap();
    let shown = c.wait().for_element(Locator::Css(".field-error")).await.unwrap().text().await.unwrap();
    assert!(shown.contains("Say why you reject it"), "{shown}");
    assert!(!c.source().await.unwrap().contains("--comment"), "no CLI flag on the page");
    c.find(Locator::Css("article.decision textarea")).await.unwrap().send_keys("error rate under 1.1% across the soak").await.unwrap();
    c.find(Locator::Css("button.approve")).await.unwrap().click().await.unwrap();
    // The confirmation names the action.
    let confirm = c.wait().for_element(Locator::Id("confirm")).await.unwrap();
    assert_eq!(confirm.text().await.unwrap(), "Approve deploying checkout 1.7.0 to prod");
    confirm.click().await.unwrap();
    let shown = c.wait().for_element(Locator::Css("#done, #message")).await.unwrap().text().await.unwrap();
    assert!(shown.contains("approved `sign-off`"), "{shown}");

    // The run page, live: the DAG's prod box turns succeeded without a reload.
    c.switch_to_window(run_tab).await.unwrap();
    c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("#dag g.stage.succeeded[data-stage=prod]")).await.unwrap();
    assert_eq!(text(&c, "#run-state").await, "succeeded");
    // Said to a screen reader too: the box's name, and the live region.
    let label = c.find(Locator::Css("#dag g.stage[data-stage=prod]")).await.unwrap().attr("aria-label").await.unwrap().unwrap();
    assert_eq!(label, "prod: deploy, succeeded");
    wait_for("the live region", async || {
        c.find(Locator::Id("live")).await.unwrap().prop("textContent").await.unwrap().is_some_and(|t| t.contains("the run is succeeded"))
    })
    .await;
    screenshot(&c, "run").await;
    let prod = crate::repos::git(&s.path().join("envs/prod.git"), &["log", "-1", "--format=%B", "main"]);
    assert!(prod.contains("Approved-By: Alice <alice@example.com>"), "{prod}");

    c.goto(&format!("{url}/ui/environments")).await.unwrap();
    let prod_cell = text(&c, ".cell[data-environment=prod]").await;
    assert!(prod_cell.contains("1.7.0") && prod_cell.contains("approved by alice"), "{prod_cell}");
    let qa_cell = text(&c, ".cell[data-environment=qa]").await;
    assert!(qa_cell.contains("1.7.0") && !qa_cell.contains("approved by"), "qa went in before the sign-off: {qa_cell}");
    screenshot(&c, "environments").await;
    c.goto(&format!("{url}/ui/audit")).await.unwrap();
    assert!(text(&c, "#verified").await.contains("intact"));
    let trail = text(&c, "table.audit").await;
    assert!(trail.contains("approved by alice: error rate under 1.1%"), "{trail}");
    c.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxys_identity_headers_sign_in_and_anyone_elses_are_ignored() {
    let s = Setup::new("  sign-off:\n    approval: {approvers: [alice]}\n", "users: users.yaml\naccess: {run: [alice, bob], rollback: [alice]}\n");
    std::fs::write(
        s.path().join("users.yaml"),
        format!("users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n", promote::governance::users::hash_token(ALICE)),
    )
    .unwrap();
    // The proxy is 127.0.0.2; the server listens on 127.0.0.1.
    let config = promote::server::Config {
        pipelines: vec![s.path().to_path_buf()],
        reload: Duration::from_secs(60),
        trusted_proxies: vec!["127.0.0.2".parse().unwrap()],
        ..Default::default()
    };
    let server = Running::start_with(&s, config).await;
    let from = |ip: &str| {
        reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).redirect(reqwest::redirect::Policy::none()).build().unwrap()
    };
    let inbox = |client: reqwest::Client, headers: Vec<(&'static str, &'static str)>| {
        let url = format!("{}/ui/", server.url);
        async move {
            let mut r = client.get(url);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, page) = inbox(from("127.0.0.2"), vec![("X-Forwarded-User", "alice")]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(r#"<strong id="signed-in">alice</strong>"#), "{page}");
    let (status, page) = inbox(from("127.0.0.2"), vec![("X-Forwarded-Email", "Alice@Example.com")]).await;
    assert!(status == 200 && page.contains(r#"id="signed-in">alice<"#), "by email: {page}");
    // The same headers from anyone else: not signed in.
    let (status, _) = inbox(from("127.0.0.1"), vec![("X-Forwarded-User", "alice")]).await;
    assert_eq!(status, 303, "to the sign-in page");
    // A name the users file does not have: not signed in either.
    let (status, _) = inbox(from("127.0.0.2"), vec![("X-Forwarded-User", "mallory")]).await;
    assert_eq!(status, 303);
    server.stop().await;
}
