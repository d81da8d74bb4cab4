//! Drift in real environment repos: a hand edit pushed to QA is an alert; rejected, a revert
//! commit restores the promoted files; accepted, the next promotion builds on it; `action: revert`
//! reverts without a person; a force push is restored from the commit promote had seen.

use crate::exec::{Setup, promote, text};
use crate::repos::git;

pub fn hand_edit(s: &Setup, env: &str, edit: impl Fn(&str) -> String, subject: &str) -> String {
    let work = s.path().join(format!("work-{env}-{}", subject.len()));
    let bare = s.path().join(format!("envs/{env}.git"));
    let _ = std::fs::remove_dir_all(&work);
    git(s.path(), &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()]);
    let file = work.join("app/kustomization.yaml");
    std::fs::write(&file, edit(&std::fs::read_to_string(&file).unwrap())).unwrap();
    git(&work, &["-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-qam", subject]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    git(&work, &["rev-parse", "HEAD"]).trim().to_string()
}

fn file_at_head(s: &Setup, env: &str) -> String {
    git(&s.path().join(format!("envs/{env}.git")), &["show", "main:app/kustomization.yaml"])
}

pub fn drift_id(out: &str) -> String {
    out.split_whitespace().find(|w| w.starts_with("d-")).unwrap().trim_end_matches(':').to_string()
}

#[test]
fn a_hand_edit_is_an_alert_that_a_rejection_reverts_and_an_acceptance_keeps() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n", "");
    let run = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.1.0"]);
    assert!(run.status.success(), "{}", text(&run));
    let promoted = file_at_head(&s, "qa");
    let clean = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    assert!(clean.status.success() && text(&clean).contains("qa: no drift"), "{}", text(&clean));

    // A hotfix pushed by hand.
    let hotfix = hand_edit(&s, "qa", |t| t.replace("newTag: 1.1.0", "newTag: 6.6.6-hotfix"), "hotfix: pin 6.6.6");
    let found = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    let out = text(&found);
    assert_eq!(found.status.code(), Some(1), "an open drift: {out}");
    assert!(out.contains("1 commit(s) promote did not make, by Dev <dev@example.com>: \"hotfix: pin 6.6.6\""), "{out}");
    let id = drift_id(&out);
    let shown = text(&promote(s.path(), &["drift", "show", &id]));
    assert!(shown.contains(&hotfix[..10]) && shown.contains("+    newTag: 6.6.6-hotfix") && shown.contains("-    newTag: 1.1.0"), "{shown}");
    let again = text(&promote(s.path(), &["drift", "check", "pipeline.yaml"]));
    assert!(again.contains(&format!("drift {id} (open), seen before")), "recorded once: {again}");

    // A promotion into qa waits while the drift is undecided.
    let detached = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.1.5", "--detach"]);
    assert!(detached.status.success(), "{}", text(&detached));
    let run_id = text(&detached).split_whitespace().find(|w| w.len() == 26 && w.chars().all(|c| c.is_ascii_alphanumeric())).unwrap().to_string();
    // `--detach` leaves it to a process of its own.
    let dir = s.path().to_path_buf();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let st = text(&promote(&dir, &["status", &run_id]));
        if st.contains("has an undecided drift") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the deploy did not wait for the drift: {st}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Rejected: a reason is needed; then a new commit restores the promoted file.
    let no_reason = promote(s.path(), &["drift", "reject", "pipeline.yaml", &id, "--as", "alice", "--reason", " "]);
    assert_eq!(no_reason.status.code(), Some(2), "{}", text(&no_reason));
    let rejected = promote(s.path(), &["drift", "reject", "pipeline.yaml", &id, "--as", "alice", "--reason", "hotfixes go through the pipeline"]);
    assert!(rejected.status.success(), "{}", text(&rejected));
    assert_eq!(file_at_head(&s, "qa").replace("1.1.5", "1.1.0"), promoted, "Git is back at the promoted file");
    let head = git(&s.path().join("envs/qa.git"), &["log", "-1", "--format=%s%n%b", "main"]);
    assert!(head.starts_with("revert drift in qa to ") && head.contains(&format!("Promote-Revert-Of: {hotfix}")) && head.contains("Promote-Seal: "), "{head}");
    // The waiting promotion goes on, on top of the revert.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !text(&promote(&dir, &["status", &run_id])).contains("succeeded") {
        assert!(std::time::Instant::now() < deadline, "the promotion did not go on: {}", text(&promote(&dir, &["status", &run_id])));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(s.commits("qa")[0], "promote checkout 1.1.5 to qa");
    assert!(s.commits("qa")[1].starts_with("revert drift in qa to "), "{:?}", s.commits("qa"));
    let after = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    assert!(after.status.success() && text(&after).contains("qa: no drift"), "promote's revert is no drift: {}", text(&after));
    let again = promote(s.path(), &["drift", "reject", "pipeline.yaml", &id, "--as", "alice", "--reason", "x"]);
    assert_eq!(again.status.code(), Some(2), "decided once: {}", text(&again));

    // Accepted: kept, and the next promotion builds on it.
    hand_edit(&s, "qa", |t| format!("{t}commonLabels:\n  team: payments\n"), "label the team");
    let out = text(&promote(s.path(), &["drift", "check", "pipeline.yaml"]));
    let id2 = drift_id(&out);
    // Decided by its id alone: the id names the pipeline, whose file its runs name.
    let accepted = promote(s.path(), &["drift", "accept", &id2, "--as", "alice", "--reason", "labels are fine"]);
    assert!(accepted.status.success(), "{}", text(&accepted));
    let clean = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    assert!(clean.status.success(), "accepted is the new baseline: {}", text(&clean));
    let run = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.2.0"]);
    assert!(run.status.success(), "{}", text(&run));
    let now = file_at_head(&s, "qa");
    assert!(now.contains("newTag: 1.2.0") && now.contains("team: payments"), "{now}");

    // The trail has each step.
    let log = text(&promote(s.path(), &["audit", "log"]));
    for want in [
        format!("drift {id} in qa"),
        format!("drift {id} in qa rejected by alice: hotfixes go through the pipeline"),
        format!("drift {id2} in qa accepted by alice"),
    ] {
        assert!(log.contains(&want), "`{want}` in the trail:\n{log}");
    }
    let list = text(&promote(s.path(), &["drift", "list"]));
    assert!(list.contains(&format!("{id}  rejected")) && list.contains(&format!("{id2}  accepted")), "{list}");
}

