//! Issue 29: live pages that never duplicate (`Last-Event-ID`, `?after=N`) and notes that reach
//! people (links to the pages, email through a real SMTP server, Microsoft Teams).

use std::time::Duration;

use crate::server::{ALICE, Running, push_event, setup, sign, sign_in, wait_for};

/// The entry numbers (`id:` lines) a server-sent event stream gives, reading until it ends or
/// stays quiet for `quiet`.
async fn sse_ids(mut r: reqwest::Response, quiet: Duration) -> Vec<i64> {
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(quiet, r.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.lines().filter_map(|l| l.strip_prefix("id:")).map(|v| v.trim().parse().unwrap()).collect()
}

/// A run of the server's pipeline, started by a signed GitHub push, waiting at `sign-off`.
pub async fn waiting_run(server: &Running) -> String {
    let body = push_event("acme/checkout", "refs/tags/v1.7.0");
    let sig = sign(&body);
    let headers = [("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-1"), ("X-Hub-Signature-256", sig.as_str())];
    let (status, answer) = server.hook(&headers, body).await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["runs"][0]["run"].as_str().unwrap().to_string();
    wait_for("the sign-off", async || server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["stages"][1]["state"] == "waiting").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_or_the_pages_after_never_repeats_an_entry() {
    let s = setup();
    let server = Running::start(&s).await;
    let id = waiting_run(&server).await;
    let stream = |last: Option<i64>, query: &str| {
        let mut req = server.http.get(format!("{}/api/v1/runs/{id}/events{query}", server.url)).bearer_auth(ALICE);
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l.to_string());
        }
        req.send()
    };

    // The first connection: every entry so far, in order, each once.
    let all = sse_ids(stream(None, "").await.unwrap(), Duration::from_millis(700)).await;
    assert!(all.len() >= 4, "entries so far: {all:?}");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "increasing, none twice: {all:?}");

    // A reconnect as an EventSource makes it (Last-Event-ID of the last entry it read): only
    // what came after, nothing before it again.
    let k = all[all.len() / 2];
    let again = sse_ids(stream(Some(k), "").await.unwrap(), Duration::from_millis(700)).await;
    assert_eq!(again, all.iter().copied().filter(|i| *i > k).collect::<Vec<_>>(), "after {k}");
    // Having everything: nothing is sent until something new happens.
    let live = stream(Some(*all.last().unwrap()), "").await.unwrap();
    let reader = tokio::spawn(sse_ids(live, Duration::from_secs(20)));
    // `?after=N` is the page's first connection; the later of it and Last-Event-ID counts.
    let after = sse_ids(stream(None, &format!("?after={k}")).await.unwrap(), Duration::from_millis(700)).await;
    assert_eq!(after, again, "?after={k}");
    let both = sse_ids(stream(Some(*all.last().unwrap()), &format!("?after={k}")).await.unwrap(), Duration::from_millis(500)).await;
    assert!(both.is_empty(), "Last-Event-ID later than ?after: {both:?}");

    // The decision and the run's end come on the open stream, and only they.
    let (status, done) = server.api(reqwest::Method::POST, &format!("/runs/{id}/stages/sign-off/approve"), Some(serde_json::json!({}))).await;
    assert_eq!(status, 200, "{done}");
    let new = tokio::time::timeout(Duration::from_secs(30), reader).await.expect("the stream ends with the run").unwrap();
    assert!(!new.is_empty() && new[0] > *all.last().unwrap(), "only new entries: {new:?} after {all:?}");
    // Reconnecting after the run's end with its last entry: nothing, and the stream ends.
    let last = *new.last().unwrap();
    let none = tokio::time::timeout(Duration::from_secs(5), sse_ids(stream(Some(last), "").await.unwrap(), Duration::from_secs(5))).await.unwrap();
    assert!(none.is_empty(), "{none:?}");

    // The page tells its script the newest entry it rendered; the pages' stream honours it.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = sign_in(&http, &server.url, ALICE).await;
    let html = server.http.get(format!("{}/ui/runs/{id}", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let rendered: i64 = html.split("data-after=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    assert_eq!(rendered, last, "the page shows every entry up to the run's end");
    let page_stream = |last: Option<i64>, query: String| {
        let mut req = server.http.get(format!("{}/ui/runs/{id}/events{query}", server.url)).header("cookie", &cookie);
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l.to_string());
        }
        req.send()
    };
    let from_page = sse_ids(page_stream(None, format!("?after={k}")).await.unwrap(), Duration::from_secs(2)).await;
    let mut want: Vec<i64> = all.iter().copied().filter(|i| *i > k).collect();
    want.extend(&new);
    assert_eq!(from_page, want, "the page's stream after {k}");
    let reconnect = sse_ids(page_stream(Some(new[0]), format!("?after={k}")).await.unwrap(), Duration::from_secs(2)).await;
    assert_eq!(reconnect, new[1..].to_vec(), "the page's reconnect after {}", new[0]);
    server.stop().await;
}

