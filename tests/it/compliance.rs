//! Compliance on real bare repos and real Rego: the company's policy changes and prod, as it
//! stands, breaks it; the violation is recorded once, accepted as an exception that expires and
//! comes back, then reverted by a new commit to the newest commit the policies allow. On both
//! backends.

use crate::exec::{Setup, promote, text};
use crate::repos::{EnvRepo, git};

/// Before: the company bans nothing in prod but NodePort services.
const POLICY_BEFORE: &str = r#"package compliance.services
import rego.v1

deny contains msg if {
    input.environment == "prod"
    some m in input.manifests
    m.kind == "Service"
    m.object.spec.type == "NodePort"
    msg := sprintf("%s: Service %s is of type NodePort", [m.file, m.name])
}
"#;

/// After: LoadBalancers are banned in prod too.
const POLICY_AFTER: &str = r#"package compliance.services
import rego.v1

deny contains msg if {
    input.environment == "prod"
    some m in input.manifests
    m.kind == "Service"
    m.object.spec.type in {"NodePort", "LoadBalancer"}
    msg := sprintf("%s: Service %s is of type %s", [m.file, m.name, m.object.spec.type])
}
"#;

const LOADBALANCER: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: LoadBalancer\n  ports: [{port: 80}]\n";

/// A pipeline whose policies judge prod (QA, the policy check, prod), alice an `sre` in its
/// users file, and the policies that allow a LoadBalancer; with prod's repository.
fn guarded() -> (Setup, EnvRepo) {
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n  policy-check:\n    needs: [qa]\n    policy: {policies: [policies/]}\n  prod:\n    needs: [policy-check]\n    deploy: {environment: prod}\n",
        "users: users.yaml\n",
    );
    std::fs::write(s.path().join("users.yaml"), "users:\n  alice: {name: Alice, email: alice@example.com, groups: [sre]}\n").unwrap();
    std::fs::create_dir(s.path().join("policies")).unwrap();
    std::fs::write(s.path().join("policies/services.rego"), POLICY_BEFORE).unwrap();
    let prod = EnvRepo { bare: s.path().join("envs/prod.git"), work: s.path().join("envs/prod-work") };
    (s, prod)
}

fn violation_id(out: &str) -> String {
    out.split_whitespace().find(|w| w.starts_with("c-")).unwrap_or_else(|| panic!("no violation id in: {out}")).trim_end_matches(':').to_string()
}

