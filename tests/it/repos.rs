//! Real git repos for the tests: bare "remotes" on disk seeded with the git CLI, a `git daemon` on
//! loopback, and git CLI queries that check results as a user would.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use promote::git::{Destination, EditTarget, Remote, Writer, WriterConfig};

/// Runs git with `args` in `dir`; panics with its stderr on failure; returns stdout.
/// The key the writer tests seal their commits with (the executor's tests use the state's key).
pub static TEST_KEY: std::sync::LazyLock<promote::seal::Key> = std::sync::LazyLock::new(|| promote::seal::Key::from_bytes([3; 32]));

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A bare repo at `root/NAME.git` whose `main` holds `files` (path, text) in one commit, and a
/// work clone at `root/NAME-work` to make "other people's" commits with.
pub struct EnvRepo {
    /// The bare repo: what promote pushes to.
    pub bare: PathBuf,
    /// A clone to commit from as a developer would.
    pub work: PathBuf,
}

impl EnvRepo {
    pub fn new(root: &Path, name: &str, files: &[(&str, &str)]) -> EnvRepo {
        let bare = root.join(format!("{name}.git"));
        let work = root.join(format!("{name}-work"));
        git(root, &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
        git(root, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        for (path, text) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "initial"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        git(&work, &["push", "-q", "origin", "main"]);
        EnvRepo { bare, work }
    }

    /// Pulls, writes `path`, commits and pushes, as someone else would; returns the new head.
    pub fn commit_as_someone_else(&self, path: &str, text: &str, message: &str) -> String {
        git(&self.work, &["pull", "-q", "--ff-only", "origin", "main"]);
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        self.head()
    }

    /// `git rev-parse main` in the bare repo.
    pub fn head(&self) -> String {
        git(&self.bare, &["rev-parse", "main"]).trim().to_string()
    }

    /// The file's text on `main` of the bare repo.
    pub fn show(&self, path: &str) -> String {
        git(&self.bare, &["show", &format!("main:{path}")])
    }

    /// `git log --format=%H main` of the bare repo, newest first.
    pub fn log(&self) -> Vec<String> {
        git(&self.bare, &["log", "--format=%H", "main"]).lines().map(String::from).collect()
    }

    /// Commit message of `rev`.
    pub fn message(&self, rev: &str) -> String {
        git(&self.bare, &["log", "-1", "--format=%B", rev])
    }

    /// `git fsck --strict` of the bare repo passes with no complaint.
    pub fn assert_fsck(&self) {
        let out = Command::new("git").current_dir(&self.bare).args(["fsck", "--strict", "--no-dangling"]).output().unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "git fsck: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    /// A destination in this repo.
    pub fn dest(&self, remote: &str, file: &str, target: EditTarget) -> Destination {
        Destination { remote: Remote::resolve(remote, Path::new("/")), branch: "main".into(), file: file.into(), target }
    }

    /// The bare repo's path as a string.
    pub fn path(&self) -> String {
        self.bare.display().to_string()
    }
}

/// A writer with its cache in `dir/NAME`, committing as the release bot.
pub fn writer(dir: &Path, name: &str) -> Writer {
    let mut c = WriterConfig::new(dir.join(name));
    c.author = promote::git::Identity::parse("Release Bot <bot@example.com>").unwrap();
    c.committer = c.author.clone();
    Writer::new(c)
}

/// `git daemon` serving `base` on a free loopback port, with push enabled; stopped on drop.
pub struct Daemon {
    child: Child,
    /// The port.
    pub port: u16,
}

impl Daemon {
    pub fn start(base: &Path) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Run git-daemon itself (not `git daemon`, which forks it and would outlive a kill).
        let exec_path = git(base, &["--exec-path"]);
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--enable=receive-pack", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            // upload-pack says "the remote end hung up" each time libgit2 closes after a fetch.
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git-daemon starts (it ships with git)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "git daemon did not listen on {port}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Daemon { child, port }
    }

    /// The git:// URL of `name` under the base path.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// git's smart HTTP protocol on loopback: the real `git http-backend` behind basic auth that
/// accepts one token (tests/support/git_http.py). No TLS: the token handling is what is tested.
pub struct HttpServer {
    child: Child,
    /// The port.
    pub port: u16,
}

impl HttpServer {
    pub fn start(root: &Path, token: &str) -> HttpServer {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/git_http.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(root)
            .arg(token)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (the test HTTP server for git http-backend)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        HttpServer { child, port: line.trim().parse().expect("the server prints its port") }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
