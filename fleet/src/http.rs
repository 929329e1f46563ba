//! The HTTP serve loop of the edge, the web and the ops ports: HTTP/1.1 with keep-alive, a deadline on
//! request headers (so a slow client cannot hold a connection), a deadline on each whole request, a cap on
//! open connections, and at shutdown a drain of open requests within a deadline.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The bounds of [`serve`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deadline for a client to send a request's headers, counted from the connection's start or from the
    /// previous answer on a keep-alive connection; the connection is closed after it. It also bounds how
    /// long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Deadline for a whole request, from its headers to the head of the answer (a body the handler reads
    /// included); after it the handler is dropped and the client gets [`Limits::timeout_response`].
    pub request_timeout: Duration,
    /// The answer to a request past its deadline.
    pub timeout_response: fn() -> Response,
    /// Most connections open at once. When all are taken the loop stops accepting: new connections wait
    /// in the kernel's listen backlog (and a client's connect times out when that is full too) until an
    /// open one closes. Nothing is accepted only to be closed again.
    pub max_connections: usize,
    /// Deadline for open requests to finish at shutdown; connections still open after it are dropped.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    /// 5 s for headers, 10 s per request (answered 408 with an empty body), 10 000 connections, 10 s to
    /// drain.
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            timeout_response: request_timeout,
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The default answer to a request past its deadline: 408 without a body.
pub fn request_timeout() -> Response {
    StatusCode::REQUEST_TIMEOUT.into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves, within `limits`; then stops accepting, closes
/// the listener, lets open requests finish within the drain deadline and returns. Each request carries
/// the client's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut full = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !full {
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection cap reached, new connections wait"
                    );
                    full = true;
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if full && slots.available_permits() > 0 {
            tracing::info!("connections below the cap again");
            full = false;
        }
        let _ = stream.set_nodelay(true);
        let service = service(router.clone(), peer, &limits);
        let conn =
            builder.serve_connection(TokioIo::new(crate::linger::Lingering::new(stream)), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("shutting down, draining open requests");
    let deadline = limits.drain_timeout;
    if tokio::time::timeout(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?deadline, "drain deadline passed with requests still open");
    }
}

/// The router as one connection's hyper service: the peer's address added, and the request deadline.
fn service(
    router: Router,
    peer: SocketAddr,
    limits: &Limits,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone {
    let (deadline, on_timeout) = (limits.request_timeout, limits.timeout_response);
    let handler = move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let answer = router.clone().oneshot(request);
        async move {
            Ok(match tokio::time::timeout(deadline, answer).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => on_timeout(),
            })
        }
    };
    hyper::service::service_fn(handler)
}
