//! The plan of generated pipelines: waves respect every need, and stages of one wave are independent.

use promote::diag::Diagnostics;
use promote::plan::{Format, Plan, render};

use super::generate;

fn plan_of(yaml: &str) -> (Option<Plan>, Diagnostics) {
    let mut diags = Diagnostics::new("generated.yaml");
    let plan = promote::model::load(yaml, &mut diags).and_then(|p| promote::plan::plan(p, &mut diags));
    (plan, diags)
}

#[test]
fn waves_of_a_large_generated_pipeline_respect_every_need() {
    for (stages, width) in [(1, 1), (40, 7), (2_000, 40)] {
        let (yaml, layers) = generate::pipeline(stages, width);
        let (plan, diags) = plan_of(&yaml);
        let plan = plan.unwrap_or_else(|| panic!("{:?}", diags.iter().take(5).collect::<Vec<_>>()));
        assert!(!diags.has_errors());
        assert_eq!(plan.pipeline.stages.len(), stages);
        assert_eq!(plan.waves.len(), layers, "{stages} stages");
        assert_eq!(plan.waves.iter().map(Vec::len).sum::<usize>(), stages);
        for i in 0..stages {
            for j in plan.needs(i) {
                assert!(plan.wave_of[j] < plan.wave_of[i], "stage {i} runs in wave {} but needs {j} of wave {}", plan.wave_of[i], plan.wave_of[j]);
            }
            // Longest-path layering: a stage that needs something runs right after its latest need.
            if let Some(latest) = plan.needs(i).map(|j| plan.wave_of[j]).max() {
                assert_eq!(plan.wave_of[i], latest + 1);
            } else {
                assert_eq!(plan.wave_of[i], 0);
            }
        }
    }
}

#[test]
fn a_cycle_deep_in_a_large_pipeline_is_found_and_printed_as_its_loop() {
    let (yaml, _) = generate::pipeline(500, 10);
    // Make stage s000010 (layer 1) need s000400 (layer 40): every path from 10 to 400 closes a loop.
    let yaml = yaml.replacen("  s000010:\n    needs: [", "  s000010:\n    needs: [s000400, ", 1);
    let (plan, diags) = plan_of(&yaml);
    assert!(plan.is_none());
    let errors: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let msg = &errors[0];
    assert!(msg.contains("forms a cycle: s000010 -> s000400 -> "), "{msg}");
    assert!(msg.contains(" -> s000010 (each stage needs the next)"), "{msg}");
    // Every step of the printed loop is a real need.
    let names: Vec<&str> = msg.split("cycle: ").nth(1).unwrap().split(" (").next().unwrap().split(" -> ").collect();
    for pair in names.windows(2) {
        let needs_line = yaml.split(&format!("  {}:\n    needs: [", pair[0])).nth(1).unwrap().split(']').next().unwrap();
        assert!(needs_line.contains(pair[1]), "{} does not need {}", pair[0], pair[1]);
    }
}

#[test]
fn dot_and_mermaid_draw_one_edge_per_need() {
    let (yaml, _) = generate::pipeline(120, 9);
    let (plan, _) = plan_of(&yaml);
    let plan = plan.unwrap();
    let edges: usize = (0..120).map(|i| plan.needs(i).count()).sum();
    let dot = render(&plan, Format::Dot);
    assert_eq!(dot.matches("\" -> \"").count(), edges);
    assert!(dot.starts_with("digraph \"generated\" {") && dot.trim_end().ends_with('}'));
    let mermaid = render(&plan, Format::Mermaid);
    assert_eq!(mermaid.matches(" --> ").count(), edges);
    assert!(mermaid.starts_with("flowchart LR\n"));
    let json: serde_json::Value = serde_json::from_str(&render(&plan, Format::Json)).unwrap();
    assert_eq!(json["waves"].as_array().unwrap().len(), plan.waves.len());
}

#[test]
fn a_large_file_read_on_two_threads_gives_every_deploy_its_environment_and_every_error_its_line() {
    // Over 64 KB: the YAML scanner runs on a thread of its own while the tree is built.
    let yaml = generate::wide(1_000);
    assert!(yaml.len() > 64 << 10);
    let (plan, diags) = plan_of(&yaml);
    let plan = plan.unwrap_or_else(|| panic!("{:?}", diags.iter().take(5).collect::<Vec<_>>()));
    assert_eq!(plan.pipeline.environments.len(), 1_000);
    for i in 0..1_000 {
        assert_eq!(plan.deploy_environment(i).map(|e| e.name.value.clone()), Some(format!("env-{i:05}")));
    }
    // A duplicate key and a syntax error near the end are found where they stand.
    let lines = yaml.lines().count();
    let duplicated = format!("{yaml}  deploy-00005:\n    deploy: {{environment: env-00005}}\n");
    let (plan, diags) = plan_of(&duplicated);
    assert!(plan.is_none());
    let d = diags.iter().find(|d| d.message.contains("duplicate key `deploy-00005`")).expect("the duplicate is named");
    assert_eq!(d.pos.line, lines + 1);
    let broken = format!("{yaml}  deploy-x: [unclosed\n");
    let (plan, diags) = plan_of(&broken);
    assert!(plan.is_none());
    let d = diags.iter().next().expect("a syntax error");
    assert!(d.message.starts_with("YAML syntax"), "{d}");
    assert!(d.pos.line >= lines, "{d}");
}
