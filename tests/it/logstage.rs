//! The `logs` stage on release scenarios built from the real LogHub logs: files for real; Loki
//! through an in-process fake of its `query_range` API (no Loki server can run here: FAKE, it
//! answers the real JSON shape and honours start/end).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use promote::logs::verdict::{Level, level};
use promote::logs::{Config, Miner};
use promote::store::{RunState, StageState};

use crate::exec::{Setup, drive, promote, stage, text};
use crate::loghub::data_dir;

fn raw(system: &str) -> Vec<String> {
    std::fs::read_to_string(data_dir().join(system).join(format!("{system}_2k.log"))).unwrap().lines().map(String::from).collect()
}

/// The same lines in another order (a deterministic shuffle).
fn shuffled(lines: &[String]) -> Vec<String> {
    let mut v = lines.to_vec();
    let mut s: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

/// A pipeline with one logs stage over `app.log` (the baseline already in it), and a run of it
/// during whose window `after` is appended. Returns the finished run's logs stage.
async fn scenario(baseline: &[String], after: &[String], settings: &str) -> (Setup, promote::store::StageRecord, String) {
    let s = Setup::new(&format!("  analyse-logs:\n    logs:\n      source: {{files: [logs/*.log]}}\n      window: 1500ms\n{settings}"), "");
    std::fs::create_dir(s.path().join("logs")).unwrap();
    let log = s.path().join("logs/app.log");
    std::fs::write(&log, baseline.join("\n") + "\n").unwrap();
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "7.0.0").await;
    let (e2, id2) = (exec.clone(), id.clone());
    let task = tokio::spawn(async move { drive(&e2, &id2).await });
    // Once the stage has opened its window, the new version writes.
    for _ in 0..500 {
        let st = exec.store.stages(&id).await.unwrap();
        if st[0].state == StageState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all((after.join("\n") + "\n").as_bytes()).unwrap();
    let sum = task.await.unwrap();
    let st = stage(&sum, "analyse-logs").clone();
    (s, st, id)
}

fn findings(st: &promote::store::StageRecord) -> Vec<serde_json::Value> {
    st.output.as_ref().unwrap()["logs"]["verdict"]["findings"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_traffic_after_a_deploy_passes() {
    for system in ["HDFS", "OpenSSH", "Zookeeper"] {
        let lines = raw(system);
        let (_, st, _) = scenario(&lines, &shuffled(&lines), "").await;
        assert_eq!(st.state, StageState::Succeeded, "{system}: {:?}", st.message);
        let v = &st.output.as_ref().unwrap()["logs"]["verdict"];
        assert_eq!((v["linesBefore"].as_u64(), v["linesAfter"].as_u64()), (Some(lines.len() as u64), Some(lines.len() as u64)));
        // The pass says the numbers it passed on.
        let msg = st.message.as_deref().unwrap();
        assert!(msg.starts_with(&format!("{n} lines after the deploy ({n} before), ", n = lines.len())) && msg.contains("none failing"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_exception_after_a_deploy_fails_naming_it_and_a_person_can_mark_it_not_a_risk() {
    let lines = raw("Hadoop");
    let mut after = shuffled(&lines);
    // Eight lines of it: the baseline (Hadoop's own 2,000 lines, as long as the window) has
    // one-off errors of its own, so a new one needs more than a line or two to be told from chance.
    let blocks =
        ["blk_1073742025", "blk_1073742026", "blk_1073742031", "blk_1073742032", "blk_1073742040", "blk_1073742041", "blk_1073742052", "blk_1073742060"];
    for (i, block) in blocks.iter().enumerate() {
        after.insert(
            100 * (i + 1),
            format!("2015-10-18 18:05:{i:02},100 ERROR [main] org.apache.hadoop.hdfs.DFSClient: java.io.IOException: Got error reading {block} from 10.190.173.170:50010"),
        );
    }
    let (s, st, id) = scenario(&lines, &after, "").await;
    assert_eq!(st.state, StageState::Failed);
    let msg = st.message.clone().unwrap();
    assert!(msg.starts_with("1 of "), "{msg}");
    assert!(
        msg.contains("#1 `")
            && msg.contains("java.io.IOException: Got error reading blk_<*> from <*>` new at error level, says `IOException` (8 line(s) of new templates")
            && msg.contains("(0 before, 8 after; e.g. 2015-10-18 18:05:00,100 ERROR"),
        "{msg}"
    );
    let f = &findings(&st)[0];
    assert_eq!(f["samples"].as_array().unwrap().len(), 3);
    assert_eq!((f["change"].as_str(), f["level"].as_str(), f["fails"].as_bool()), (Some("new"), Some("error"), Some(true)));

    // The team decides it is a known, harmless error: the next run passes.
    let out = promote(s.path(), &["logs", "not-a-risk", &id, "analyse-logs", "1", "--as", "alice", "--reason", "retried by the client; tracked in HDFS-42"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = promote(s.path(), &["logs", "not-a-risk", &id, "analyse-logs", "9", "--as", "alice", "--reason", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("reported templates #1 to #"), "{}", text(&out));
    let exec = s.executor().await;
    std::fs::write(s.path().join("logs/app.log"), lines.join("\n") + "\n").unwrap();
    let id2 = s.start(&exec, "7.0.1").await;
    let task = tokio::spawn(async move { drive(&exec, &id2).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(s.path().join("logs/app.log")).unwrap().write_all((after.join("\n") + "\n").as_bytes()).unwrap();
    let sum = task.await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded, "{:?}", sum.stages[0].message);
    let f = &findings(&sum.stages[0])[0];
    assert_eq!((f["fails"].as_bool(), f["why"].as_str()), (Some(false), Some("new, but marked not a risk")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warning_that_triples_fails_at_high_sensitivity_only() {
    // A warning template with ten to eighty lines in a real log (enough for its growth to be told
    // from chance): its lines three times over after.
    let (lines, extra) = ["Hadoop", "HDFS", "Zookeeper", "BGL"]
        .iter()
        .find_map(|system| {
            let lines = raw(system);
            let mut miner = Miner::new(Config::default());
            let ids: Vec<u32> = lines.iter().map(|l| miner.add(l)).collect();
            let t = miner.templates().iter().find(|t| {
                let of: Vec<&String> = lines.iter().zip(&ids).filter(|(_, id)| **id == t.id).map(|(l, _)| l).collect();
                (10..=80).contains(&of.len()) && of.iter().all(|l| level(l) == Level::Warning)
            })?;
            let extra: Vec<String> = lines.iter().zip(&ids).filter(|(_, id)| **id == t.id).map(|(l, _)| l.clone()).collect();
            Some((lines, extra))
        })
        .expect("a small warning template in the real logs");
    let mut after = shuffled(&lines);
    after.extend(extra.iter().cloned());
    after.extend(extra.iter().cloned());
    for (sensitivity, fails) in [("low", false), ("medium", false), ("high", true)] {
        let (_, st, _) = scenario(&lines, &after, &format!("      sensitivity: {sensitivity}\n")).await;
        assert_eq!(st.state == StageState::Failed, fails, "{sensitivity}: {:?}", st.message);
        if fails {
            let msg = st.message.unwrap();
            assert!(["2.8x", "2.9x", "3.0x"].iter().any(|f| msg.contains(" as frequent, p = ") && msg.contains(f)) && msg.contains("` warning level"), "{msg}");
            assert!(msg.contains("(limit 2x, p < 0.01)"), "{msg}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_source_is_an_error_not_an_empty_log() {
    let s = Setup::new("  analyse-logs:\n    logs:\n      source: {files: [missing/*.log]}\n      window: 100ms\n", "");
    let exec = s.executor().await;
    let id = s.start(&exec, "7.1.0").await;
    let sum = drive(&exec, &id).await;
    let msg = sum.stages[0].message.clone().unwrap();
    assert!(msg.starts_with("log files `missing/*.log`: no file matches "), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn loki_baseline_is_the_previous_versions_lines_before_the_deploy() {
    // FAKE Loki: lines of `version="1.0.0"` before `split`, of the new version after it.
    let split = Arc::new(Mutex::new(i128::MAX));
    let seen: Arc<Mutex<Vec<(String, i128, i128)>>> = Arc::default();
    let (split2, seen2) = (split.clone(), seen.clone());
    let zk = raw("Zookeeper");
    let app = axum::Router::new().route(
        "/loki/api/v1/query_range",
        axum::routing::get(move |axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| {
            let (split, seen, zk) = (split2.clone(), seen2.clone(), zk.clone());
            async move {
                let (start, end): (i128, i128) = (q["start"].parse().unwrap(), q["end"].parse().unwrap());
                seen.lock().unwrap().push((q["query"].clone(), start, end));
                let split = *split.lock().unwrap();
                let mut values = Vec::new();
                let step = (end - start) / zk.len() as i128;
                for (i, line) in zk.iter().enumerate() {
                    let ts = start + step * i as i128;
                    values.push(serde_json::json!([ts.to_string(), line]));
                }
                if q["query"].contains("7.2.0") && start >= split {
                    // Seven retries of a new failure (Zookeeper's own log has a one-off error, so
                    // one line would be chance).
                    for t in 1..=7 {
                        values.push(serde_json::json!([
                            (end - t).to_string(),
                            format!("2015-07-29 19:04:12,394 - ERROR [main:QuorumPeer@900] - Unexpected exception, tries={t}: java.net.SocketTimeoutException")
                        ]));
                    }
                }
                axum::Json(serde_json::json!({"status": "success", "data": {"resultType": "streams", "result": [{"stream": {"app": "zk"}, "values": values}]}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let s = Setup::new(
        &format!(
            "  deploy-qa:\n    deploy: {{environment: qa}}\n  analyse-logs:\n    needs: [deploy-qa]\n    logs:\n      source: {{loki: {{address: \"http://127.0.0.1:{port}\", query: '{{app=\"zk\", version=\"${{version}}\"}}'}}}}\n      window: 1s\n"
        ),
        "",
    );
    let exec = s.executor().await;
    *split.lock().unwrap() = promote::clock::now_ms() as i128 * 1_000_000;
    let id = s.start(&exec, "7.2.0").await;
    let sum = drive(&exec, &id).await;
    let st = stage(&sum, "analyse-logs");
    assert_eq!(st.state, StageState::Failed, "{:?}", st.message);
    assert!(
        st.message.as_deref().unwrap().contains("java.net.SocketTimeoutException` new at error level, says `SocketTimeoutException` (7 line(s)"),
        "{:?}",
        st.message
    );
    assert!(st.message.as_deref().unwrap().contains("(0 before, 7 after"), "{:?}", st.message);
    let seen = seen.lock().unwrap().clone();
    let deployed = stage(&sum, "deploy-qa").finished_at.unwrap() as i128 * 1_000_000;
    let window = 1_000_000_000i128;
    assert!(seen.contains(&("{app=\"zk\", version=\"7.2.0\"}".into(), deployed, deployed + window)), "{seen:?}");
    assert!(seen.contains(&("{app=\"zk\", version=\"1.0.0\"}".into(), deployed - window, deployed)), "the baseline is 1.0.0's, before the deploy: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_files_source_can_take_its_baseline_from_other_files_and_says_when_it_noted_the_lengths() {
    let lines = raw("HDFS");
    for (bad, extra) in [(false, None), (true, Some("081111 093012 26 ERROR dfs.DataNode: disk /data/3 failed: read-only file system"))] {
        let s =
            Setup::new("  analyse-logs:\n    logs:\n      source: {files: [logs/app.log]}\n      baselineFiles: [yesterday/*.log]\n      window: 1500ms\n", "");
        std::fs::create_dir(s.path().join("logs")).unwrap();
        std::fs::create_dir(s.path().join("yesterday")).unwrap();
        // Yesterday's traffic is the baseline; the watched file starts empty.
        std::fs::write(s.path().join("yesterday/app.log"), lines.join("\n") + "\n").unwrap();
        let log = s.path().join("logs/app.log");
        std::fs::write(&log, "").unwrap();
        let exec = Arc::new(s.executor().await);
        let id = s.start(&exec, "7.1.0").await;
        let (e2, id2) = (exec.clone(), id.clone());
        let task = tokio::spawn(async move { drive(&e2, &id2).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut after = shuffled(&lines);
        after.extend(extra.map(String::from));
        std::fs::write(&log, after.join("\n") + "\n").unwrap();
        let sum = task.await.unwrap();
        let st = stage(&sum, "analyse-logs");
        assert_eq!(st.state == StageState::Failed, bad, "{:?}", st.message);
        let source = &st.output.as_ref().unwrap()["logs"]["source"];
        assert_eq!(source["baselineFiles"], serde_json::json!(["yesterday/*.log"]), "{source}");
        let v = &st.output.as_ref().unwrap()["logs"]["verdict"];
        assert_eq!(v["linesBefore"].as_u64(), Some(lines.len() as u64));
        let events = exec.store.events(&id).await.unwrap();
        let noted = events.iter().find(|e| e.kind == "logs").expect("the trail says when the lengths were noted");
        assert!(noted.detail.contains("logs/app.log at 0 bytes") && noted.detail.contains("the lines appended from "), "{}", noted.detail);
    }
}

#[test]
fn a_file_is_read_only_as_far_as_the_limits_say_before_and_after_its_mark() {
    use promote::providers::logsource::{FileMarks, MAX_BASELINE_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("big.log");
    // 80 MiB of numbered lines before the mark, two lines after.
    // Long lines, so that 64 MiB hold fewer than the 200,000 baseline lines kept.
    let pad = "x".repeat(450);
    let line = |i: usize| format!("2026-12-01 10:00:00 INFO request {i:08} served in 12 ms {pad}\n");
    let per = line(0).len();
    let n = (80 << 20) / per;
    let mut text = String::with_capacity(n * per + 200);
    for i in 0..n {
        text.push_str(&line(i));
    }
    std::fs::write(&log, &text).unwrap();
    let marks = FileMarks::open(dir.path(), &["big.log".to_string()]).unwrap();
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"ERROR one\nERROR two\n").unwrap();
    let (before, after) = marks.read().unwrap();
    assert_eq!(after, ["ERROR one", "ERROR two"]);
    // Only the last 64 MiB before the mark, starting at a whole line.
    let kept = MAX_BASELINE_BYTES as usize / per;
    assert!(kept < promote::providers::logsource::MAX_BASELINE_LINES);
    assert!(before.len() <= kept && before.len() + 2 >= kept, "{} lines of {n}", before.len());
    assert_eq!(before.last().unwrap(), line(n - 1).trim_end());
    assert!(before[0].starts_with("2026-12-01 10:00:00 INFO request "), "{}", before[0]);
}