/// The server's pipeline (alice approves `sign-off` before prod) with `notifications`, alice in
/// group release-managers with bob.
fn pipeline_with(notifications: &str) -> crate::exec::Setup {
    let s = setup();
    let main = s.path().join("pipeline.yaml");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, text.replacen("users: users.yaml\n", &format!("users: users.yaml\nnotifications:\n{notifications}"), 1)).unwrap();
    std::fs::write(
        s.path().join("users.yaml"),
        format!(
            "users:\n  alice: {{name: Alice, email: alice@example.com, groups: [release-managers], token: \"{}\"}}\n  bob: {{name: Bob, email: bob@example.com, groups: [release-managers]}}\n",
            promote::governance::users::hash_token(ALICE)
        ),
    )
    .unwrap();
    s
}

/// A real SMTP server (PyPI's aiosmtpd, tests/support/smtp_sink.py) writing each message to a
/// folder; stopped when dropped. Without aiosmtpd: skipped, except under CI=true, where it fails.
pub struct Smtp {
    child: std::process::Child,
    pub port: u16,
    folder: tempfile::TempDir,
}

impl Smtp {
    pub fn start() -> Option<Smtp> {
        Smtp::start_as(None)
    }

    /// The same server with TLS: `starttls` (offered and required before MAIL),
    /// `starttls-offered` (offered, not required: plain text would be taken) or `tls` (from the
    /// first byte), with the certificate `pki` signed.
    pub fn start_tls(mode: &str, pki: &Pki) -> Option<Smtp> {
        Smtp::start_as(Some((mode, pki)))
    }

    fn start_as(tls: Option<(&str, &Pki)>) -> Option<Smtp> {
        let have = std::process::Command::new("python3").args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
        if !have {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "aiosmtpd is missing (python3 -m pip install aiosmtpd): under CI the email tests never skip");
            eprintln!("skipped: aiosmtpd is missing (python3 -m pip install aiosmtpd)");
            return None;
        }
        let folder = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
        let mut args = vec![script.to_string(), port.to_string(), folder.path().to_str().unwrap().to_string()];
        if let Some((mode, pki)) = tls {
            args.extend([mode.to_string(), pki.file("server.pem"), pki.file("server.key")]);
        }
        let mut child = std::process::Command::new("python3").args(&args).stdout(std::process::Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "aiosmtpd started");
        Some(Smtp { child, port, folder })
    }

    /// The messages received so far, as received.
    pub fn messages(&self) -> Vec<String> {
        let mut names: Vec<_> =
            std::fs::read_dir(self.folder.path()).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect();
        names.sort();
        names.into_iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway certificate authority and a server certificate it signs for 127.0.0.1 (the
/// openssl CLI), in a folder of their own: `ca.pem`, `server.pem`, `server.key`.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl").args(args).current_dir(dir.path()).output().expect("the openssl CLI");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let subject = format!("/CN={name}");
        openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subject]);
        openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Pki { dir }
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