#[test]
fn drift_with_action_revert_is_reverted_without_a_person_and_a_force_push_is_restored() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n", "");
    let text_before = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text_before.replacen("    repo: envs/qa.git\n", "    repo: envs/qa.git\n    drift: {action: revert}\n", 1)).unwrap();
    assert!(promote(s.path(), &["run", "pipeline.yaml", "--version", "1.1.0"]).status.success());
    let promoted = file_at_head(&s, "qa");
    hand_edit(&s, "qa", |t| t.replace("newTag: 1.1.0", "newTag: 9.9.9"), "quick fix");
    let out = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    assert!(out.status.success(), "reverted, nothing open: {}", text(&out));
    assert!(text(&out).contains("reverted at once"), "{}", text(&out));
    assert_eq!(file_at_head(&s, "qa"), promoted);

    // A force push that drops promote's commits: restored on top, from what promote had seen.
    let bare = s.path().join("envs/qa.git");
    let work = s.path().join("work-force");
    git(s.path(), &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()]);
    git(&work, &["reset", "-q", "--hard", "HEAD~2"]);
    std::fs::write(work.join("app/kustomization.yaml"), "images:\n  - name: registry.example.com/acme/checkout\n    newTag: 0.0.1-evil\n").unwrap();
    git(&work, &["-c", "user.name=Mallory", "-c", "user.email=m@example.com", "commit", "-qam", "rewrite"]);
    git(&work, &["push", "-q", "--force", "origin", "HEAD:main"]);
    let out = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    assert!(text(&out).contains("the history was rewritten"), "{}", text(&out));
    assert_eq!(file_at_head(&s, "qa"), promoted, "the files promote had seen are back");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_raises_drift_on_the_environment_repos_push_webhook_and_the_api_rejects_it() {
    use crate::server::{Running, sign, wait_for};
    let s = crate::server::setup();
    let server = Running::start(&s).await;
    // QA promoted (the run then waits for its sign-off).
    let (status, _) = server.api(reqwest::Method::POST, "/runs", Some(serde_json::json!({"pipeline": "checkout", "version": "1.1.0"}))).await;
    assert_eq!(status, 201);
    wait_for("qa", async || s.commits("qa").first().is_some_and(|c| c == "promote checkout 1.1.0 to qa")).await;
    let promoted = file_at_head(&s, "qa");
    let hotfix = tokio::task::block_in_place(|| hand_edit(&s, "qa", |t| t.replace("newTag: 1.1.0", "newTag: 6.6.6"), "hotfix"));
    // The environment repo's push webhook (GitHub's shape; the repo named as the server knows it).
    let body =
        serde_json::to_vec(&serde_json::json!({"ref": "refs/heads/main", "after": hotfix, "deleted": false, "repository": {"full_name": "envs/qa"}})).unwrap();
    let sent = std::time::Instant::now();
    let (status, _) = server.hook(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sign(&body))], body).await;
    assert_eq!(status, 202, "a push to an environment repo starts no run");
    let mut drift = serde_json::Value::Null;
    wait_for("the drift", async || {
        let (_, all) = server.api(reqwest::Method::GET, "/drifts", None).await;
        drift = all["drifts"][0].clone();
        drift["state"] == "open"
    })
    .await;
    let raised = sent.elapsed();
    assert!(raised < std::time::Duration::from_secs(5), "raised by the webhook, not a poll: {raised:?}");
    assert_eq!(drift["commits"][0]["id"], hotfix.as_str());
    assert_eq!(drift["environment"], "qa");
    let id = drift["id"].as_str().unwrap().to_string();
    // It waits in alice's inbox on the web pages, with its commit.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = crate::server::sign_in(&http, &server.url, crate::server::ALICE).await;
    let inbox = http.get(format!("{}/ui/", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(inbox.contains(&format!("id=\"drift-{id}\"")) && inbox.contains(&hotfix[..10]) && inbox.contains("Reject and revert"), "{inbox}");
    // Its own page, in words; a revert without a reason is asked for in place; the
    // confirmation names the action.
    let page = format!("{}/ui/drifts/{id}", server.url);
    let html = http.get(&page).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("Keep the change to qa of checkout that did not come through the pipeline?"), "{html}");
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let r = http.post(&page).header("cookie", &cookie).form(&[("csrf", csrf.as_str()), ("decision", "reject"), ("reason", " ")]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("Say why you revert it"));
    let r = http.post(&page).header("cookie", &cookie).form(&[("csrf", csrf.as_str()), ("decision", "reject"), ("reason", "by hand")]).send().await.unwrap();
    assert!(r.text().await.unwrap().contains(">Revert the change to qa of checkout</button>"));
    // The CLI against the server, with alice's token: the list, then the rejection.
    let cli = |args: &[&str]| {
        std::process::Command::new(crate::promote_bin())
            .current_dir(s.path())
            .env("PROMOTE_SERVER", &server.url)
            .env("PROMOTE_TOKEN", crate::server::ALICE)
            .args(args)
            .output()
            .unwrap()
    };
    let listed = tokio::task::block_in_place(|| cli(&["drift", "list"]));
    assert!(text(&listed).contains(&format!("{id}  open")), "{}", text(&listed));
    let as_bob = tokio::task::block_in_place(|| cli(&["drift", "reject", "pipeline.yaml", &id, "--as", "bob", "--reason", "x"]));
    assert_eq!(as_bob.status.code(), Some(2), "the token is alice's: {}", text(&as_bob));
    let done = tokio::task::block_in_place(|| cli(&["drift", "reject", "pipeline.yaml", &id, "--as", "alice", "--reason", "not through the pipeline"]));
    assert!(done.status.success() && text(&done).contains(&format!("drift {id} in qa rejected by alice")), "{}", text(&done));
    assert_eq!(tokio::task::block_in_place(|| file_at_head(&s, "qa")), promoted);
    server.stop().await;
}

