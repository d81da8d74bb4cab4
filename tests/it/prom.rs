//! A real Prometheus (Debian's `prometheus` package) on a loopback port, holding known series
//! backfilled with `promtool tsdb create-blocks-from openmetrics`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A running Prometheus; killed when dropped.
pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Now, in seconds since the epoch.
pub fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn need(binary: &str) {
    let found = Command::new(binary).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    // Never a silent skip: these tests need the real server.
    assert!(found, "`{binary}` is not installed: the metrics tests need a real Prometheus (Debian: apt-get install prometheus; .ci/run installs it)");
}

/// OpenMetrics text for `series` (name with labels) sampled every `step` seconds from `from` to
/// `to` seconds ago, values from `value(t_seconds_ago)`.
pub fn series(name: &str, labels: &str, from: f64, to: f64, step: f64, mut value: impl FnMut(f64) -> f64) -> String {
    let now = now_s().floor();
    let mut out = String::new();
    let mut ago = from;
    while ago >= to {
        let v = value(ago);
        let text = if v.is_nan() { "NaN".to_string() } else { format!("{v}") };
        out.push_str(&format!("{name}{{{labels}}} {text} {}\n", (now - ago) as i64));
        ago -= step;
    }
    out
}

impl Prometheus {
    /// Backfills `metrics` (OpenMetrics lines, grouped by metric name, each as `(name, lines)`)
    /// and starts Prometheus on them.
    pub fn start(metrics: &[(&str, String)]) -> Prometheus {
        Prometheus::start_with(metrics, None)
    }

    /// Like `start`, with a web configuration file (`basic_auth_users`, TLS) for `--web.config.file`.
    pub fn start_with(metrics: &[(&str, String)], web_config: Option<&str>) -> Prometheus {
        need("prometheus");
        need("promtool");
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for (name, lines) in metrics {
            text.push_str(&format!("# TYPE {name} gauge\n{lines}"));
        }
        text.push_str("# EOF\n");
        let input = dir.path().join("series.om");
        std::fs::write(&input, text).unwrap();
        let data = dir.path().join("data");
        let out = Command::new("promtool").args(["tsdb", "create-blocks-from", "openmetrics"]).arg(&input).arg(&data).output().unwrap();
        assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(dir.path().join("prometheus.yml"), "global: {scrape_interval: 1h}\nscrape_configs: []\n").unwrap();
        if let Some(web) = web_config {
            std::fs::write(dir.path().join("web.yml"), web).unwrap();
        }
        let mut p = Prometheus { child: None, port: 0, dir };
        p.spawn();
        p
    }

    /// Starts Prometheus scraping `target` (`127.0.0.1:PORT`, its `/metrics`) every second, with
    /// nothing backfilled: what it holds is what the target said as time went.
    pub fn scraping(target: &str) -> Prometheus {
        need("prometheus");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: app\n    scrape_interval: 1s\n    static_configs: [{{targets: ['{target}']}}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let mut p = Prometheus { child: None, port: 0, dir };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let mut cmd = Command::new("prometheus");
        if dir.join("web.yml").exists() {
            cmd.arg(format!("--web.config.file={}", dir.join("web.yml").display()));
        }
        let child = cmd
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=10y")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.port = port;
        wait_ready(port, dir);
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's own log (for failing assertions).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

fn wait_ready(port: u16, dir: &Path) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            // 401: up, behind basic auth.
            if ["200", "401"].iter().any(|code| buf.starts_with(&format!("HTTP/1.0 {code}")) || buf.starts_with(&format!("HTTP/1.1 {code}"))) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("Prometheus did not become ready: {}", std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default());
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A service's `/metrics` on a loopback port, saying what the test sets (OpenMetrics text lines);
/// Prometheus scrapes it as it would a real one.
pub struct Exporter {
    pub addr: String,
    said: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Exporter {
    pub fn start(text: &str) -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let said = std::sync::Arc::new(std::sync::Mutex::new(text.to_string()));
        let shared = said.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = conn.read(&mut buf);
                let body = shared.lock().unwrap().clone();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Exporter { addr, said }
    }

    /// From now on, the service says `text`.
    pub fn say(&self, text: &str) {
        *self.said.lock().unwrap() = text.to_string();
    }
}

/// Waits until `query` at Prometheus gives `want` (its first series' value), for at most 30 s.
pub fn wait_for_value(prom: &Prometheus, query: &str, want: f64) {
    let t = Instant::now();
    let q: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
    while t.elapsed() < Duration::from_secs(30) {
        use std::io::{Read, Write};
        let mut answer = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", prom.port)) {
            let _ = write!(s, "GET /api/v1/query?query={q} HTTP/1.0\r\n\r\n");
            let _ = s.read_to_string(&mut answer);
        }
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(body)
            && let Some(x) = v["data"]["result"][0]["value"][1].as_str().and_then(|x| x.parse::<f64>().ok())
            && (x - want).abs() < 1e-9
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("Prometheus never gave {query} = {want}: {}", prom.log());
}