/// A message's text with quoted-printable soft line breaks and `=3D` undone.
pub fn unfolded(mail: &str) -> String {
    mail.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approvers_get_an_email_whose_link_opens_the_decision_and_approving_there_works() {
    let Some(smtp) = Smtp::start() else { return };
    // The SMTP URL from the environment, as a secret would be.
    let var = "PROMOTE_TEST29_SMTP_URL";
    unsafe { std::env::set_var(var, format!("smtp://127.0.0.1:{}", smtp.port)) };
    let s = pipeline_with(&format!(
        "  - name: approvers\n    email: {{to: [alice, group:release-managers, change-board@example.com], smtp: {{urlEnv: {var}}}, from: \"promote <promote@acme.example>\"}}\n    events: [approval-pending]\n"
    ));
    let server = Running::start(&s).await;
    let id = waiting_run(&server).await;

    // One message, to each address once (alice is named and in the group), in words a business
    // person understands, with the link to the decision's card.
    wait_for("the email", async || !smtp.messages().is_empty()).await;
    let mail = unfolded(&smtp.messages()[0]);
    let envelope = mail.lines().find_map(|l| l.strip_prefix("X-Envelope-To: ")).unwrap().to_string();
    let mut to: Vec<&str> = envelope.split(", ").collect();
    to.sort();
    assert_eq!(to, ["alice@example.com", "bob@example.com", "change-board@example.com"], "{mail}");
    assert!(mail.contains("Subject: Approve deploying checkout v1.7.0 to prod?"), "{mail}");
    assert!(mail.contains("From: promote <promote@acme.example>"), "{mail}");
    assert!(mail.contains("Content-Type: text/plain"), "{mail}");
    let link = format!("{}/ui/runs/{id}/decisions/sign-off", server.url);
    assert!(mail.contains(&format!("Open it: {link}")), "{link} in:\n{mail}");

    // The link is the decision's page on the server: signed in, alice approves there, through
    // the confirmation step that names the action.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "not signed in: to the sign-in page first");
    let cookie = sign_in(&http, &server.url, ALICE).await;
    let html = http.get(&link).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("Approve deploying checkout v1.7.0 to prod?"), "the question on top: {html}");
    let form = html.split("class=\"decide\"").nth(1).expect("the decision's form");
    let csrf = form.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let fields = [("csrf", csrf.as_str()), ("comment", "from the email"), ("decision", "approve")];
    let r = http.post(&link).header("cookie", &cookie).form(&fields).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let confirm = r.text().await.unwrap();
    assert!(confirm.contains(">Approve deploying checkout v1.7.0 to prod</button>"), "the confirmation names the action: {confirm}");
    let fields = [("csrf", csrf.as_str()), ("run", id.as_str()), ("stage", "sign-off"), ("comment", "from the email"), ("decision", "approve")];
    let r = http.post(format!("{}/ui/decide", server.url)).header("cookie", &cookie).form(&fields).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "{}", r.text().await.unwrap());
    wait_for("prod", async || server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["run"]["state"] == "succeeded").await;
    assert_eq!(s.commits("prod"), ["promote checkout v1.7.0 to prod"]);
    // Delivered: no `notification` entry in the trail; one message in all (no other event asked).
    let (_, shown) = server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await;
    assert!(!shown["events"].as_array().unwrap().iter().any(|e| e["kind"] == "notification"), "{shown}");
    assert_eq!(smtp.messages().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_over_starttls_and_over_tls_to_a_server_whose_ca_is_given() {
    // Two real SMTP servers with a certificate of a private CA: one that takes mail only after
    // STARTTLS, one that speaks TLS from the first byte. The pipeline gives that CA (`caFile`),
    // as a company with its own CA would.
    let pki = Pki::new("promote test CA");
    let Some(starttls) = Smtp::start_tls("starttls", &pki) else { return };
    let Some(tls) = Smtp::start_tls("tls", &pki) else { return };
    let ca = pki.file("ca.pem");
    let s = pipeline_with(&format!(
        "  - name: starttls\n    email: {{to: [alice], smtp: {{url: \"smtp://127.0.0.1:{}\"}}, caFile: {ca}}}\n    events: [approval-pending]\n  - name: tls\n    email: {{to: [bob], smtp: {{url: \"smtps://127.0.0.1:{}\"}}, caFile: {ca}}}\n    events: [approval-pending]\n",
        starttls.port, tls.port
    ));
    let server = Running::start(&s).await;
    let id = waiting_run(&server).await;
    wait_for("both emails", async || starttls.messages().len() == 1 && tls.messages().len() == 1).await;
    for (smtp, over, to) in [(&starttls, "starttls", "alice@example.com"), (&tls, "tls", "bob@example.com")] {
        let mail = unfolded(&smtp.messages()[0]);
        assert!(mail.contains(&format!("X-Received-Over: {over}\r\n")), "over {over}:\n{mail}");
        assert!(mail.contains(&format!("X-Envelope-To: {to}\r\n")), "{mail}");
        assert!(mail.contains("Subject: Approve deploying checkout v1.7.0 to prod?"), "{mail}");
        assert!(mail.contains(&format!("Open it: {}/ui/runs/{id}/decisions/sign-off", server.url)), "{mail}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_certificate_is_not_trusted_gets_nothing_and_the_trail_says_why() {
    // The servers' certificates are signed by a CA promote is not told of: one offers STARTTLS
    // but would take plain text too (a silent fallback would deliver there), one is TLS from the
    // start and promote is given another CA.
    let theirs = Pki::new("a CA nobody trusts");
    let ours = Pki::new("promote test CA");
    let Some(offered) = Smtp::start_tls("starttls-offered", &theirs) else { return };
    let Some(tls) = Smtp::start_tls("tls", &theirs) else { return };
    let s = pipeline_with(&format!(
        "  - name: starttls\n    email: {{to: [alice], smtp: {{url: \"smtp://127.0.0.1:{}\"}}}}\n    events: [approval-pending]\n    attempts: 1\n  - name: tls\n    email: {{to: [bob], smtp: {{url: \"smtps://127.0.0.1:{}\"}}, caFile: {}}}\n    events: [approval-pending]\n    attempts: 1\n",
        offered.port,
        tls.port,
        ours.file("ca.pem")
    ));
    let server = Running::start(&s).await;
    let id = waiting_run(&server).await;
    // The run goes on (a note that fails does not stop it); when it ends, the trail says which
    // notes were not delivered, and why.
    let (status, done) = server.api(reqwest::Method::POST, &format!("/runs/{id}/stages/sign-off/approve"), Some(serde_json::json!({}))).await;
    assert_eq!(status, 200, "{done}");
    // (The entries follow the run's end: its own notes are sent once it has ended.)
    let notes = async || {
        let (_, shown) = server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await;
        let ended = shown["run"]["state"] == "succeeded";
        let notes: Vec<String> =
            shown["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "notification").map(|e| e["detail"].as_str().unwrap().to_string()).collect();
        (ended, notes)
    };
    wait_for("the run's end and its undelivered notes in the trail", async || {
        let (ended, notes) = notes().await;
        ended && notes.len() >= 2
    })
    .await;
    let (_, notes) = notes().await;
    assert_eq!(notes.len(), 2, "{notes:#?}");
    for channel in ["starttls", "tls"] {
        let note = notes.iter().find(|n| n.contains(&format!("note to {channel} not delivered"))).unwrap_or_else(|| panic!("{channel}: {notes:#?}"));
        assert!(note.contains("the SMTP server's TLS certificate is not trusted"), "{note}");
        assert!(note.contains("nothing was sent"), "{note}");
    }
    assert!(notes.iter().any(|n| n.contains("give the CA that signs it with the email's `caFile`")), "{notes:#?}");
    assert!(notes.iter().any(|n| n.contains(&format!("not signed by a CA of `caFile` {}", ours.file("ca.pem")))), "{notes:#?}");
    // Nothing reached either server, in plain text or otherwise.
    assert!(offered.messages().is_empty() && tls.messages().is_empty(), "{:?} {:?}", offered.messages(), tls.messages());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_gets_an_adaptive_card_and_the_webhook_a_link_to_the_decision() {
    // A local HTTP server stands in for Microsoft Teams' workflow webhook (and a generic
    // webhook): it records what it is sent and answers 202 as Teams does.
    let got: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>> = Default::default();
    let app = {
        let got = got.clone();
        axum::Router::new().route(
            "/{path}",
            axum::routing::post(move |axum::extract::Path(path): axum::extract::Path<String>, body: axum::Json<serde_json::Value>| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push((path, body.0));
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stand_in = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let s = pipeline_with(&format!(
        "  - teams: {{url: \"{stand_in}/teams\"}}\n    events: [approval-pending]\n  - webhook: {{url: \"{stand_in}/hook\"}}\n    events: [approval-pending]\n"
    ));
    let server = Running::start(&s).await;
    let id = waiting_run(&server).await;
    wait_for("both notes", async || got.lock().unwrap().len() == 2).await;
    let link = format!("{}/ui/runs/{id}/decisions/sign-off", server.url);
    let notes = got.lock().unwrap().clone();
    let teams = &notes.iter().find(|(p, _)| p == "teams").unwrap().1;
    assert_eq!(teams["type"], "message", "{teams}");
    let attachments = teams["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1, "{teams}");
    assert_eq!(attachments[0]["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &attachments[0]["content"];
    assert_eq!((card["type"].as_str(), card["version"].as_str()), (Some("AdaptiveCard"), Some("1.4")), "{card}");
    assert_eq!(card["$schema"], "http://adaptivecards.io/schemas/adaptive-card.json");
    assert_eq!(card["body"][0]["type"], "TextBlock");
    assert_eq!(card["body"][0]["text"], "Approve deploying checkout v1.7.0 to prod?", "{card}");
    assert!(card["body"].as_array().unwrap().iter().all(|b| b["type"] == "TextBlock" || b["type"] == "FactSet"), "{card}");
    let actions = card["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{card}");
    assert_eq!((actions[0]["type"].as_str(), actions[0]["url"].as_str()), (Some("Action.OpenUrl"), Some(link.as_str())), "{card}");
    assert!(actions[0]["title"].as_str().is_some_and(|t| !t.is_empty()));
    // The generic webhook's JSON carries the same link.
    let hook = &notes.iter().find(|(p, _)| p == "hook").unwrap().1;
    assert_eq!((hook["event"].as_str(), hook["link"].as_str()), (Some("approval-pending"), Some(link.as_str())), "{hook}");
    server.stop().await;
}
