//! Single sign-on by OpenID Connect against a real OpenID Provider (panva's `oidc-provider`,
//! tests/oidc/provider.mjs, with its development login form): alice signs in with SSO in
//! Chromium and is the directory's alice; an IdP user named alice without alice's verified email
//! is refused and audited, and so is the directory's disabled bob; carol, whom the directory does
//! not know, approves through her IdP group; the API takes the issuer's JWTs for this client and
//! refuses expired, foreign, misaddressed and HMAC-signed ones; a server whose IdP is down still
//! starts, takes tokens, and offers SSO once the IdP answers.

mod support;

use std::time::Duration;

use fantoccini::Locator;
use support::{Agent, Idp, Promote};

use crate::exec::Setup;
use crate::server::{ALICE, wait_for};

/// checkout with a sign-off by the group release-managers; alice may start runs; the server's
/// directory: alice (with a token) and bob (disabled). (The pipeline's own users file, for
/// commands run without a server, has dave in release-managers: the file checks want a group of
/// approvers to have someone in it.)
fn setup() -> Setup {
    let s = Setup::new("  sign-off:\n    approval: {approvers: [group:release-managers]}\n", "users: team.yaml\naccess:\n  run: [alice]\n");
    std::fs::write(s.path().join("team.yaml"), "users:\n  dave: {name: Dave, email: dave@example.com, groups: [release-managers]}\n").unwrap();
    std::fs::write(
        s.path().join("directory.yaml"),
        format!(
            "users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n  bob: {{name: Bob, email: bob@example.com, disabled: true}}\n",
            promote::governance::users::hash_token(ALICE)
        ),
    )
    .unwrap();
    s
}

/// The IdP and a promote server that signs in with it (the IdP on `idp_port` if given, else on a
/// port of its own).
async fn start(s: &Setup, idp_up: bool) -> (Option<Idp>, Promote, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (idp_port, port) = (support::free_port(), listener.local_addr().unwrap().port());
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let idp = idp_up.then(|| Idp::start(idp_port, &format!("http://127.0.0.1:{port}/ui/auth/callback")));
    let config = promote::server::Config {
        pipelines: vec![s.path().to_path_buf()],
        reload: Duration::from_secs(60),
        users: Some(s.path().join("directory.yaml")),
        oidc: Some(support::settings(&issuer)),
        ..Default::default()
    };
    (idp, Promote::start(s, listener, config).await, idp_port)
}