#[test]
fn a_drift_the_pipelines_policy_denies_is_reverted_without_a_person() {
    let s = Setup::new("  policy:\n    policy: {policies: [no-hotfix.rego]}\n  qa:\n    needs: [policy]\n    deploy: {environment: qa}\n", "");
    std::fs::write(
        s.path().join("no-hotfix.rego"),
        "package promote.drift\n\n# Hand-pinned hotfix images never stay.\ndeny contains msg if {\n\tinput.phase == \"drift\"\n\tsome m in input.manifests\n\tsome img in m.object.images\n\tendswith(img.newTag, \"-hotfix\")\n\tmsg := sprintf(\"%s pins %s by hand\", [m.file, img.newTag])\n}\n",
    )
    .unwrap();
    let run = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.1.0"]);
    assert!(run.status.success(), "{}", text(&run));
    let promoted = file_at_head(&s, "qa");
    // A drift the policy has nothing against stays open for a person.
    hand_edit(&s, "qa", |t| format!("{t}commonLabels:\n  owner: sre\n"), "label");
    let out = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let id = drift_id(&text(&out));
    assert!(promote(s.path(), &["drift", "accept", "pipeline.yaml", &id, "--as", "alice"]).status.success());
    let labelled = file_at_head(&s, "qa");
    // One it denies is reverted at once.
    hand_edit(&s, "qa", |t| t.replace("newTag: 1.1.0", "newTag: 6.6.6-hotfix"), "pin the hotfix");
    let out = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    let said = text(&out);
    assert!(out.status.success(), "nothing open: {said}");
    assert!(said.contains("policy denied the drifted state: app/kustomization.yaml pins 6.6.6-hotfix by hand"), "{said}");
    assert_eq!(file_at_head(&s, "qa"), labelled, "back to the accepted state");
    assert_ne!(labelled, promoted);
    let list = text(&promote(s.path(), &["drift", "list"]));
    assert!(list.lines().next().unwrap().contains("reverted"), "{list}");
}

