//! Issue 29: an approval that waits reminds the approvers who have not decided (`remindEvery`)
//! and escalates once (`escalateAfter`, `escalateTo`), by email through a real SMTP server
//! (aiosmtpd), durably: a server restarted over the same state neither repeats nor loses a
//! note, on SQLite and on PostgreSQL.

use crate::notes::{Smtp, unfolded, waiting_run};
use crate::server::{ALICE, Running, setup, wait_for};

const BOB: &str = "prt_bob_server_token_000001";

/// The server's pipeline with `sign-off` needing two of group release-managers (alice, bob),
/// reminding every second and escalating to group managers (carol, dave) after 3 s; one email
/// channel for `approval-pending` (which carries reminders and escalations too).
fn reminding(smtp: &Smtp) -> crate::exec::Setup {
    let s = setup();
    let main = s.path().join("pipeline.yaml");
    let text = std::fs::read_to_string(&main).unwrap();
    let approval = "approval: {approvers: [group:release-managers], minApprovals: 2, remindEvery: 1s, escalateAfter: 3s, escalateTo: [group:managers]}";
    let channel = format!(
        "notifications:\n  - name: approvers\n    email: {{to: [group:release-managers], smtp: {{url: \"smtp://127.0.0.1:{}\"}}}}\n    events: [approval-pending]\n",
        smtp.port
    );
    let text = text.replacen("approval: {approvers: [alice]}", approval, 1).replacen("users: users.yaml\n", &format!("users: users.yaml\n{channel}"), 1);
    std::fs::write(&main, text).unwrap();
    let hash = promote::governance::users::hash_token;
    std::fs::write(
        s.path().join("users.yaml"),
        format!(
            "users:\n  alice: {{name: Alice, email: alice@example.com, groups: [release-managers], token: \"{}\"}}\n  bob: {{name: Bob, email: bob@example.com, groups: [release-managers], token: \"{}\"}}\n  carol: {{name: Carol, email: carol@example.com, groups: [managers]}}\n  dave: {{name: Dave, email: dave@example.com, groups: [managers]}}\n",
            hash(ALICE),
            hash(BOB)
        ),
    )
    .unwrap();
    s
}

/// An email as a person sees it: to whom (the envelope, sorted), its subject, its body.
struct Mail {
    to: Vec<String>,
    subject: String,
    text: String,
}

fn mails(smtp: &Smtp) -> Vec<Mail> {
    smtp.messages()
        .iter()
        .map(|m| {
            let text = unfolded(m);
            let mut to: Vec<String> = text.lines().find_map(|l| l.strip_prefix("X-Envelope-To: ")).unwrap().split(", ").map(String::from).collect();
            to.sort();
            let subject = text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default().to_string();
            Mail { to, subject, text }
        })
        .collect()
}

/// The reminder numbers of the reminder emails, in the order received.
fn reminder_numbers(all: &[Mail]) -> Vec<i64> {
    all.iter()
        .filter(|m| m.subject.starts_with("Reminder:"))
        .map(|m| m.text.split("(reminder ").nth(1).and_then(|r| r.split(')').next()).and_then(|n| n.parse().ok()).expect("a reminder says its number"))
        .collect()
}

/// The run's trail entries of `kind`, oldest first: (entry number, detail).
async fn entries(server: &Running, id: &str, kind: &str) -> Vec<(i64, String)> {
    let (_, shown) = server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await;
    shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| (e["seq"].as_i64().or(e["id"].as_i64()).unwrap_or_default(), e["detail"].as_str().unwrap_or_default().to_string()))
        .collect()
}

