//! Drift in real environment repos: a hand edit pushed to QA is an alert; rejected, a revert
//! commit restores the promoted files; accepted, the next promotion builds on it; `action: revert`
//! reverts without a person; a force push is restored from the commit promote had seen.

use crate::exec::{Setup, promote, text};
use crate::repos::git;

fn hand_edit(s: &Setup, env: &str, edit: impl Fn(&str) -> String, subject: &str) -> String {
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

fn drift_id(out: &str) -> String {
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

    // Rejected: a reason is needed; then a new commit restores the promoted file.
    let no_reason = promote(s.path(), &["drift", "reject", "pipeline.yaml", &id, "--as", "alice", "--reason", " "]);
    assert_eq!(no_reason.status.code(), Some(2), "{}", text(&no_reason));
    let rejected = promote(s.path(), &["drift", "reject", "pipeline.yaml", &id, "--as", "alice", "--reason", "hotfixes go through the pipeline"]);
    assert!(rejected.status.success(), "{}", text(&rejected));
    assert_eq!(file_at_head(&s, "qa"), promoted, "Git is back at the promoted file");
    let head = git(&s.path().join("envs/qa.git"), &["log", "-1", "--format=%s%n%b", "main"]);
    assert!(head.starts_with("revert drift in qa to ") && head.contains(&format!("Promote-Revert-Of: {hotfix}")) && head.contains("Promote-Seal: "), "{head}");
    let after = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    assert!(after.status.success() && text(&after).contains("qa: no drift"), "promote's revert is no drift: {}", text(&after));
    let again = promote(s.path(), &["drift", "reject", "pipeline.yaml", &id, "--as", "alice", "--reason", "x"]);
    assert_eq!(again.status.code(), Some(2), "decided once: {}", text(&again));

    // Accepted: kept, and the next promotion builds on it.
    hand_edit(&s, "qa", |t| format!("{t}commonLabels:\n  team: payments\n"), "label the team");
    let out = text(&promote(s.path(), &["drift", "check", "pipeline.yaml"]));
    let id2 = drift_id(&out);
    let accepted = promote(s.path(), &["drift", "accept", "pipeline.yaml", &id2, "--as", "alice", "--reason", "labels are fine"]);
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