crate::both_backends! {
/// A first run that finds an environment already at its version writes nothing, and adopts the
/// state it found as approved: a hand edit after it is a drift at once, not only after the next
/// real promotion.
fn an_environment_found_at_its_version_is_adopted_and_watched_for_drift_from_then_on() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n", "");
    // qa holds 1.0.0 already (the repos start there).
    let run = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.0.0"]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(s.commits("qa").is_empty(), "nothing written: {:?}", s.commits("qa"));
    let log = text(&promote(s.path(), &["audit", "log"]));
    assert!(log.contains("qa at head") && log.contains("recorded as approved") && log.contains("adopted: qa already held 1.0.0"), "{log}");
    let clean = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    assert!(clean.status.success() && text(&clean).contains("qa: no drift"), "{}", text(&clean));
    hand_edit(&s, "qa", |t| t.replace("newTag: 1.0.0", "newTag: 6.6.6"), "hotfix");
    let found = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    assert_eq!(found.status.code(), Some(1), "{}", text(&found));
    assert!(text(&found).contains("1 commit(s) promote did not make"), "{}", text(&found));
    // Adopted once: a second run at the same version adopts nothing more.
    let again = promote(s.path(), &["drift", "list"]);
    assert_eq!(text(&again).matches("accepted").count(), 1, "{}", text(&again));
    assert!(text(&again).contains("adopted as the approved state"), "{}", text(&again));
    // Decided by id when the file moved: the message says how to name it.
    let id = drift_id(&text(&found));
    std::fs::rename(s.path().join("pipeline.yaml"), s.path().join("moved.yaml")).unwrap();
    let lost = promote(s.path(), &["drift", "accept", &id, "--as", "alice"]);
    assert_eq!(lost.status.code(), Some(2), "{}", text(&lost));
    assert!(text(&lost).contains("not there any more: name the pipeline file with --pipeline FILE"), "{}", text(&lost));
    let named = promote(s.path(), &["drift", "accept", &id, "--as", "alice", "--pipeline", "moved.yaml"]);
    assert!(named.status.success(), "{}", text(&named));
}
}
