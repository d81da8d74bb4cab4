//! Issue 29: live pages that never duplicate (`Last-Event-ID`, `?after=N`) and notes that reach
//! people (links to the pages, email through a real SMTP server, Microsoft Teams).

use std::time::Duration;

use crate::server::{ALICE, Running, push_event, setup, sign, sign_in, wait_for};

/// The entry numbers (`id:` lines) a server-sent event stream gives, reading until it ends or
/// stays quiet for `quiet`.
async fn sse_ids(mut r: reqwest::Response, quiet: Duration) -> Vec<i64> {
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(quiet, r.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.lines().filter_map(|l| l.strip_prefix("id:")).map(|v| v.trim().parse().unwrap()).collect()
}

/// A run of the server's pipeline, started by a signed GitHub push, waiting at `sign-off`.
async fn waiting_run(server: &Running) -> String {
    let body = push_event("acme/checkout", "refs/tags/v1.7.0");
    let sig = sign(&body);
    let headers = [("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-1"), ("X-Hub-Signature-256", sig.as_str())];
    let (status, answer) = server.hook(&headers, body).await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["runs"][0]["run"].as_str().unwrap().to_string();
    wait_for("the sign-off", async || server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["stages"][1]["state"] == "waiting").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_or_the_pages_after_never_repeats_an_entry() {
    let s = setup();
    let server = Running::start(&s).await;
    let id = waiting_run(&server).await;
    let stream = |last: Option<i64>, query: &str| {
        let mut req = server.http.get(format!("{}/api/v1/runs/{id}/events{query}", server.url)).bearer_auth(ALICE);
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l.to_string());
        }
        req.send()
    };

    // The first connection: every entry so far, in order, each once.
    let all = sse_ids(stream(None, "").await.unwrap(), Duration::from_millis(700)).await;
    assert!(all.len() >= 4, "entries so far: {all:?}");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "increasing, none twice: {all:?}");

    // A reconnect as an EventSource makes it (Last-Event-ID of the last entry it read): only
    // what came after, nothing before it again.
    let k = all[all.len() / 2];
    let again = sse_ids(stream(Some(k), "").await.unwrap(), Duration::from_millis(700)).await;
    assert_eq!(again, all.iter().copied().filter(|i| *i > k).collect::<Vec<_>>(), "after {k}");
    // Having everything: nothing is sent until something new happens.
    let live = stream(Some(*all.last().unwrap()), "").await.unwrap();
    let reader = tokio::spawn(sse_ids(live, Duration::from_secs(20)));
    // `?after=N` is the page's first connection; the later of it and Last-Event-ID counts.
    let after = sse_ids(stream(None, &format!("?after={k}")).await.unwrap(), Duration::from_millis(700)).await;
    assert_eq!(after, again, "?after={k}");
    let both = sse_ids(stream(Some(*all.last().unwrap()), &format!("?after={k}")).await.unwrap(), Duration::from_millis(500)).await;
    assert!(both.is_empty(), "Last-Event-ID later than ?after: {both:?}");

    // The decision and the run's end come on the open stream, and only they.
    let (status, done) = server.api(reqwest::Method::POST, &format!("/runs/{id}/stages/sign-off/approve"), Some(serde_json::json!({}))).await;
    assert_eq!(status, 200, "{done}");
    let new = tokio::time::timeout(Duration::from_secs(30), reader).await.expect("the stream ends with the run").unwrap();
    assert!(!new.is_empty() && new[0] > *all.last().unwrap(), "only new entries: {new:?} after {all:?}");
    // Reconnecting after the run's end with its last entry: nothing, and the stream ends.
    let last = *new.last().unwrap();
    let none = tokio::time::timeout(Duration::from_secs(5), sse_ids(stream(Some(last), "").await.unwrap(), Duration::from_secs(5))).await.unwrap();
    assert!(none.is_empty(), "{none:?}");

    // The page tells its script the newest entry it rendered; the pages' stream honours it.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = sign_in(&http, &server.url, ALICE).await;
    let html = server.http.get(format!("{}/ui/runs/{id}", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let rendered: i64 = html.split("data-after=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    assert_eq!(rendered, last, "the page shows every entry up to the run's end");
    let page_stream = |last: Option<i64>, query: String| {
        let mut req = server.http.get(format!("{}/ui/runs/{id}/events{query}", server.url)).header("cookie", &cookie);
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l.to_string());
        }
        req.send()
    };
    let from_page = sse_ids(page_stream(None, format!("?after={k}")).await.unwrap(), Duration::from_secs(2)).await;
    let mut want: Vec<i64> = all.iter().copied().filter(|i| *i > k).collect();
    want.extend(&new);
    assert_eq!(from_page, want, "the page's stream after {k}");
    let reconnect = sse_ids(page_stream(Some(new[0]), format!("?after={k}")).await.unwrap(), Duration::from_secs(2)).await;
    assert_eq!(reconnect, new[1..].to_vec(), "the page's reconnect after {}", new[0]);
    server.stop().await;
}
