//! `promote serve [--listen ADDR] [--pipelines DIR|URL]... [--reload DURATION] [--public-url URL] [--trusted-proxy IP]...
//! [--users FILE] [--oidc-issuer URL --oidc-client-id ID [--oidc-client-secret-file PATH]]`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// A folder of pipeline files, or a Git repo of them (`URL[#BRANCH]`, default branch `main`,
    /// fetched at every reload and on a verified push to it); repeatable; default the current folder.
    #[arg(long, value_name = "DIR|URL")]
    pub pipelines: Vec<String>,
    /// How often the folders are read again.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub reload: String,
    /// Where the server is reached from outside (the base of `webhook` stages' callback URLs);
    /// default: the address it listens on.
    #[arg(long, env = "PROMOTE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// How often every environment is looked at for drift (a push webhook to its repo looks at
    /// once).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub drift_poll: String,
    /// The address of a proxy (oauth2-proxy, ...) whose `X-Forwarded-User`/`X-Forwarded-Email`
    /// sign people in to the web pages (repeatable); from anyone else they are ignored.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The directory of people (a users file: name, email, groups, token hash, disabled): a login
    /// is one person for every pipeline served. Without it, the pipelines' own users files are
    /// merged, and a login two of them describe differently signs in nowhere.
    #[arg(long, env = "PROMOTE_USERS", value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// Single sign-on: the issuer URL of an OpenID Provider (Keycloak realm, Dex, Okta, ...),
    /// exactly as it names itself in its tokens. The pages offer "Sign in with SSO"; the API
    /// takes its JWTs for this client as bearer tokens.
    #[arg(long, env = "PROMOTE_OIDC_ISSUER", value_name = "URL", requires = "oidc_client_id")]
    pub oidc_issuer: Option<String>,
    /// This server's client id at the OpenID Provider (the audience of its tokens). The client
    /// secret comes from `PROMOTE_OIDC_CLIENT_SECRET` or `--oidc-client-secret-file`; the redirect
    /// URI to register is `{--public-url}/ui/auth/callback`.
    #[arg(long, env = "PROMOTE_OIDC_CLIENT_ID", value_name = "ID", requires = "oidc_issuer")]
    pub oidc_client_id: Option<String>,
    /// A file holding the client secret (instead of `PROMOTE_OIDC_CLIENT_SECRET`).
    #[arg(long, value_name = "PATH", requires = "oidc_issuer")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The claim of the OpenID Provider's tokens that is the person's login.
    #[arg(long, default_value = "preferred_username", value_name = "CLAIM")]
    pub oidc_username_claim: String,
    /// The claim of the OpenID Provider's tokens that lists the person's groups (`group:NAME`).
    #[arg(long, default_value = "groups", value_name = "CLAIM")]
    pub oidc_groups_claim: String,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
}

/// Single sign-on from the flags, if an issuer is given; the secret from the environment or a
/// file (never from a flag: flags show in the process list).
fn oidc(args: &Args) -> anyhow::Result<Option<std::sync::Arc<crate::server::oidc::Oidc>>> {
    let (Some(issuer), Some(client_id)) = (&args.oidc_issuer, &args.oidc_client_id) else { return Ok(None) };
    let from_env = std::env::var("PROMOTE_OIDC_CLIENT_SECRET").ok().filter(|s| !s.is_empty());
    let secret = match (&args.oidc_client_secret_file, from_env) {
        (Some(_), Some(_)) => anyhow::bail!("--oidc-client-secret-file and PROMOTE_OIDC_CLIENT_SECRET are both given: give one"),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--oidc-client-secret-file {}: {e}", path.display()))?;
            let s = text.trim().to_string();
            anyhow::ensure!(!s.is_empty(), "--oidc-client-secret-file {}: the file is empty", path.display());
            Some(s)
        }
        (None, s) => s,
    };
    if secret.is_none() {
        eprintln!(
            "promote serve: no OIDC client secret (PROMOTE_OIDC_CLIENT_SECRET, --oidc-client-secret-file): signing in as a public client, with PKCE only"
        );
    }
    let settings = crate::server::oidc::Settings {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret: secret,
        username_claim: args.oidc_username_claim.clone(),
        groups_claim: args.oidc_groups_claim.clone(),
    };
    Ok(Some(std::sync::Arc::new(crate::server::oidc::Oidc::new(settings)?)))
}

/// Runs `serve` until SIGTERM or Ctrl-C.
pub fn run(args: Args, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    let oidc = oidc(&args)?;
    let reload: crate::model::Duration = args.reload.parse().map_err(|e: crate::model::DurationError| anyhow::anyhow!("--reload {}: {e}", args.reload))?;
    let drift_poll: crate::model::Duration =
        args.drift_poll.parse().map_err(|e: crate::model::DurationError| anyhow::anyhow!("--drift-poll {}: {e}", args.drift_poll))?;
    let given = if args.pipelines.is_empty() { vec![".".to_string()] } else { args.pipelines };
    let (repos, dirs): (Vec<String>, Vec<String>) = given.into_iter().partition(|g| crate::server::PipelinesRepo::is_repo(g));
    let dirs: Vec<PathBuf> = dirs.into_iter().map(PathBuf::from).map(|d| std::path::absolute(&d).unwrap_or(d)).collect();
    let cache = super::cache_dir(state);
    let repos = repos.iter().map(|r| crate::server::PipelinesRepo::parse(r, &cache)).collect();
    if let Some(u) = &args.users {
        // Checked before anything listens: a server with a broken directory signs nobody in.
        crate::governance::Users::load(u).map_err(|e| anyhow::anyhow!("--users: {e}"))?;
    }
    let rt = super::runtime()?;
    rt.block_on(async {
        let mut exec = super::executor(state).await?;
        if let Some(u) = args.public_url.filter(|u| !u.is_empty()) {
            let parsed = reqwest::Url::parse(&u).map_err(|e| {
                anyhow::anyhow!("--public-url {u}: {e} (give the URL people and systems reach this server at, like https://promote.example.com)")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                anyhow::bail!("--public-url {u}: an http or https URL is needed");
            }
            exec.public_url = Some(u);
        }
        let listener = tokio::net::TcpListener::bind(&args.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        eprintln!("promote serve: listening on http://{}", listener.local_addr()?);
        let shutdown = async {
            super::interrupted().await;
            eprintln!("promote serve: stopping (runs stop at a durable point and resume at the next start)");
        };
        crate::server::serve(
            listener,
            exec,
            crate::server::Config {
                pipelines: dirs,
                repos,
                reload: reload.0,
                trusted_proxies: args.trusted_proxies,
                drift_poll: drift_poll.0,
                users: args.users.map(|u| std::path::absolute(&u).unwrap_or(u)),
                limits: Default::default(),
                oidc,
            },
            shutdown,
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}