crate::both_backends! {
    fn a_policy_change_makes_prod_non_compliant_an_exception_expires_and_a_revert_restores_the_last_compliant_commit() {
        let (s, prod) = guarded();
        let run = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.0.0"]);
        assert!(run.status.success(), "{}", text(&run));
        let promoted = prod.head();
        // Someone adds a LoadBalancer to prod, which the policies allow today.
        prod.commit_as_someone_else("app/service.yaml", LOADBALANCER, "expose web");
        let clean = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
        assert!(clean.status.success(), "{}", text(&clean));
        assert!(text(&clean).contains("prod: compliant") && text(&clean).contains("qa: compliant"), "{}", text(&clean));

        // The company's policy changes: prod, as it stands, breaks it.
        std::fs::write(s.path().join("policies/services.rego"), POLICY_AFTER).unwrap();
        let found = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
        let out = text(&found);
        assert_eq!(found.status.code(), Some(1), "a violation is exit 1: {out}");
        assert!(out.contains("app/service.yaml: Service web is of type LoadBalancer"), "{out}");
        assert!(out.contains("qa: compliant"), "qa is not prod: {out}");
        let id = violation_id(&out);
        let again = text(&promote(s.path(), &["compliance", "check", "pipeline.yaml"]));
        assert!(again.contains(&format!("violation {id}")) && again.contains("seen before"), "recorded once: {again}");
        let json: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["compliance", "check", "pipeline.yaml", "--json"]).stdout).unwrap();
        let prod_item = json["items"].as_array().unwrap().iter().find(|i| i["environment"] == "prod").unwrap();
        assert_eq!(prod_item["standing"], "violation", "{json}");
        assert_eq!(prod_item["violation"]["id"], id.as_str(), "{json}");

        // An exception needs a reason; with one, it holds until it ends, then the violation is back.
        let no_reason = promote(s.path(), &["compliance", "accept", &id, "--as", "alice", "--reason", " ", "--for", "2s"]);
        assert_eq!(no_reason.status.code(), Some(2), "{}", text(&no_reason));
        assert!(text(&no_reason).contains("an exception needs a reason"), "{}", text(&no_reason));
        let accepted = promote(s.path(), &["compliance", "accept", &id, "--as", "alice", "--reason", "the partner API needs it until the gateway lands", "--for", "2s"]);
        assert!(accepted.status.success(), "{}", text(&accepted));
        assert!(text(&accepted).contains("accepted by alice as an exception until"), "{}", text(&accepted));
        let excepted = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
        assert!(excepted.status.success(), "an exception is no open violation: {}", text(&excepted));
        assert!(text(&excepted).contains(&format!("violation {id} accepted as an exception by alice")), "{}", text(&excepted));
        std::thread::sleep(std::time::Duration::from_millis(2500));
        let expired = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
        assert_eq!(expired.status.code(), Some(1), "the exception ended: {}", text(&expired));
        assert_eq!(violation_id(&text(&expired)), id, "the same violation opens again");
        let shown = text(&promote(s.path(), &["compliance", "show", &id]));
        assert!(shown.contains(": open") && shown.contains("the exception ended"), "{shown}");

        // Reverted: a new commit restores the files of the newest commit the policies allow.
        let reverted = promote(s.path(), &["compliance", "revert", &id, "--as", "alice", "--reason", "no exception this time"]);
        assert!(reverted.status.success(), "{}", text(&reverted));
        let head = prod.message("main");
        assert!(head.starts_with(&format!("revert prod to {} for compliance", &promoted[..10])), "{head}");
        assert!(head.contains(&format!("Promote-Revert-To: {promoted}")) && head.contains("Promote-Reason: compliance") && head.contains("Promote-Seal: "), "{head}");
        let files = git(&prod.bare, &["ls-tree", "-r", "--name-only", "main"]);
        assert!(!files.contains("app/service.yaml"), "the LoadBalancer is gone: {files}");
        let after = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
        assert!(after.status.success() && text(&after).contains("prod: compliant"), "{}", text(&after));
        let twice = promote(s.path(), &["compliance", "revert", &id, "--as", "alice"]);
        assert_eq!(twice.status.code(), Some(2), "decided once: {}", text(&twice));

        // The trail has each step.
        let log = text(&promote(s.path(), &["audit", "log"]));
        for want in [
            format!("compliance violation {id} in prod"),
            format!("compliance violation {id} in prod accepted by alice until"),
            format!("compliance violation {id} in prod open by promote"),
            format!("compliance violation {id} in prod reverted by alice"),
        ] {
            assert!(log.contains(&want), "`{want}` in the trail:\n{log}");
        }
        let list = text(&promote(s.path(), &["compliance", "list"]));
        assert!(list.contains(&format!("{id}  reverted")), "{list}");
    }
}

