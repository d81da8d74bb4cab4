//! Who may do what, through every surface: one directory of people per server (`--users`),
//! `access:` in the pipeline checked in `ops` for every route of the API and every form of the
//! pages, for every role; a refusal is 403 naming the rule and writes nothing but its trail entry.
//! Decisions that happen once happen once under concurrency (both backends); sessions end on the
//! server.

use std::collections::BTreeMap;

use crate::exec::{Setup, promote, text};
use crate::server::{Running, sign_in, wait_for};

/// Each role's login and token.
const ROLES: [(&str, &str); 7] = [
    ("bob", "prt_access_none_0001"),       // in the directory, in no group
    ("vera", "prt_access_viewer_0002"),    // group:team (view)
    ("rita", "prt_access_runner_0003"),    // group:team, group:rm (run)
    ("sam", "prt_access_sre_0004"),        // group:team, group:sre (rollback)
    ("ada", "prt_access_admin_0005"),      // group:platform (admin)
    ("alice", "prt_access_approver_0006"), // group:team, an approver
    ("dave", "prt_access_other_0007"),     // another team's person
];

fn token(login: &str) -> &'static str {
    ROLES.iter().find(|(l, _)| *l == login).unwrap().1
}

/// A pipeline with `access:` rules and the server's directory of people (not the pipeline's).
fn setup() -> (Setup, std::path::PathBuf) {
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n  sign-off:\n    needs: [qa]\n    approval: {approvers: [alice, ann], minApprovals: 2}\n  prod:\n    needs: [sign-off]\n    deploy: {environment: prod}\n",
        "access:\n  view: [group:team]\n  run: [group:rm]\n  rollback: [group:sre]\n  admin: [group:platform]\n",
    );
    let groups: BTreeMap<&str, &str> =
        [("bob", "[]"), ("vera", "[team]"), ("rita", "[team, rm]"), ("sam", "[team, sre]"), ("ada", "[platform]"), ("alice", "[team]"), ("dave", "[other]")]
            .into_iter()
            .collect();
    let mut users = String::from("users:\n");
    for (login, t) in ROLES {
        users.push_str(&format!(
            "  {login}: {{name: {login}, email: {login}@example.com, groups: {}, token: \"{}\"}}\n",
            groups[login],
            promote::governance::users::hash_token(t)
        ));
    }
    users.push_str("  ann: {name: Ann, email: ann@example.com, groups: [team]}\n");
    let directory = s.path().join("directory.yaml");
    std::fs::write(&directory, users).unwrap();
    (s, directory)
}

async fn serve(s: &Setup, directory: &std::path::Path) -> Running {
    let config = promote::server::Config {
        pipelines: vec![s.path().to_path_buf()],
        reload: std::time::Duration::from_millis(300),
        users: Some(directory.to_path_buf()),
        ..Default::default()
    };
    Running::start_with(s, config).await
}

async fn call(server: &Running, who: &str, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let mut req = server.http.request(method, format!("{}/api/v1{path}", server.url)).bearer_auth(token(who));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    // An event stream does not end while its run goes on: its status is enough.
    if r.headers().get("content-type").is_some_and(|v| v == "text/event-stream") {
        return (status, serde_json::Value::Null);
    }
    (status, r.json().await.unwrap_or_default())
}

/// The trail's entries that are not refusals or sessions: what a refused request must not add.
async fn written(store: &promote::store::Store) -> usize {
    store.audit_entries(None, 0, 1_000_000).await.unwrap().iter().filter(|e| !matches!(e.kind.as_str(), "refused" | "sign-in" | "sign-in-refused")).count()
}

/// One row of the table: a request, and the status each role gets.
struct Row {
    what: &'static str,
    method: reqwest::Method,
    path: String,
    body: Option<serde_json::Value>,
    /// bob, vera, rita, sam, ada, alice, dave
    expect: [u16; 7],
}

