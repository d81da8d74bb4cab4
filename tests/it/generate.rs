//! Generated pipelines of any size, wide and deep, for the scale tests and the benchmark
//! (benches/plan.rs includes this file).

use std::fmt::Write;

/// A valid pipeline of `stages` stages in layers about `width` wide: each stage needs one to three
/// stages of the layer before (and sometimes one further back); kinds are mixed, one deploy in 25
/// writes its own environment, metrics stages carry CEL conditions, some stages have `if` (every
/// expression distinct, so that nothing is compiled once for many stages).
/// Returns the YAML and the number of layers (which is the number of waves).
pub fn pipeline(stages: usize, width: usize) -> (String, usize) {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n.max(1)
    };
    let layers = stages.div_ceil(width);
    let name = |i: usize| format!("s{i:06}");
    let deploys: Vec<usize> = (0..stages).filter(|i| i % 25 == 0).collect();
    let mut y = String::with_capacity(stages * 160);
    y.push_str("apiVersion: promote/v1\nkind: Pipeline\nname: generated\nartifact: {image: registry.example.com/acme/gen}\nenvironments:\n");
    for d in &deploys {
        let _ = writeln!(y, "  env-{d}: {{repo: ../envs/e{d}.git, file: apps/gen/kustomization.yaml, update: {{kustomizeImage: gen}}}}");
    }
    y.push_str("stages:\n");
    for i in 0..stages {
        let layer = i / width;
        let _ = writeln!(y, "  {}:", name(i));
        if layer > 0 {
            let prev_start = (layer - 1) * width;
            let mut needs: Vec<usize> = (0..1 + next(3)).map(|_| prev_start + next(width)).collect();
            if layer > 1 && next(4) == 0 {
                needs.push(next(prev_start));
            }
            needs.sort_unstable();
            needs.dedup();
            let list: Vec<String> = needs.iter().map(|&n| name(n)).collect();
            let _ = writeln!(y, "    needs: [{}]", list.join(", "));
        }
        match i % 25 {
            0 => {
                let _ = writeln!(y, "    deploy: {{environment: env-{i}}}");
            }
            1 | 13 => {
                let _ = writeln!(y, "    if: version != \"0.0.{i}\" && pipeline == \"generated\"");
                let _ = writeln!(y, "    webhook: {{url: \"https://hooks.example.com/${{pipeline}}/${{version}}\"}}");
            }
            5 | 17 => {
                let _ = writeln!(
                    y,
                    "    metrics:\n      provider: {{prometheus: {{address: \"http://prometheus:9090\"}}}}\n      checks:\n        - name: errors\n          query: sum(rate(errors_total{{version=\"${{version}}\"}}[1m]))\n          successCondition: result[0] < 0.{i:06}\n          failureCondition: result[0] > 5.{i:06}"
                );
            }
            24 => {
                let _ = writeln!(y, "    approval: {{approvers: [alice, group:release]}}");
            }
            _ => {
                let _ = writeln!(y, "    timeout: 5m\n    wait: {{duration: {}s}}", next(60));
            }
        }
    }
    (y, layers)
}

/// A valid pipeline of `n` environments and `n` deploys, one into each (every stage needs one or
/// two of the 50 before it): the shape whose environment checks must stay linear.
pub fn wide(n: usize) -> String {
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |m: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % m.max(1)
    };
    let mut y = String::with_capacity(n * 190);
    y.push_str("apiVersion: promote/v1\nkind: Pipeline\nname: wide\nartifact: {image: registry.example.com/acme/gen}\nenvironments:\n");
    for i in 0..n {
        let _ = writeln!(y, "  env-{i:05}: {{repo: ../envs/e{i}.git, file: apps/gen/kustomization.yaml, update: {{kustomizeImage: gen}}}}");
    }
    y.push_str("stages:\n");
    for i in 0..n {
        let _ = writeln!(y, "  deploy-{i:05}:");
        if i > 0 {
            let mut needs: Vec<usize> = (0..1 + next(2)).map(|_| i.saturating_sub(50) + next(i.min(50))).collect();
            needs.sort_unstable();
            needs.dedup();
            let list: Vec<String> = needs.iter().map(|j| format!("deploy-{j:05}")).collect();
            let _ = writeln!(y, "    needs: [{}]", list.join(", "));
        }
        let _ = writeln!(y, "    deploy: {{environment: env-{i:05}}}");
    }
    y
}