fn signed_in(page: &str) -> Option<String> {
    regex::Regex::new(r#"id="signed-in">([^<]+)<"#).unwrap().captures(page).map(|c| c[1].to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn alice_signs_in_with_sso_in_chromium_and_is_the_directorys_alice() {
    if !support::available() {
        return;
    }
    let s = setup();
    let (idp, server, _) = start(&s, true).await;
    let issuer = idp.as_ref().unwrap().issuer.clone();
    let (_driver, c, _profile) = crate::ui::browser().await;
    c.goto(&format!("{}/ui/", server.url)).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    c.find(Locator::Id("sso")).await.unwrap().click().await.unwrap();
    // The IdP's own login form.
    c.wait().for_element(Locator::Css("input[name=login]")).await.unwrap().send_keys("id-alice").await.unwrap();
    c.find(Locator::Css("input[name=password]")).await.unwrap().send_keys("any password").await.unwrap();
    c.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    let who = c.wait().at_most(Duration::from_secs(20)).for_element(Locator::Id("signed-in")).await.unwrap().text().await.unwrap();
    assert_eq!(who, "alice");
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/"), "on the inbox");
    crate::ui::screenshot(&c, "sso-inbox").await;
    // The session is a server's session of the directory's alice; the sign-in flow's cookie is gone.
    assert!(c.get_named_cookie("promote_session").await.is_ok());
    assert!(c.get_named_cookie("promote_oidc").await.is_err(), "the flow's cookie is cleared");
    let signs = support::trail(&s, "sign-in").await;
    assert!(signs.iter().any(|e| e.starts_with("alice: ") && e.contains(&format!("OIDC subject id-alice of {issuer}"))), "{signs:?}");
    c.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idp_user_with_alices_name_but_not_her_verified_email_is_refused_and_audited() {
    if !support::available() {
        return;
    }
    let s = setup();
    let (_idp, server, _) = start(&s, true).await;
    for (account, why) in [("id-impostor", "not that person"), ("id-unverified", "not that person"), ("id-bob", "disabled")] {
        let mut agent = Agent::new();
        let a = agent.sign_in(&server.url, account).await;
        assert_eq!(a.status, 403, "{account}: {a:?}");
        assert!(a.body.contains(why), "{account}: {}", a.body);
        assert!(a.url.contains("/ui/auth/callback"), "{}", a.url);
        assert!(!agent.jar.contains_key("promote_session"), "{account} has no session");
        assert!(!agent.jar.contains_key("promote_oidc"), "the flow's cookie is cleared");
        let inbox = agent.get(&format!("{}/ui/", server.url)).await;
        assert!(inbox.url.ends_with("/ui/login"), "{account} is not signed in: {inbox:?}");
    }
    let refused = support::trail(&s, "sign-in-refused").await;
    for sub in ["id-impostor", "id-unverified", "id-bob"] {
        assert!(refused.iter().any(|e| e.contains(&format!("OIDC subject {sub} of"))), "{sub}: {refused:?}");
    }
    assert!(refused.iter().any(|e| e.contains("id-bob") && e.contains("disabled")), "{refused:?}");
    assert!(support::trail(&s, "sign-in").await.is_empty(), "nobody signed in");
    // A callback nobody started here: refused, nothing opened.
    let mut agent = Agent::new();
    let a = agent.get(&format!("{}/ui/auth/callback?code=forged&state=forged", server.url)).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(!agent.jar.contains_key("promote_session"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn carol_whom_the_directory_does_not_know_approves_through_her_idp_group() {
    if !support::available() {
        return;
    }
    let s = setup();
    let (_idp, server, _) = start(&s, true).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/runs", server.url))
        .bearer_auth(ALICE)
        .json(&serde_json::json!({"pipeline": "checkout", "version": "1.7.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let run: serde_json::Value = r.json().await.unwrap();
    let id = run["run"]["id"].as_str().unwrap().to_string();
    wait_for("the sign-off", async || {
        let run: serde_json::Value = http.get(format!("{}/api/v1/runs/{id}", server.url)).bearer_auth(ALICE).send().await.unwrap().json().await.unwrap();
        run["stages"][0]["state"] == "waiting"
    })
    .await;

    let mut carol = Agent::new();
    let a = carol.sign_in(&server.url, "id-carol").await;
    assert_eq!(a.status, 200, "{a:?}");
    let inbox = carol.get(&format!("{}/ui/", server.url)).await;
    assert_eq!(signed_in(&inbox.body).as_deref(), Some("carol"), "{}", inbox.body);
    assert!(inbox.body.contains(r#"id="waiting-count">1<"#), "the sign-off waits for carol's group: {}", inbox.body);
    let csrf = regex::Regex::new(r#"name="csrf" value="([0-9a-f]+)""#).unwrap().captures(&inbox.body).unwrap()[1].to_string();
    let done = carol
        .post(
            &format!("{}/ui/decide", server.url),
            &[("run", &id), ("stage", "sign-off"), ("decision", "approve"), ("comment", "release-managers agree"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(done.status, 200, "{done:?}");
    assert!(done.body.contains("approved"), "{}", done.body);
    let decided = support::trail(&s, "*").await;
    assert!(decided.iter().any(|e| e.contains("approved by carol: release-managers agree")), "{decided:?}");
    let signs = support::trail(&s, "sign-in").await;
    assert!(signs.iter().any(|e| e.starts_with("carol: ") && e.contains("OIDC subject id-carol of")), "{signs:?}");
    // Her approval counts: the sign-off succeeds and the run goes on.
    wait_for("the sign-off to count carol's approval", async || {
        let run: serde_json::Value = http.get(format!("{}/api/v1/runs/{id}", server.url)).bearer_auth(ALICE).send().await.unwrap().json().await.unwrap();
        run["stages"][0]["state"] == "succeeded"
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_takes_the_issuers_jwts_for_this_client_and_no_others() {
    if !support::available() {
        return;
    }
    let s = setup();
    let (idp, server, _) = start(&s, true).await;
    let idp = idp.unwrap();
    let http = reqwest::Client::new();
    let runs = async |token: &str| {
        let r = http.get(format!("{}/api/v1/runs", server.url)).bearer_auth(token).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    // A CI job's client credentials token: a JWT for audience `promote`, naming ci-bot.
    let ci = idp.client_credentials("urn:promote:api").await;
    let (status, body) = runs(&ci).await;
    assert_eq!(status, 200, "{body}");
    // The directory's tokens still work.
    assert_eq!(runs(ALICE).await.0, 200);
    // The provider's own key, an hour past expiry.
    let (status, body) = runs(&idp.test_token("expired").await).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("expired"), "{body}");
    // The same claims under the provider's key id, signed by another key.
    let (status, body) = runs(&idp.test_token("foreign").await).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("signature"), "{body}");
    // The provider's token for another service.
    let (status, body) = runs(&idp.client_credentials("urn:other:api").await).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not for this server's client id"), "{body}");
    // Algorithm confusion: HMAC with the public key's id, or no signature at all.
    let b64 = |v: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let claims = b64(serde_json::json!({"iss": idp.issuer, "aud": "promote", "sub": "id-alice", "preferred_username": "alice", "exp": 4_000_000_000u64}));
    for alg in ["HS256", "none"] {
        let forged = format!("{}.{claims}.c2lnbmF0dXJl", b64(serde_json::json!({"alg": alg, "typ": "JWT", "kid": "test-key-1"})));
        let (status, body) = runs(&forged).await;
        assert_eq!(status, 401, "{alg}: {body}");
        assert!(!body.contains(&claims), "a refusal does not echo the token");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_whose_idp_is_down_starts_takes_tokens_and_offers_sso_once_the_idp_answers() {
    if !support::available() {
        return;
    }
    let s = setup();
    let (_, server, idp_port) = start(&s, false).await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/api/v1/runs", server.url)).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "token sign-in works without the IdP");
    let mut agent = Agent::new();
    let login = agent.get(&format!("{}/ui/login", server.url)).await;
    assert!(login.body.contains("Sign in with SSO"), "{}", login.body);
    let a = agent.get(&format!("{}/ui/auth/login", server.url)).await;
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.body.contains("token"), "it says how to sign in meanwhile: {}", a.body);
    let _idp = Idp::start(idp_port, &format!("{}/ui/auth/callback", server.url));
    wait_for("single sign-on once the IdP answers", async || {
        let mut agent = Agent::new();
        agent.get(&format!("{}/ui/auth/login", server.url)).await.url.contains("/interaction/")
    })
    .await;
    let mut carol = Agent::new();
    assert_eq!(carol.sign_in(&server.url, "id-carol").await.status, 200);
    server.stop().await;
}