async fn approve(server: &Running, id: &str, token: &str) {
    let r = server
        .http
        .post(format!("{}/api/v1/runs/{id}/stages/sign-off/approve", server.url))
        .bearer_auth(token)
        .json(&serde_json::json!({"comment": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

crate::both_backends! {
async fn reminders_reach_who_has_not_decided_and_a_restart_neither_repeats_nor_loses_one() {
    let Some(smtp) = Smtp::start() else { return };
    let s = reminding(&smtp);
    let first = Running::start(&s).await;
    let id = waiting_run(&first).await;
    let page = format!("/ui/runs/{id}/decisions/sign-off");
    // alice decides at once; bob does not.
    approve(&first, &id, ALICE).await;
    wait_for("a reminder", async || !reminder_numbers(&mails(&smtp)).is_empty()).await;

    // The server stops (as at an upgrade) and another starts over the same state.
    first.stop().await;
    let before = reminder_numbers(&mails(&smtp));
    let second = Running::start(&s).await;
    wait_for("reminders from the new server and the escalation", async || {
        let all = mails(&smtp);
        reminder_numbers(&all).len() > before.len() + 1 && all.iter().any(|m| m.subject.starts_with("Escalated:"))
    })
    .await;
    approve(&second, &id, BOB).await;
    wait_for("prod", async || second.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["run"]["state"] == "succeeded").await;
    assert_eq!(s.commits("prod"), ["promote checkout v1.7.0 to prod"]);

    let all = mails(&smtp);
    // The question, once, to the group; not again when the second server took the run over.
    let asked: Vec<&Mail> = all.iter().filter(|m| m.subject == "Approve deploying checkout v1.7.0 to prod?").collect();
    assert_eq!(asked.len(), 1, "the question is sent once: {:?}", all.iter().map(|m| &m.subject).collect::<Vec<_>>());
    assert_eq!(asked[0].to, ["alice@example.com", "bob@example.com"]);
    // Reminders: only to bob (alice decided), in a business person's words, with the page's link;
    // each number once and in order, across the restart: none repeated.
    let numbers = reminder_numbers(&all);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "no reminder twice: {numbers:?} (before the restart: {before:?})");
    assert!(numbers.len() > before.len(), "the new server went on reminding: {numbers:?} (before the restart: {before:?})");
    for m in all.iter().filter(|m| m.subject.starts_with("Reminder:")) {
        assert_eq!(m.to, ["bob@example.com"], "{}", m.text);
        assert_eq!(m.subject, "Reminder: Approve deploying checkout v1.7.0 to prod?");
        assert!(m.text.contains("1 of 2 approvals; not yet decided: group:release-managers"), "{}", m.text);
        assert!(m.text.contains("Open it: http://127.0.0.1:") && m.text.contains(&page), "{}", m.text);
    }
    // The escalation: once, to the managers' members, with the link.
    let escalated: Vec<&Mail> = all.iter().filter(|m| m.subject.starts_with("Escalated:")).collect();
    assert_eq!(escalated.len(), 1, "escalated once");
    assert_eq!(escalated[0].to, ["carol@example.com", "dave@example.com"]);
    assert_eq!(escalated[0].subject, "Escalated: Approve deploying checkout v1.7.0 to prod?");
    assert!(escalated[0].text.contains("Nobody has decided in 3s: 1 of 2 approvals from group:release-managers"), "{}", escalated[0].text);
    assert!(escalated[0].text.contains(&page), "{}", escalated[0].text);

    // The trail has each note sent, and only those: one entry per reminder email, with its
    // number and to whom, one for the escalation, one for the question; none after bob decided.
    let reminded = entries(&second, &id, "approval-reminder").await;
    let shown: Vec<i64> = reminded.iter().map(|(_, d)| d.split("reminder ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()).collect();
    assert_eq!(shown, numbers, "{reminded:?}");
    assert!(reminded.iter().all(|(_, d)| d.contains("sent to group:release-managers (1 of 2 approvals after")), "{reminded:?}");
    let escalations = entries(&second, &id, "approval-escalation").await;
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    assert!(escalations[0].1.starts_with("escalated to group:managers after 3s"), "{escalations:?}");
    assert_eq!(entries(&second, &id, "approval-pending").await.len(), 1);
    let decided = entries(&second, &id, "decision").await;
    let bob_decided = decided.iter().find(|(_, d)| d.contains("bob")).expect("bob's decision is in the trail").0;
    assert!(reminded.iter().chain(&escalations).all(|(n, _)| *n < bob_decided), "no note after the decision: {reminded:?} {escalations:?} {decided:?}");
    // Every note was delivered.
    assert!(entries(&second, &id, "notification").await.is_empty());
    second.stop().await;
}
}

crate::both_backends! {
/// Two replicas (two stores over one state) asking for the same note: one takes it; a note
/// never goes back to an earlier number; an escalation and a new attempt's notes are their own.
async fn of_two_replicas_one_takes_each_note_and_the_trail_says_so() {
    let s = crate::exec::Setup::new("  qa:\n    deploy: {environment: qa}\n", "");
    let a = promote::store::Store::open(&s.state()).await.unwrap();
    let b = promote::store::Store::open(&s.state()).await.unwrap();
    let claim = |store: &promote::store::Store, kind: &'static str, since: i64, seq: i64| {
        let store = store.clone();
        async move { store.claim_note("r1", "sign-off", since, kind.parse().unwrap(), seq, &format!("{kind} {seq} of the wait at {since}")).await.unwrap() }
    };
    let (x, y) = tokio::join!(claim(&a, "approval-reminder", 1000, 1), claim(&b, "approval-reminder", 1000, 1));
    assert!(x ^ y, "exactly one replica takes reminder 1: {x} {y}");
    assert!(!claim(&a, "approval-reminder", 1000, 1).await, "taken already");
    assert!(claim(&b, "approval-reminder", 1000, 3).await, "a later one (2 fell due while nobody looked)");
    assert!(!claim(&a, "approval-reminder", 1000, 2).await, "never back to an earlier one");
    assert!(claim(&a, "approval-escalation", 1000, 1).await);
    assert!(!claim(&b, "approval-escalation", 1000, 1).await, "escalated once");
    assert!(claim(&b, "approval-reminder", 2000, 1).await, "a new attempt's wait has its own");
    let trail = a.audit_entries(None, 0, 100).await.unwrap();
    let details: Vec<&str> = trail.iter().filter(|e| e.kind.starts_with("approval-")).map(|e| e.detail.as_str()).collect();
    assert_eq!(
        details,
        ["approval-reminder 1 of the wait at 1000", "approval-reminder 3 of the wait at 1000", "approval-escalation 1 of the wait at 1000", "approval-reminder 1 of the wait at 2000"]
    );
}
}

/// `promote validate` on `stages` (with a users file of alice and carol): stderr, and the exit code.
fn validate(stages: &str, extra: &str) -> (String, Option<i32>) {
    let s = crate::exec::Setup::new(stages, &format!("users: users.yaml\n{extra}"));
    std::fs::write(
        s.path().join("users.yaml"),
        "users:\n  alice: {name: Alice, email: alice@example.com, groups: [managers]}\n  carol: {name: Carol, email: carol@example.com}\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::promote_bin()).args(["validate", s.file.to_str().unwrap()]).output().unwrap();
    (String::from_utf8_lossy(&out.stderr).into_owned(), out.status.code())
}

#[test]
fn validate_checks_reminders_and_escalation_at_their_place() {
    let (err, code) = validate(
        "  sign-off:\n    approval: {approvers: [alice], remindEvery: 0s, escalateAfter: 2h, timeout: 1h}\n  again:\n    needs: [sign-off]\n    approval: {approvers: [alice], escalateTo: [group:managers, \"not an@address\"]}\n",
        "",
    );
    assert_eq!(code, Some(2), "{err}");
    for want in [
        ":20:49: error: `remindEvery` must be longer than 0s",
        ":20:68: warning: `escalateAfter: 2h` is not before the approval's `timeout: 1h`: the escalation would never be sent",
        ":20:68: error: `escalateAfter` needs `escalateTo`",
        ":23:49: error: `escalateTo` needs `escalateAfter`",
        ":23:65: error: `not an@address` in `escalateTo` is not a person, `group:NAME` or an email address",
    ] {
        assert!(err.contains(want), "{want} in:\n{err}");
    }

    // People against the users file as approvers are; reminders no channel would carry.
    let (err, code) = validate(
        "  sign-off:\n    approval: {approvers: [alice], remindEvery: 4h, escalateAfter: 1d, escalateTo: [group:managers, carla, board@example.com]}\n",
        "notifications:\n  - slack: {url: \"https://hooks.example.com/x\"}\n    events: [stage-failed, approval-escalation]\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(":20:101: error: escalateTo: `carla` is not in the users file; did you mean `carol`?"), "{err}");
    assert!(err.contains(":20:49: warning: `remindEvery`: no notification carries `approval-reminder`"), "{err}");
    assert!(!err.contains("approval-escalation`"), "a channel carries the escalation: {err}");

    // A channel of `approval-pending` carries both: valid.
    let (err, code) = validate(
        "  sign-off:\n    approval: {approvers: [alice], remindEvery: 4h, escalateAfter: 1d, escalateTo: [group:managers, board@example.com]}\n",
        "notifications:\n  - slack: {url: \"https://hooks.example.com/x\"}\n    events: [approval-pending]\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("approval-"), "{err}");
}