async fn walk(server: &Running, store: &promote::store::Store, s: &Setup, rows: Vec<Row>) {
    for row in rows {
        for (i, (who, _)) in ROLES.iter().enumerate() {
            let before = (written(store).await, s.commits("qa"), s.commits("prod"));
            let (status, answer) = call(server, who, row.method.clone(), &row.path, row.body.clone()).await;
            if row.method == reqwest::Method::POST && status < 300 {
                // What it set going (a stage's next look) settles before the next refusal is counted.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            assert_eq!(status, row.expect[i], "{} as {who}: {answer}", row.what);
            if status == 403 {
                let why = answer["error"].as_str().unwrap_or_default();
                assert!(why.contains("access.") || why.contains("approver"), "a refusal names the rule: {} as {who}: {why}", row.what);
                assert_eq!((written(store).await, s.commits("qa"), s.commits("prod")), before, "{} as {who}: a refusal writes nothing", row.what);
                let last = store.audit_entries(None, 0, 1_000_000).await.unwrap().pop().unwrap();
                assert_eq!((last.kind.as_str(), last.actor.as_str()), ("refused", *who), "{} as {who}: the refusal is in the trail", row.what);
            }
        }
    }
}

crate::both_backends! {
async fn every_route_and_form_allows_exactly_the_roles_access_names() {
    use reqwest::Method;
    let (s, directory) = setup();
    let server = serve(&s, &directory).await;
    let store = s.executor().await.store;
    // rita (run) starts the run; it reaches the sign-off (QA promoted).
    let (status, started) = call(&server, "rita", Method::POST, "/runs", Some(serde_json::json!({"pipeline": "checkout", "version": "1.5.0"}))).await;
    assert_eq!(status, 201, "{started}");
    let id = started["run"]["id"].as_str().unwrap().to_string();
    wait_for("the sign-off", async || call(&server, "vera", Method::GET, &format!("/runs/{id}"), None).await.1["stages"][1]["state"] == "waiting").await;
    let qa_before = s.commits("qa").len();
    let first = crate::repos::git(&s.path().join("envs/qa.git"), &["rev-list", "--max-parents=0", "main"]).trim().to_string();

    // What each role sees of lists: only the pipelines (and their runs) it may view.
    for (who, n) in [("bob", 0), ("vera", 1), ("rita", 1), ("sam", 1), ("ada", 1), ("alice", 1), ("dave", 0)] {
        let (_, p) = call(&server, who, Method::GET, "/pipelines", None).await;
        assert_eq!(p["pipelines"].as_array().unwrap().len(), n, "pipelines seen by {who}: {p}");
        let (_, r) = call(&server, who, Method::GET, "/runs", None).await;
        assert_eq!(r["runs"].as_array().unwrap().len(), n, "runs seen by {who}: {r}");
        let (_, trail) = call(&server, who, Method::GET, "/audit?limit=1000", None).await;
        let entries = trail["items"].as_array().unwrap();
        assert_eq!(entries.is_empty(), n == 0, "the trail seen by {who}: {} entries", entries.len());
        assert!(entries.iter().all(|e| n == 1 || e["run"] != id.as_str()), "{who} sees no entry of the run");
        let (_, d) = call(&server, who, Method::GET, "/drifts", None).await;
        assert!(d["drifts"].as_array().unwrap().is_empty(), "{who}: {d}");
    }

    let rows = vec![
        Row { what: "see a run", method: Method::GET, path: format!("/runs/{id}"), body: None, expect: [403, 200, 200, 200, 200, 200, 403] },
        Row { what: "its events", method: Method::GET, path: format!("/runs/{id}/events"), body: None, expect: [403, 200, 200, 200, 200, 200, 403] },
        Row { what: "verify the trail", method: Method::GET, path: "/audit/verify".into(), body: None, expect: [200; 7] },
        Row { what: "the watches", method: Method::GET, path: "/watches".into(), body: None, expect: [200; 7] },
        // An approval admits only its approvers: not an admin, not a runner.
        Row {
            what: "approve",
            method: Method::POST,
            path: format!("/runs/{id}/stages/sign-off/approve"),
            body: Some(serde_json::json!({"comment": "ok"})),
            expect: [403, 403, 403, 403, 403, 200, 403],
        },
        Row {
            what: "a not-a-risk mark",
            method: Method::POST,
            path: format!("/runs/{id}/stages/sign-off/templates/1/not-a-risk"),
            body: Some(serde_json::json!({"reason": "known"})),
            expect: [403, 403, 403, 403, 400, 403, 403],
        },
        Row {
            what: "roll back qa",
            method: Method::POST,
            path: "/pipelines/checkout/environments/qa/rollback".into(),
            body: Some(serde_json::json!({"to": first})),
            expect: [403, 403, 403, 200, 200, 403, 403],
        },
        Row {
            what: "end vera's sessions",
            method: Method::POST,
            path: "/sessions/revoke".into(),
            body: Some(serde_json::json!({"user": "vera"})),
            expect: [403, 200, 403, 403, 200, 403, 403],
        },
    ];
    walk(&server, &store, &s, rows).await;
    // Every action's entry says who vouched for the person.
    let trail = store.audit_entries(None, 0, 1_000_000).await.unwrap();
    for (kind, actor) in [("rollback", "sam"), ("decision", "alice")] {
        let e = trail.iter().find(|e| e.kind == kind && e.actor == actor).unwrap_or_else(|| panic!("no {kind} entry by {actor}"));
        assert!(e.detail.contains("vouched for by directory token"), "{kind}: {}", e.detail);
    }
    assert_eq!(s.commits("qa").len(), qa_before + 1, "one rollback commit (sam's; ada's found it done): {:?}", s.commits("qa"));

    // A drift nobody promoted: only an admin decides it (no `drift.approvers`).
    tokio::task::block_in_place(|| crate::drift::hand_edit(&s, "qa", |t| t.replace("newTag:", "newTag: 9.9.9\n# was"), "hotfix"));
    let found = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    let drift = crate::drift::drift_id(&text(&found));
    walk(
        &server,
        &store,
        &s,
        vec![Row {
            what: "accept a drift",
            method: Method::POST,
            path: format!("/drifts/{drift}/accept"),
            body: Some(serde_json::json!({"reason": "hotfix kept"})),
            expect: [403, 403, 403, 403, 200, 403, 403],
        }],
    )
    .await;

    // Starting, last (the runs it starts write as they go): those who cannot see the pipeline are
    // told it is not there.
    let start = Row {
        what: "start a run",
        method: Method::POST,
        path: "/runs".into(),
        body: Some(serde_json::json!({"pipeline": "checkout", "version": "1.6.0"})),
        expect: [404, 403, 201, 403, 201, 403, 404],
    };
    walk(&server, &store, &s, vec![start]).await;
    let (_, runs) = call(&server, "ada", Method::GET, "/runs", None).await;
    assert_eq!(runs["runs"].as_array().unwrap().iter().filter(|r| r["version"] == "1.6.0").count(), 2, "{runs}");

    // The pages' forms, signed in with each role's token: the same rules.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (who, run_page, rollback) in
        [("bob", 403, 403), ("vera", 200, 403), ("rita", 200, 403), ("sam", 200, 303), ("ada", 200, 303), ("alice", 200, 403), ("dave", 403, 403)]
    {
        let cookie = sign_in(&http, &server.url, token(who)).await;
        let page = http.get(format!("{}/ui/runs/{id}", server.url)).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(page.status().as_u16(), run_page, "the run page as {who}");
        let inbox = http.get(format!("{}/ui/", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
        let csrf = inbox.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        let before = s.commits("qa");
        let form = [("csrf", csrf.as_str()), ("pipeline", "checkout"), ("environment", "qa")];
        let r = http.post(format!("{}/ui/rollback", server.url)).header("cookie", &cookie).form(&form).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(status == rollback || (rollback == 303 && status == 409), "the rollback form as {who}: {status} {body}");
        if status == 403 {
            assert!(body.contains("access.rollback"), "{body}");
            assert_eq!(s.commits("qa"), before, "{who}'s refused form wrote nothing");
        }
        // The approval form: alice decided already (409); everyone else is no approver (403).
        let form = [("csrf", csrf.as_str()), ("run", id.as_str()), ("stage", "sign-off"), ("decision", "approve")];
        let r = http.post(format!("{}/ui/decide", server.url)).header("cookie", &cookie).form(&form).send().await.unwrap();
        assert_eq!(r.status().as_u16(), if who == "alice" { 409 } else { 403 }, "the approval form as {who}");
    }
    server.stop().await;
}
}

crate::both_backends! {
async fn a_decision_made_once_is_taken_once_of_twenty_at_the_same_moment() {
    use reqwest::Method;
    let (s, directory) = setup();
    let server = serve(&s, &directory).await;
    let (_, started) = call(&server, "rita", Method::POST, "/runs", Some(serde_json::json!({"pipeline": "checkout", "version": "2.0.0"}))).await;
    let id = started["run"]["id"].as_str().unwrap().to_string();
    wait_for("the sign-off", async || call(&server, "vera", Method::GET, &format!("/runs/{id}"), None).await.1["stages"][1]["state"] == "waiting").await;
    // alice's vote, twenty times at once: one is taken.
    let votes = (0..20).map(|i| {
        let (server, id) = (&server, id.clone());
        async move { call(server, "alice", Method::POST, &format!("/runs/{id}/stages/sign-off/approve"), Some(serde_json::json!({"comment": format!("vote {i}")}))).await.0 }
    });
    let mut got = futures_util::future::join_all(votes).await;
    got.sort();
    assert_eq!((got.iter().filter(|s| **s == 200).count(), got.iter().filter(|s| **s == 409).count()), (1, 19), "{got:?}");
    let store = s.executor().await.store;
    assert_eq!(store.decisions(&id, "sign-off").await.unwrap().len(), 1);

    // A drift accepted and rejected at once, ten times each: one decision, and no revert when
    // the acceptance won (or one revert when the rejection did).
    tokio::task::block_in_place(|| crate::drift::hand_edit(&s, "qa", |t| t.replace("newTag:", "newTag: 9.9.9\n# was"), "hotfix"));
    let drift = crate::drift::drift_id(&text(&promote(s.path(), &["drift", "check", "pipeline.yaml"])));
    let qa_before = s.commits("qa").len();
    let decisions = (0..20).map(|i| {
        let (server, drift) = (&server, drift.clone());
        let verdict = if i % 2 == 0 { "accept" } else { "reject" };
        async move { (verdict, call(server, "ada", Method::POST, &format!("/drifts/{drift}/{verdict}"), Some(serde_json::json!({"reason": "race"}))).await.0) }
    });
    let got = futures_util::future::join_all(decisions).await;
    let won: Vec<_> = got.iter().filter(|(_, s)| *s == 200).collect();
    assert_eq!(won.len(), 1, "{got:?}");
    assert!(got.iter().all(|(_, s)| *s == 200 || *s == 409), "{got:?}");
    let reverts = s.commits("qa").len() - qa_before;
    assert_eq!(reverts, usize::from(won[0].0 == "reject"), "{:?}", s.commits("qa"));
    server.stop().await;
}
}

crate::both_backends! {
async fn the_store_takes_each_once_only_write_once_under_concurrency() {
    let s = Setup::new("  ok:\n    approval: {approvers: [alice]}\n", "");
    let exec = s.executor().await;
    let id = s.start(&exec, "1.0.0").await;
    let store = exec.store.clone();
    // A callback's verdict (its user is the callback's), twenty at once.
    let tries = (0..20).map(|i| {
        let (store, id) = (store.clone(), id.clone());
        async move { store.decide_as(&id, "ok", "callback", i % 2 == 0, None, promote::store::EntryKind::Callback, None).await.unwrap() }
    });
    assert_eq!(futures_util::future::join_all(tries).await.iter().filter(|x| **x).count(), 1);
    // A not-a-risk mark: the first stays, none replaces it.
    let tries = (0..20).map(|i| {
        let (store, id) = (store.clone(), id.clone());
        async move { store.exempt_template(&id, "checkout", "user <*> logged in", &format!("u{i}"), "known", None).await.unwrap() }
    });
    assert_eq!(futures_util::future::join_all(tries).await.iter().filter(|x| x.is_none()).count(), 1);
    // A drift's decision.
    let drift = promote::store::DriftRecord {
        id: "d-race".into(),
        pipeline: "checkout".into(),
        environment: "qa".into(),
        head: "0".repeat(40),
        baseline: None,
        commits: vec![],
        diff: String::new(),
        rewritten: false,
        state: promote::store::DriftState::Open,
        decided_by: None,
        reason: None,
        at: 1,
        decided_at: None,
        seal: None,
    };
    store.record_drift(drift).await.unwrap();
    let tries = (0..20).map(|i| {
        let store = store.clone();
        async move { store.decide_drift("d-race", promote::store::DriftState::Open, if i % 2 == 0 { promote::store::DriftState::Accepted } else { promote::store::DriftState::Rejecting }, &format!("u{i}"), None, None).await.unwrap() }
    });
    assert_eq!(futures_util::future::join_all(tries).await.iter().filter(|x| **x).count(), 1);
    exec.store.close().await;
}
}

crate::both_backends! {
async fn a_session_ends_on_the_server_at_sign_out_at_a_revoke_and_when_the_token_changes() {
    let (s, directory) = setup();
    let server = serve(&s, &directory).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let inbox = |cookie: String| {
        let (http, url) = (http.clone(), server.url.clone());
        async move { http.get(format!("{url}/ui/")).header("cookie", cookie).send().await.unwrap().status().as_u16() }
    };
    // Signed out: the cookie, replayed, signs nobody in.
    let cookie = sign_in(&http, &server.url, token("vera")).await;
    let page = http.get(format!("{}/ui/", server.url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    for (h, want) in [("x-frame-options", "DENY"), ("x-content-type-options", "nosniff")] {
        assert_eq!(page.headers()[h], want, "{h}");
    }
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let out = http.post(format!("{}/ui/logout", server.url)).header("cookie", &cookie).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(out.status().as_u16(), 303);
    assert_eq!(inbox(cookie.clone()).await, 303, "a replayed cookie after sign-out goes to the sign-in page");
    // Revoked by an admin.
    let cookie = sign_in(&http, &server.url, token("vera")).await;
    assert_eq!(inbox(cookie.clone()).await, 200);
    let (status, _) = call(&server, "ada", reqwest::Method::POST, "/sessions/revoke", Some(serde_json::json!({"user": "vera"}))).await;
    assert_eq!(status, 200);
    assert_eq!(inbox(cookie).await, 303, "revoked");
    // The token changed in the directory: sessions opened with the old one end.
    let cookie = sign_in(&http, &server.url, token("vera")).await;
    let text = std::fs::read_to_string(&directory).unwrap();
    let old = promote::governance::users::hash_token(token("vera"));
    std::fs::write(&directory, text.replace(&old, &promote::governance::users::hash_token("prt_vera_new"))).unwrap();
    // (The server reads the directory again at each reload.)
    wait_for("the reload", async || inbox(cookie.clone()).await == 303).await;
    // A wrong token at the form, and the banner no link can set.
    let page = http.get(format!("{}/ui/login", server.url)).send().await.unwrap();
    let form_cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let html = page.text().await.unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let r = http.post(format!("{}/ui/login", server.url)).form(&[("token", "prt_wrong"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "no sign-in without the form's cookie (login CSRF)");
    let r = http.post(format!("{}/ui/login", server.url)).header("cookie", &form_cookie).form(&[("token", "prt_wrong"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let cookie = sign_in(&http, &server.url, token("ada")).await;
    let forged = http.get(format!("{}/ui/?done=Approved+by+the+CEO", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(!forged.contains("Approved by the CEO"), "the banner is not settable from a URL");
    // The trail: sign-ins, the sign-out, the revoke, the refused sign-in.
    let store = s.executor().await.store;
    let kinds: Vec<String> = store.audit_entries(None, 0, 100_000).await.unwrap().into_iter().map(|e| e.kind).collect();
    for k in ["sign-in", "sign-out", "sessions-revoked", "sign-in-refused"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    let sign_ins = store.audit_entries(None, 0, 100_000).await.unwrap().into_iter().filter(|e| e.kind == "sign-in").collect::<Vec<_>>();
    assert!(sign_ins.iter().all(|e| e.detail.contains("directory token")), "who vouched is said");
    server.stop().await;
}
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_directory_a_login_two_users_files_describe_differently_signs_in_nowhere() {
    // Two teams' pipelines in one server, each with its own users file and its own `alice`.
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n", "users: users.yaml\naccess: {rollback: [alice]}\n");
    std::fs::write(
        s.path().join("users.yaml"),
        format!("users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n", promote::governance::users::hash_token("prt_real_alice")),
    )
    .unwrap();
    let other = s.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let text = std::fs::read_to_string(&s.file).unwrap().replace("name: checkout", "name: payments").replace("repo: envs/", "repo: ../envs/");
    std::fs::write(other.join("pipeline.yaml"), text).unwrap();
    std::fs::write(other.join("users.yaml"), format!("users:\n  alice: {{name: Alice Other, email: alice@other.example, token: \"{}\"}}\n  dave: {{name: Dave, email: dave@other.example, token: \"{}\"}}\n", promote::governance::users::hash_token("prt_other_alice"), promote::governance::users::hash_token("prt_dave"))).unwrap();
    let config =
        promote::server::Config { pipelines: vec![s.path().to_path_buf(), other.clone()], reload: std::time::Duration::from_secs(60), ..Default::default() };
    let server = Running::start_with(&s, config).await;
    let get = |t: &'static str| {
        let (http, url) = (server.http.clone(), server.url.clone());
        async move { http.get(format!("{url}/api/v1/pipelines")).bearer_auth(t).send().await.unwrap() }
    };
    for t in ["prt_real_alice", "prt_other_alice"] {
        assert_eq!(get(t).await.status().as_u16(), 401, "`alice` names two people, so neither signs in as her");
    }
    let r: serde_json::Value = get("prt_dave").await.json().await.unwrap();
    let errors = r["errors"]["users"].as_array().unwrap();
    assert!(errors[0].as_str().unwrap().contains("--users"), "{r}");
    // dave, of the other team, may not roll back checkout's qa.
    let r = server.http.post(format!("{}/api/v1/pipelines/checkout/environments/qa/rollback", server.url)).bearer_auth("prt_dave").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    server.stop().await;
}

crate::both_backends! {
/// The inbox reads its page's stages and decisions in one read each: every card still shows its
/// own run's approvals, its evidence and what it replaces (the newest promotion's value).
async fn each_inbox_card_shows_its_own_runs_approvals_evidence_and_the_version_it_replaces() {
    use reqwest::Method;
    let (s, directory) = setup();
    let server = serve(&s, &directory).await;
    let store = s.executor().await.store;
    let start = async |version: &str| {
        let (status, started) = call(&server, "rita", Method::POST, "/runs", Some(serde_json::json!({"pipeline": "checkout", "version": version}))).await;
        assert_eq!(status, 201, "{started}");
        let id = started["run"]["id"].as_str().unwrap().to_string();
        wait_for("the sign-off", async || call(&server, "vera", Method::GET, &format!("/runs/{id}"), None).await.1["stages"][1]["state"] == "waiting").await;
        id
    };
    // 1.0.0 reaches prod with both approvals.
    let first = start("1.0.0").await;
    assert!(store.decide(&first, "sign-off", "ann", true, Some("fine")).await.unwrap());
    assert_eq!(call(&server, "alice", Method::POST, &format!("/runs/{first}/stages/sign-off/approve"), Some(serde_json::json!({"comment": "ok"}))).await.0, 200);
    wait_for("1.0.0 in prod", async || call(&server, "vera", Method::GET, &format!("/runs/{first}"), None).await.1["run"]["state"] == "succeeded").await;
    // 1.1.0 has ann's approval, 1.2.0 none yet.
    let one = start("1.1.0").await;
    assert!(store.decide(&one, "sign-off", "ann", true, Some("fine")).await.unwrap());
    let two = start("1.2.0").await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = sign_in(&http, &server.url, token("alice")).await;
    let html = http.get(format!("{}/ui/", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let card = |id: &str| {
        let start = html.find(&format!("id=\"decision-{id}-sign-off\"")).unwrap_or_else(|| panic!("a card for {id} in: {html}"));
        let rest = &html[start..];
        rest[..rest[1..].find("id=\"decision-").map_or(rest.len(), |i| i + 1)].to_string()
    };
    let (a, b) = (card(&one), card(&two));
    assert!(a.contains("1 of 2 approvals") && a.contains("Approved by ann;"), "{a}");
    assert!(b.contains("0 of 2 approvals") && b.contains("Approved by nobody yet"), "{b}");
    for (card, version) in [(&a, "1.1.0"), (&b, "1.2.0")] {
        assert!(card.contains(&format!("<del>1.0.0</del> → <ins>{version}</ins>")), "prod goes from 1.0.0 to {version}: {card}");
        // The evidence is each run's own: its qa stage, whole (message and all).
        assert!(card.contains("<strong>qa</strong>: <span class=\"verdict ok\">deployed</span>"), "{card}");
        let qa = store.stages(if version == "1.1.0" { &one } else { &two }).await.unwrap().into_iter().find(|st| st.name == "qa").unwrap();
        let message = qa.message.expect("a deploy says what it did");
        let escaped = message.replace('&', "&#38;").replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;").replace('\'', "&#39;");
        assert!(card.contains(&escaped), "`{message}` in {card}");
    }
    // The run page (its stages kept while the run writes nothing) shows the sign-off waiting.
    let box_of = async |id: &str, stage: &str| {
        let html = http.get(format!("{}/ui/runs/{id}", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
        let at = html.find(&format!("data-stage=\"{stage}\"")).unwrap_or_else(|| panic!("a box for {stage} in {html}"));
        html[..at].rsplit("<g class=\"stage ").next().unwrap().split('"').next().unwrap().to_string()
    };
    assert_eq!(box_of(&one, "sign-off").await, "waiting");
    assert_eq!(box_of(&one, "sign-off").await, "waiting");
    // The inbox follows each write: once alice's approval lets 1.1.0 go on, its card is gone.
    assert_eq!(call(&server, "alice", Method::POST, &format!("/runs/{one}/stages/sign-off/approve"), Some(serde_json::json!({"comment": "ok"}))).await.0, 200);
    wait_for("1.1.0's card to go", async || {
        let html = http.get(format!("{}/ui/", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
        !html.contains(&format!("id=\"decision-{one}-sign-off\"")) && html.contains(&format!("id=\"decision-{two}-sign-off\""))
    })
    .await;
    wait_for("the run page to follow", async || box_of(&one, "prod").await == "succeeded").await;
    assert_eq!(box_of(&one, "sign-off").await, "succeeded");
    // A new run's card comes: after a few entries (the runs they name read again) and after
    // more than the inbox follows one by one (everything read again).
    let has = async |id: &str| {
        let html = http.get(format!("{}/ui/", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
        html.contains(&format!("id=\"decision-{id}-sign-off\""))
    };
    let three = start("1.3.0").await;
    wait_for("1.3.0's card", async || has(&three).await).await;
    for i in 0..600 {
        store.audit(None, None, promote::store::EntryKind::Notification, "test", &format!("entry {i}")).await.unwrap();
    }
    let four = start("1.4.0").await;
    wait_for("1.4.0's card", async || has(&four).await).await;
    assert!(has(&three).await && has(&two).await && !has(&one).await);
    server.stop().await;
}
}

/// A refusal names the rule that would allow it; to a person who may not view the pipeline it
/// does not say who the rule lists (its approvers, its admins, its groups).
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_to_someone_who_may_not_view_the_pipeline_names_the_rule_not_its_people() {
    use reqwest::Method;
    let (s, directory) = setup();
    let server = serve(&s, &directory).await;
    let (status, started) = call(&server, "rita", Method::POST, "/runs", Some(serde_json::json!({"pipeline": "checkout", "version": "1.5.0"}))).await;
    assert_eq!(status, 201, "{started}");
    let id = started["run"]["id"].as_str().unwrap().to_string();
    wait_for("the sign-off", async || call(&server, "vera", Method::GET, &format!("/runs/{id}"), None).await.1["stages"][1]["state"] == "waiting").await;
    let approve = format!("/runs/{id}/stages/sign-off/approve");
    let rollback = "/pipelines/checkout/environments/qa/rollback";
    // vera may view: she is told who would be allowed.
    let (status, answer) = call(&server, "vera", Method::POST, &approve, Some(serde_json::json!({"comment": "ok"}))).await;
    assert_eq!(status, 403);
    assert!(answer["error"].as_str().unwrap().contains("alice"), "{answer}");
    let (status, answer) = call(&server, "vera", Method::POST, rollback, Some(serde_json::json!({"to": "HEAD"}))).await;
    assert_eq!(status, 403);
    assert!(answer["error"].as_str().unwrap().contains("group:sre"), "{answer}");
    // dave may not: the rule, and nobody's name.
    for (path, body, rule) in
        [(approve.as_str(), serde_json::json!({"comment": "ok"}), "`approvers`"), (rollback, serde_json::json!({"to": "HEAD"}), "`access.rollback`")]
    {
        let (status, answer) = call(&server, "dave", Method::POST, path, Some(body)).await;
        assert_eq!(status, 403, "{path}: {answer}");
        let why = answer["error"].as_str().unwrap();
        assert!(why.contains(rule) && why.contains("pipeline checkout"), "{path}: {why}");
        for name in ["alice", "ann", "group:sre", "group:platform", "group:team"] {
            assert!(!why.contains(name), "{path}: `{name}` in {why}");
        }
    }
    server.stop().await;
}
