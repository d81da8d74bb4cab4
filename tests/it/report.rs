//! A run's report on real repos: a release that a policy stopped and rolled back, with another
//! pipeline promoting in the same hour; what changed (the diff), what else changed (both
//! pipelines on one timeline), in JSON, Markdown (with its Mermaid timeline) and through the API.
//! On both backends.

use crate::exec::{Setup, promote, text};
use crate::repos::EnvRepo;

crate::both_backends! {
    fn the_report_of_a_rolled_back_release_shows_its_diff_and_another_pipelines_promotion_in_the_window() {
        let s = Setup::new(
            "  qa:\n    deploy: {environment: qa}\n  policy-check:\n    needs: [qa]\n    policy: {policies: [policies/]}\n",
            "onFailure: {rollback: true}\n",
        );
        std::fs::create_dir(s.path().join("policies")).unwrap();
        std::fs::write(
            s.path().join("policies/versions.rego"),
            "package versions\nimport rego.v1\n\ndeny contains msg if {\n    input.phase == \"stage\"\n    input.version == \"6.6.6\"\n    msg := \"6.6.6 is withdrawn\"\n}\n",
        )
        .unwrap();
        // Another team's pipeline, promoting in the same hour.
        EnvRepo::new(&s.path().join("envs"), "payments-qa", &[("app/kustomization.yaml", "images:\n  - name: registry.example.com/acme/payments\n    newTag: 1.0.0\n")]);
        std::fs::create_dir(s.path().join("payments")).unwrap();
        std::fs::write(
            s.path().join("payments/pipeline.yaml"),
            "apiVersion: promote/v1\nkind: Pipeline\nname: payments\nartifact: {image: registry.example.com/acme/payments}\nenvironments:\n  qa:\n    repo: ../envs/payments-qa.git\n    file: app/kustomization.yaml\n    update: {kustomizeImage: registry.example.com/acme/payments}\nstages:\n  qa:\n    deploy: {environment: qa}\n",
        )
        .unwrap();
        let other = promote(s.path(), &["run", "payments/pipeline.yaml", "--version", "2.0.0"]);
        assert!(other.status.success(), "{}", text(&other));
        let bad = promote(s.path(), &["run", "pipeline.yaml", "--version", "6.6.6"]);
        assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
        let status: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", "--json"]).stdout).unwrap();
        let run = status["items"].as_array().unwrap().iter().find(|r| r["pipeline"] == "checkout").unwrap()["id"].as_str().unwrap().to_string();

        let out = promote(s.path(), &["report", &run, "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["state"], "failed");
        assert!(r["cause"].as_str().unwrap().starts_with("policy-check: denied by policy: 6.6.6 is withdrawn"), "{r}");
        let qa = &r["changes"][0];
        assert_eq!((qa["environment"].as_str(), qa["from"].as_str(), qa["to"].as_str(), qa["state"].as_str()), (Some("qa"), Some("1.0.0"), Some("6.6.6"), Some("rolled-back")), "{r}");
        assert!(qa["diff"].as_str().unwrap().contains("+    newTag: 6.6.6 # promoted"), "{r}");
        let timeline = r["timeline"].as_array().unwrap();
        let said = |kind: &str, what: &str| timeline.iter().any(|e| e["kind"] == kind && e["detail"].as_str().unwrap().contains(what));
        assert!(said("promotion", "payments 2.0.0 promoted to qa"), "the other pipeline's promotion: {timeline:?}");
        assert!(said("promotion", "checkout 6.6.6 promoted to qa (rolled back since)"), "its own: {timeline:?}");
        assert!(timeline.iter().any(|e| e["own"] == true && e["kind"] == "run"), "{timeline:?}");
        let at: Vec<i64> = timeline.iter().map(|e| e["at"].as_i64().unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "one timeline, oldest first: {at:?}");

        // Markdown for a ticket, with the timeline drawn.
        let md = text(&promote(s.path(), &["report", &run, "--markdown"]));
        assert!(md.starts_with("# checkout 6.6.6: failed"), "{md}");
        for want in ["## What changed", "- **qa** (qa, rolled-back): 1.0.0 → 6.6.6", "```diff", "```mermaid\ntimeline", "payments 2.0.0 promoted to qa", "No person decided anything"] {
            assert!(md.contains(want), "`{want}` in:\n{md}");
        }
        // A narrower window leaves the earlier promotion out.
        let narrow: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["report", &run, "--json", "--window", "1ms"]).stdout).unwrap();
        assert!(!narrow["timeline"].as_array().unwrap().iter().any(|e| e["detail"].as_str().unwrap().contains("payments")), "{narrow}");
        let unknown = promote(s.path(), &["report", "01NOSUCHRUN0000000000000000"]);
        assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    }
}
