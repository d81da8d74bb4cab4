//! The server's connections, bounded: a cap on open connections (one over it is closed at once),
//! a time limit on reading a request's headers (which also ends a kept-alive connection left
//! idle), a time limit on handling a request (its body read included), and the soft limit on open
//! files raised to the hard one at start. Slow or half-sent requests then cost a task each until
//! their time is up, and never delay anyone else's (`/healthz`, a signed webhook).
//!
//! axum's own `serve` sets none of these, so the accept loop is hyper-util's, as axum's is.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt as _;

/// How the server bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most connections open at once.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive (and a kept-alive connection may idle).
    pub header_timeout: Duration,
    /// How long a request may take to be answered (its body read included; a stream of events
    /// is answered at once and then flows).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_connections: 4096, header_timeout: Duration::from_secs(10), request_timeout: Duration::from_secs(120) }
    }
}

/// Raises the soft limit on open files to the hard one (a server with many idle sockets otherwise
/// runs out at 1,024); says what it is.
pub fn raise_file_limit() -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit { rlim_cur: l.rlim_max, rlim_max: l.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                l = raised;
            }
        }
    }
    l.rlim_cur
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then waits (at most
/// `drain`) for the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| async move {
        match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => axum::response::IntoResponse::into_response((
                axum::http::StatusCode::REQUEST_TIMEOUT,
                axum::Json(serde_json::json!({"error": format!("the request took longer than {}s", limits.request_timeout.as_secs())})),
            )),
        }
    }));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refused_at = 0i64;
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of files, most likely: wait for some to close instead of spinning.
                    tracing::warn!(error = %e, "a connection could not be accepted");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let now = crate::clock::now_ms();
            if now - refused_at > 10_000 {
                tracing::warn!(max = limits.max_connections, "too many connections: new ones are closed at once");
                refused_at = now;
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = TowerToHyperService::new(app.map_request(move |r: hyper::Request<hyper::body::Incoming>| {
            let mut r = r.map(axum::body::Body::new);
            r.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
            r
        }));
        let builder = builder.clone();
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => tracing::info!("requests still in flight after {}s: closed", drain.as_secs()),
    }
    Ok(())
}
