//! Grouping accuracy of the log miner on the eight LogHub 2k samples (../shared/data/loghub):
//! the `Content` column, line by line, against the hand-labelled `EventId`. The samples are copied
//! into tests/fixtures/loghub (from ../shared/data/loghub; LogHub, https://github.com/logpai/loghub,
//! its LICENSE beside them) so that the tests need nothing outside the repo.

use std::collections::HashMap;
use std::path::PathBuf;

use promote::logs::{Config, Miner};

/// The systems, with Drain's published grouping accuracy (Zhu et al., ICSE-SEIP 2019).
pub const SYSTEMS: [(&str, f64); 8] =
    [("HDFS", 0.998), ("Hadoop", 0.948), ("Spark", 0.920), ("Zookeeper", 0.967), ("BGL", 0.963), ("HPC", 0.887), ("Apache", 1.000), ("OpenSSH", 0.788)];

pub fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/loghub"))
}

/// Parses CSV (quoted fields, doubled quotes) into rows.
pub fn csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// (content, event id) of each line of a system's sample.
pub fn labelled(system: &str) -> Vec<(String, String)> {
    let path = data_dir().join(system).join(format!("{system}_2k.log_structured.csv"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rows = csv(&text);
    let header = &rows[0];
    let content = header.iter().position(|h| h == "Content").unwrap();
    let event = header.iter().position(|h| h == "EventId").unwrap();
    rows[1..].iter().filter(|r| r.len() == header.len()).map(|r| (r[content].clone(), r[event].clone())).collect()
}

/// The mined groups (lines by template), each with whether it holds exactly its event's lines.
fn groups(truth: &[String], mined: &[u32]) -> Vec<(u32, Vec<usize>, bool)> {
    let mut by_event: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_template: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, (e, t)) in truth.iter().zip(mined).enumerate() {
        by_event.entry(e).or_default().push(i);
        by_template.entry(*t).or_default().push(i);
    }
    by_template
        .into_iter()
        .map(|(t, lines)| {
            let right = by_event[truth[lines[0]].as_str()] == lines;
            (t, lines, right)
        })
        .collect()
}

/// Grouping accuracy: a line is right when its group holds exactly the lines of its event.
pub fn grouping_accuracy(truth: &[String], mined: &[u32]) -> f64 {
    let correct: usize = groups(truth, mined).iter().filter(|g| g.2).map(|g| g.1.len()).sum();
    correct as f64 / truth.len() as f64
}

/// Each line's template as the judge reads it: every line mined (one pass), the templates
/// finished (closed sets of words split), then each line's final template.
pub fn mine(config: Config, lines: &[(String, String)]) -> Vec<u32> {
    let mut miner = Miner::new(config);
    let first: Vec<u32> = lines.iter().map(|(c, _)| miner.add(c)).collect();
    miner.finish();
    // As the judge does: a line that no longer reaches the similarity of the template it joined
    // (which gained `<*>` since) keeps that template.
    lines.iter().zip(first).map(|((c, _), id)| miner.find(c).map_or(id, |t| t.id)).collect()
}

/// Lines whose group is not their event's, three per wrong group: (event, template, line).
pub fn misgrouped(system: &str) -> Vec<(String, String, String)> {
    let lines = labelled(system);
    let mut miner = Miner::new(Config::default());
    for (c, _) in &lines {
        miner.add(c);
    }
    miner.finish();
    let mined = mine(Config::default(), &lines);
    let truth: Vec<String> = lines.iter().map(|(_, e)| e.clone()).collect();
    let mut out = Vec::new();
    for (t, ls, right) in groups(&truth, &mined) {
        if !right {
            let tpl = miner.templates().iter().find(|x| x.id == t).map(|x| x.text()).unwrap_or_default();
            out.extend(ls.iter().take(3).map(|&i| (truth[i].clone(), tpl.clone(), lines[i].0.clone())));
        }
    }
    out
}

pub fn accuracy(system: &str) -> f64 {
    let lines = labelled(system);
    let mined = mine(Config::default(), &lines);
    let truth: Vec<String> = lines.into_iter().map(|(_, e)| e).collect();
    grouping_accuracy(&truth, &mined)
}

#[test]
fn grouping_accuracy_is_at_least_drains_on_every_system_with_one_configuration() {
    let mut report = String::new();
    let mut below = Vec::new();
    for (system, drain) in SYSTEMS {
        let ga = accuracy(system);
        report.push_str(&format!("{system:<10} {ga:.4} (Drain {drain:.3})\n"));
        // Drain's figures have three decimals: ours, rounded the same way, may not be lower.
        if (ga * 1000.0).round() < (drain * 1000.0).round() {
            below.push(system);
            // What went wrong, to look at: (event, our template, line).
            for (event, template, line) in misgrouped(system).into_iter().take(10) {
                report.push_str(&format!("  {event}\t{template}\t{line}\n"));
            }
        }
    }
    println!("{report}");
    assert!(below.is_empty(), "below Drain's published accuracy on {below:?}:\n{report}");
}

#[test]
fn the_same_line_gets_the_same_template_after_saving_and_reloading() {
    let lines = labelled("OpenSSH");
    let (first, second) = lines.split_at(1000);
    let mut miner = Miner::new(Config::default());
    let ids: Vec<u32> = first.iter().map(|(c, _)| miner.add(c)).collect();
    let saved = serde_json::to_string(miner.templates()).unwrap();
    let mut reloaded = Miner::with_templates(Config::default(), serde_json::from_str(&saved).unwrap());
    let mut again = miner.clone();
    for (c, _) in second {
        assert_eq!(reloaded.add(c), again.add(c), "{c}");
    }
    // Lines seen before find their template, with the id it had.
    for ((c, _), id) in first.iter().zip(&ids).step_by(50) {
        assert_eq!(reloaded.find(c).map(|t| t.id), Some(*id), "{c}");
    }
}

#[test]
fn logs_mine_prints_each_lines_template_and_keeps_ids_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "user 17 logged in from 10.0.0.1\nuser 42 logged in from 10.0.0.2\ndisk /dev/sda1 is 91% full\n").unwrap();
    let templates = dir.path().join("templates.json");
    let mine = |extra: &[&str]| {
        let mut args = vec!["logs", "mine"];
        args.extend_from_slice(extra);
        std::process::Command::new(crate::promote_bin()).args(&args).output().unwrap()
    };
    let out = mine(&[log.to_str().unwrap(), "--json", "--templates", templates.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u64> = doc["lines"].as_array().unwrap().iter().map(|l| l["template"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 0, 1]);
    assert_eq!(doc["templates"][0]["template"], "user <*> logged in from <*>");
    assert_eq!(doc["templates"][0]["count"], 2);
    // A second run over other lines, from the saved templates: known lines keep their ids.
    let other = dir.path().join("other.log");
    std::fs::write(&other, "disk /dev/sdb2 is 12% full\nuser 99 logged in from 10.0.0.9\nconnection reset by peer\n").unwrap();
    let out = mine(&[other.to_str().unwrap(), "--templates", templates.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().take(3).map(|l| l.split('\t').nth(1).unwrap()).collect();
    assert_eq!(lines, ["T1", "T0", "T2"], "{text}");
    assert!(text.contains("3 templates:"), "{text}");
    // An unreadable file is an error, not an empty log.
    let out = mine(&["/nonexistent/promote.log"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/promote.log: No such file"));
}
