//! Benchmark: policy evaluation for one promotion with 200 manifests and 30 rules (3 packages of
//! 10), as the commit check and the policy stage run it. Prints the median, p90 and max of the
//! evaluation alone, and of the whole commit check (parsing the 200 YAML files included).
//!
//! Run: `cargo bench --bench policy` (300 rounds) or `cargo bench --bench policy -- 50`.

use std::time::{Duration, Instant};

use promote::diag::Diagnostics;
use promote::model::Spanned;
use promote::providers::policy::{PolicySet, to_value};

/// Ten rules of one package, each a real shape of check over the manifests.
fn package(n: usize) -> String {
    let mut p = format!("package bench.p{n}\n\nworkloads := {{\"Deployment\", \"StatefulSet\", \"DaemonSet\"}}\n\n");
    for r in 0..10 {
        let rule = match r % 5 {
            0 => format!(
                "deny contains msg if {{\n\tsome m in input.manifests\n\tm.kind == \"Service\"\n\tm.object.spec.type == \"LoadBalancer{r}\"\n\tmsg := sprintf(\"%s: lb\", [m.file])\n}}\n"
            ),
            1 => format!(
                "deny contains msg if {{\n\tsome m in input.manifests\n\tm.kind in workloads\n\tsome c in m.object.spec.template.spec.containers\n\tendswith(c.image, \":latest{r}\")\n\tmsg := sprintf(\"%s: latest\", [m.file])\n}}\n"
            ),
            2 => format!(
                "warn contains msg if {{\n\tsome m in input.manifests\n\tm.kind in workloads\n\tsome c in m.object.spec.template.spec.containers\n\tnot c.resources.limits\n\tm.name == \"never-{r}\"\n\tmsg := sprintf(\"%s: limits\", [m.file])\n}}\n"
            ),
            3 => format!(
                "deny contains msg if {{\n\tsome m in input.manifests\n\tnot m.object.metadata.labels.team\n\tm.name == \"nobody-{r}\"\n\tmsg := sprintf(\"%s: no team\", [m.file])\n}}\n"
            ),
            _ => format!(
                "deny contains msg if {{\n\tsemver.is_valid(input.change.newValue)\n\tsemver.compare(input.change.newValue, \"0.0.{r}\") < 0\n\tmsg := \"downgrade\"\n}}\n"
            ),
        };
        p.push_str(&rule);
    }
    p
}

fn manifests() -> Vec<(String, String)> {
    (0..200)
        .map(|i| {
            let text = if i % 2 == 0 {
                format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{i}\n  labels: {{team: t{i}}}\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n        - name: app\n          image: registry.example.com/acme/app-{i}:1.{i}.0\n          resources: {{limits: {{cpu: 500m, memory: 256Mi}}}}\n          ports: [{{containerPort: 8080}}]\n")
            } else {
                format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  labels: {{team: t{i}}}\nspec:\n  type: ClusterIP\n  selector: {{app: app-{i}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n")
            };
            (format!("apps/app-{i}/manifest.yaml"), text)
        })
        .collect()
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{name}: median {:.2} ms, p90 {:.2} ms, max {:.2} ms ({} rounds)", ms(v[v.len() / 2]), ms(v[v.len() * 9 / 10]), ms(v[v.len() - 1]), v.len());
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 5 } else { 300 });
    let dir = tempfile::tempdir().unwrap();
    for n in 0..3 {
        std::fs::write(dir.path().join(format!("p{n}.rego")), package(n)).unwrap();
    }
    let mut diags = Diagnostics::new("bench");
    let set =
        PolicySet::load(dir.path(), &[Spanned::new(Default::default(), ".".into())], &[], &mut diags).unwrap_or_else(|| panic!("{:?}", diags.into_sorted()));
    let manifests = manifests();
    let base = serde_json::json!({"phase": "commit", "pipeline": "bench", "version": "2.0.0", "environment": "prod", "stages": {}, "approvals": []});
    let mut input = base.clone();
    promote::stages::policies::add_change(&mut input, "apps/app-0/manifest.yaml", Some("1.0.0"), "2.0.0", "HEAD", &manifests);
    let value = to_value(&input);
    let first = set.evaluate(value.clone()).unwrap();
    assert!(first.deny.is_empty() && first.warn.is_empty(), "the bench input passes every rule: {first:?}");
    println!("policy: 200 manifests, 30 rules in 3 packages");
    let mut eval = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let d = set.evaluate(value.clone()).unwrap();
        eval.push(t.elapsed());
        std::hint::black_box(d);
    }
    stats("evaluation", eval);
    let mut whole = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut input = base.clone();
        promote::stages::policies::add_change(&mut input, "apps/app-0/manifest.yaml", Some("1.0.0"), "2.0.0", "HEAD", &manifests);
        let d = set.evaluate(to_value(&input)).unwrap();
        whole.push(t.elapsed());
        std::hint::black_box(d);
    }
    stats("commit check (YAML parsing + evaluation)", whole);
}