crate::both_backends! {
    fn with_action_revert_a_violation_is_reverted_without_a_person_and_with_nothing_compliant_it_only_alerts() {
        let s = Setup::new("  qa:\n    deploy: {environment: qa}\n  policy-check:\n    needs: [qa]\n    policy: {policies: [policies/]}\n", "compliance: {every: 1h, action: revert}\n");
        std::fs::create_dir(s.path().join("policies")).unwrap();
        // qa must carry a team label; its very first commit does not.
        std::fs::write(
            s.path().join("policies/labels.rego"),
            "package compliance.labels\nimport rego.v1\n\ndeny contains msg if {\n    input.environment == \"qa\"\n    some m in input.manifests\n    m.file == \"app/kustomization.yaml\"\n    not m.object.commonLabels.team\n    msg := sprintf(\"%s has no team label\", [m.file])\n}\n",
        )
        .unwrap();
        let qa = EnvRepo { bare: s.path().join("envs/qa.git"), work: s.path().join("envs/qa-work") };
        let found = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
        let out = text(&found);
        assert_eq!(found.status.code(), Some(1), "{out}");
        assert!(out.contains("app/kustomization.yaml has no team label") && out.contains("not reverted: no earlier commit of qa"), "nothing to go back to: {out}");
        // A labelled state, then an unlabelled one: reverted at once to the labelled one.
        let base = qa.show("app/kustomization.yaml");
        let labelled = qa.commit_as_someone_else("app/kustomization.yaml", &format!("{base}commonLabels:\n  team: payments\n"), "label the team");
        qa.commit_as_someone_else("app/kustomization.yaml", &base, "drop the label");
        let out = text(&promote(s.path(), &["compliance", "check", "pipeline.yaml"]));
        assert!(out.contains("reverted at once: commit"), "{out}");
        assert!(qa.message("main").starts_with(&format!("revert qa to {} for compliance", &labelled[..10])), "{}", qa.message("main"));
        assert!(qa.show("app/kustomization.yaml").contains("team: payments"));
        let after = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
        assert!(after.status.success() && text(&after).contains("qa: compliant"), "{}", text(&after));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_judges_prod_within_seconds_of_a_policy_change_and_its_page_and_api_decide() {
    use crate::server::{ALICE, Running, wait_for};
    let s = crate::server::setup();
    let text_before = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text_before.replacen("  sign-off:\n", "  policy-check:\n    needs: [qa]\n    policy: {policies: [policies/]}\n  sign-off:\n", 1))
        .unwrap();
    std::fs::create_dir(s.path().join("policies")).unwrap();
    std::fs::write(s.path().join("policies/services.rego"), POLICY_BEFORE).unwrap();
    let prod = EnvRepo { bare: s.path().join("envs/prod.git"), work: s.path().join("envs/prod-work") };
    let compliant = prod.head();
    prod.commit_as_someone_else("app/service.yaml", LOADBALANCER, "expose web");
    let server = Running::start(&s).await;
    // The first sweep finds prod compliant; then the policy changes, as a push to the pipelines
    // repo would change it.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (_, none) = server.api(reqwest::Method::GET, "/compliance", None).await;
    assert_eq!(none["violations"], serde_json::json!([]), "{none}");
    std::fs::write(s.path().join("policies/services.rego"), POLICY_AFTER).unwrap();
    let mut v = serde_json::Value::Null;
    wait_for("the violation", async || {
        let (_, all) = server.api(reqwest::Method::GET, "/compliance", None).await;
        v = all["violations"][0].clone();
        v["state"] == "open"
    })
    .await;
    // Judged by the sweep that saw the files change (wait_for gives up after 30 s), not by the
    // next `compliance.every` (1h); how fast is measured by `cargo bench --bench compliance`.
    assert_eq!(v["environment"], "prod");
    assert_eq!(v["deny"][0], "app/service.yaml: Service web is of type LoadBalancer");
    let id = v["id"].as_str().unwrap().to_string();
    // In alice's inbox, with its page in words; an exception without a reason is asked for in place.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = crate::server::sign_in(&http, &server.url, ALICE).await;
    let inbox = http.get(format!("{}/ui/", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(inbox.contains(&format!("id=\"violation-{id}\"")) && inbox.contains("Service web is of type LoadBalancer"), "{inbox}");
    let page = format!("{}/ui/compliance/{id}", server.url);
    let html = http.get(&page).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("prod of checkout breaks the company") && html.contains("policies: make an exception or put it back?"), "{html}");
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let r = http
        .post(&page)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("decision", "accept"), ("reason", " "), ("days", "7")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("Say why these files may break the policies for now"));
    let r = http.post(&page).header("cookie", &cookie).form(&[("csrf", csrf.as_str()), ("decision", "revert"), ("reason", "")]).send().await.unwrap();
    assert!(r.text().await.unwrap().contains(">Put prod of checkout back to files the policies allow</button>"), "the confirmation names the action");
    // Through the API: an end in the past is refused; a revert puts back the compliant files.
    let (status, body) =
        server.api(reqwest::Method::POST, &format!("/compliance/{id}/accept"), Some(serde_json::json!({"reason": "x", "until": "2020-01-01T00:00:00Z"}))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.api(reqwest::Method::POST, &format!("/compliance/{id}/revert"), Some(serde_json::json!({"reason": "banned"}))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["done"].as_str().unwrap().contains("reverted by alice"), "{body}");
    let head = tokio::task::block_in_place(|| prod.message("main"));
    assert!(head.starts_with(&format!("revert prod to {} for compliance", &compliant[..10])), "{head}");
    let (status, _) = server.api(reqwest::Method::POST, &format!("/compliance/{id}/revert"), None).await;
    assert_eq!(status, 409, "decided once");
    server.stop().await;
}

/// The input a compliance judgement gives the policies is the documented one
/// (docs/policy-input.schema.json), with `phase: "compliance"` and the branch's files.
#[test]
fn the_compliance_input_is_the_documented_document() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n  p:\n    policy: {policies: [policies/]}\n", "");
    std::fs::create_dir(s.path().join("policies")).unwrap();
    std::fs::write(
        s.path().join("policies/echo.rego"),
        "package echo\nimport rego.v1\n\ndeny contains json.marshal(input) if {\n    input.phase == \"compliance\"\n    input.environment == \"staging\"\n}\n",
    )
    .unwrap();
    let out = promote(s.path(), &["compliance", "check", "pipeline.yaml", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let staging = json["items"].as_array().unwrap().iter().find(|i| i["environment"] == "staging").unwrap();
    let doc: serde_json::Value = serde_json::from_str(staging["violation"]["deny"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        (doc["phase"].as_str(), doc["change"]["newValue"].as_str(), doc["change"]["file"].as_str()),
        (Some("compliance"), Some("1.0.0"), Some("app/kustomization.yaml"))
    );
    assert!(doc["manifests"].as_array().unwrap().iter().any(|m| m["file"] == "app/kustomization.yaml"), "{doc}");
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../docs/policy-input.schema.json")).unwrap();
    let mut problems = Vec::new();
    crate::governance::check_against(&schema, &doc, "input", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

crate::both_backends! {
    fn a_violation_resolved_when_the_policies_moved_on_opens_again_when_they_come_back() {
        let (s, prod) = guarded();
        prod.commit_as_someone_else("app/service.yaml", LOADBALANCER, "expose web");
        // The policy bans LoadBalancers, is rolled back (prod complies: resolved), then comes back
        // unchanged: the same head under the same policies breaks them again.
        std::fs::write(s.path().join("policies/services.rego"), POLICY_AFTER).unwrap();
        let found = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
        assert_eq!(found.status.code(), Some(1), "{}", text(&found));
        let id = violation_id(&text(&found));
        std::fs::write(s.path().join("policies/services.rego"), POLICY_BEFORE).unwrap();
        let clean = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
        assert!(clean.status.success(), "{}", text(&clean));
        std::fs::write(s.path().join("policies/services.rego"), POLICY_AFTER).unwrap();
        let back = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
        assert_eq!(back.status.code(), Some(1), "{}", text(&back));
        assert!(text(&back).contains(&format!("violation {id}")) && text(&back).contains("waiting for a decision"), "told again: {}", text(&back));
        let list = text(&promote(s.path(), &["compliance", "list"]));
        assert!(list.contains(&format!("{id}  open")), "open again, so a person can decide it: {list}");
        let reverted = promote(s.path(), &["compliance", "revert", &id, "--as", "alice", "--pipeline", "pipeline.yaml"]);
        assert!(reverted.status.success(), "decidable: {}", text(&reverted));
    }
}

#[test]
fn a_denial_quoting_a_name_with_control_characters_prints_one_escaped_line() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n  policy-check:\n    needs: [qa]\n    policy: {policies: [policies/]}\n", "");
    std::fs::create_dir(s.path().join("policies")).unwrap();
    std::fs::write(s.path().join("policies/services.rego"), POLICY_AFTER.replace("\"prod\"", "\"qa\"")).unwrap();
    let qa = EnvRepo { bare: s.path().join("envs/qa.git"), work: s.path().join("envs/qa-work") };
    // Whoever commits to the branch names the Service: a terminal escape and a forged line.
    let forged = "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"web\\e[2J\\nprod: compliant (head 0000000000)\"\nspec:\n  type: NodePort\n";
    qa.commit_as_someone_else("app/service.yaml", forged, "expose web");
    let found = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
    assert_eq!(found.status.code(), Some(1), "{}", text(&found));
    let out = String::from_utf8(found.stdout).unwrap();
    assert!(!out.contains('\u{1b}'), "no raw escape: {out:?}");
    assert!(!out.lines().any(|l| l.starts_with("prod: compliant (head 0000000000)")), "no forged line: {out}");
}

/// What a person decided holds: an exception covers the same denials at later commits (a README
/// pushed after it is a drift to decide, not a policy revert), a person may end it early with a
/// revert, and a revert that also takes the release back says so. An environment that cannot be
/// read is no pass (exit 2).
#[test]
fn an_exception_survives_later_commits_and_a_revert_that_takes_the_release_back_says_so() {
    let (s, prod) = guarded();
    prod.commit_as_someone_else("app/service.yaml", LOADBALANCER, "expose web");
    let run = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.1.0"]);
    assert!(run.status.success(), "{}", text(&run));
    std::fs::write(s.path().join("policies/services.rego"), POLICY_AFTER).unwrap();
    let id = violation_id(&text(&promote(s.path(), &["compliance", "check", "pipeline.yaml"])));
    let accepted = promote(s.path(), &["compliance", "accept", &id, "--as", "alice", "--reason", "until the gateway lands", "--for", "1h"]);
    assert!(accepted.status.success(), "{}", text(&accepted));

    // A later commit: a drift to decide, not reverted for what the exception covers.
    prod.commit_as_someone_else("README.md", "hello\n", "readme");
    let drift = promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    let said = text(&drift);
    assert_eq!(drift.status.code(), Some(1), "{said}");
    assert!(!said.contains("policy denied") && said.contains("waiting for a decision"), "{said}");
    let d = crate::drift::drift_id(&said);
    assert!(promote(s.path(), &["drift", "accept", &d, "--as", "alice", "--reason", "docs"]).status.success());
    let check = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains(&format!("covered by the exception of violation {id}")), "{}", text(&check));

    // Ended early by a revert, which says that it takes the release back too.
    let reverted = promote(s.path(), &["compliance", "revert", &id, "--as", "alice", "--reason", "the gateway landed"]);
    let said = text(&reverted);
    assert!(reverted.status.success(), "{said}");
    assert!(said.contains("app/kustomization.yaml goes from 1.1.0 back to 1.0.0"), "{said}");
    assert!(!git(&prod.bare, &["ls-tree", "-r", "--name-only", "main"]).contains("service.yaml"));

    // An environment whose repo cannot be read is no pass.
    let text_before = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text_before.replace("repo: envs/staging.git", "repo: envs/nope.git")).unwrap();
    let broken = promote(s.path(), &["compliance", "check", "pipeline.yaml"]);
    assert_eq!(broken.status.code(), Some(2), "{}", text(&broken));
    assert!(text(&broken).contains("staging: cannot be read"), "{}", text(&broken));
}
