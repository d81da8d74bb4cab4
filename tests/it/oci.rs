//! Test support for registries: a real OCI registry (Debian's `docker-registry`, the CNCF
//! distribution registry) on a loopback port with htpasswd basic auth and filesystem storage in a
//! temporary folder, and images pushed to it through the distribution API itself (a blob, a
//! config, a manifest), as `docker push` does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

/// The registry's user and password (htpasswd, bcrypt).
pub const USER: &str = "robot";
pub const PASSWORD: &str = "Reg1stry-Pa55word-7f3e";

/// The registry binary, or `None` (the test is skipped) when it is not installed; under
/// `CI=true` a missing registry fails the test: CI installs it (`.ci/run`).
pub fn registry_binary() -> Option<PathBuf> {
    let bin = PathBuf::from("/usr/bin/docker-registry");
    if bin.exists() {
        return Some(bin);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("docker-registry is not installed (apt-get install -y docker-registry): CI runs every registry test");
    }
    eprintln!("skipped: /usr/bin/docker-registry is not installed (apt-get install -y docker-registry)");
    None
}

/// A docker config.json in `dir` with the credentials for `host` (`auth`: base64 of
/// `user:password`).
pub fn docker_config(dir: &Path, host: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let file = dir.join("dockerconfig.json");
    std::fs::write(&file, serde_json::json!({"auths": {host: {"auth": auth}}}).to_string()).unwrap();
    file
}

/// A running registry: killed when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn htpasswd_line(user: &str, password: &str) -> String {
    // apache2-utils' htpasswd (bcrypt: the only hash the registry takes); python3's bcrypt as a
    // second way.
    if let Ok(out) = Command::new("htpasswd").args(["-nbB", user, password]).output()
        && out.status.success()
    {
        return String::from_utf8(out.stdout).unwrap().trim().to_string();
    }
    let out = Command::new("python3")
        .args(["-c", "import bcrypt,sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt()).decode())", user, password])
        .output()
        .expect("python3");
    assert!(out.status.success(), "neither htpasswd (apache2-utils) nor python3's bcrypt is here: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Registry {
    /// Starts the registry with basic auth, waiting until it answers.
    pub fn start(bin: &Path) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("htpasswd"), format!("{}\n", htpasswd_line(USER, PASSWORD))).unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: promote-tests-only\nauth:\n  htpasswd:\n    realm: promote-tests\n    path: {htpasswd}\n",
            data = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let child = Command::new(bin).arg("serve").arg(&config_file).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let r = Registry { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes a small image as `name:tag` through the distribution API (a layer, a config, an OCI
    /// manifest), signed in with basic auth.
    pub async fn push(&self, name: &str, tag: &str) {
        let http = promote::providers::http_client();
        let base = format!("http://{}", self.host());
        let blob = |bytes: Vec<u8>| {
            let http = http.clone();
            let base = base.clone();
            async move {
                let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
                let r = http.post(format!("{base}/v2/{name}/blobs/uploads/")).basic_auth(USER, Some(PASSWORD)).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 202, "upload start: {}", r.text().await.unwrap());
                let location = r.headers()["location"].to_str().unwrap().to_string();
                let location = if location.starts_with("http") { location } else { format!("{base}{location}") };
                let sep = if location.contains('?') { '&' } else { '?' };
                let r = http
                    .put(format!("{location}{sep}digest={digest}"))
                    .basic_auth(USER, Some(PASSWORD))
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201, "upload: {}", r.text().await.unwrap());
                (digest, bytes.len())
            }
        };
        let (layer, layer_size) = blob(format!("layer of {name}:{tag}").into_bytes()).await;
        let config =
            serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]}, "config": {"Labels": {"tag": tag}}});
        let (config, config_size) = blob(serde_json::to_vec(&config).unwrap()).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}]
        });
        let r = http
            .put(format!("{base}/v2/{name}/manifests/{tag}"))
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(serde_json::to_vec(&manifest).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "manifest {name}:{tag}: {}", r.text().await.unwrap());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
