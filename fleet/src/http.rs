//! The HTTP serve loop of the edge, the web and the ops ports: HTTP/1.1 with keep-alive, a deadline on
//! request headers (so a slow client cannot hold a connection), a deadline on each whole request, a cap on
//! open connections, and at shutdown a drain of open requests within a deadline.
//!
//! At the cap, a new connection does not queue behind the ones that hold every slot by sending slowly:
//! the connection that has waited longest for its client (for a request's headers, for the rest of its
//! body, or idle between keep-alive requests) is closed to make room, if it has waited at least
//! [`SHED_AFTER`]. Connections whose request is being handled or answered are never closed this way; when
//! every connection is, the new one waits until a slot frees. So 10 000 slow clients, from one address or
//! from many, behind a proxy or not, cannot keep a normal client out: each of its connections takes the
//! slot of the oldest slow one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
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
    /// Most connections open at once. A connection beyond it takes the slot of the one that has waited
    /// longest for its client (see the module docs); when none has waited [`SHED_AFTER`], it waits until
    /// an open one closes (and further ones wait in the kernel's listen backlog).
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

/// How long a connection must have waited for its client before a new connection at the cap may take its
/// slot. A script's whole request takes milliseconds; a slow client's takes until a deadline.
pub const SHED_AFTER: Duration = Duration::from_secs(1);

/// Counter of connections closed at the cap to make room for a new one (see the module docs).
pub const CONNECTIONS_SHED: &str = "telemetry_http_connections_shed_total";

/// How often the loop looks again for a connection to close while a new one waits at the cap.
const SHED_RETRY: Duration = Duration::from_millis(100);

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
    raise_fd_limit(limits.max_connections);
    widen_backlog(&listener);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let open = Arc::new(Open::default());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut full = false;
    loop {
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
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                if full {
                    tracing::info!("connections below the cap again");
                    full = false;
                }
                slot
            }
            Err(_) => {
                let mut slot = None;
                while slot.is_none() {
                    if open.shed_oldest(SHED_AFTER) {
                        metrics::counter!(CONNECTIONS_SHED).increment(1);
                    } else if !full {
                        tracing::warn!(
                            max = limits.max_connections,
                            "connection cap reached with every connection busy, new connections wait"
                        );
                        full = true;
                    }
                    tokio::select! {
                        acquired = slots.clone().acquire_owned() => match acquired {
                            Ok(acquired) => slot = Some(acquired),
                            Err(_) => return,
                        },
                        () = tokio::time::sleep(SHED_RETRY) => {}
                        () = &mut shutdown => break,
                    }
                }
                match slot {
                    Some(slot) => slot,
                    None => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let waiting = Waiting::new(open.base);
        let (shed, shed_signal) = oneshot::channel();
        let entry = open.insert(waiting.clone(), shed);
        let service = service(router.clone(), peer, &limits, waiting);
        let conn =
            builder.serve_connection(TokioIo::new(crate::linger::Lingering::new(stream)), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                _ = shed_signal => tracing::debug!("connection closed at the cap for a new one"),
            }
            drop(entry);
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

/// Connections the kernel may queue for `accept`; it caps the number at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 65_535;

/// Widens the listen backlog (Tokio's `bind` asks for 1024). When thousands of slow clients are cut by
/// their deadline and connect again, a short queue overflows during any pause of the accept loop; the
/// kernel then drops a new client's SYN and the client retries only after a second or more.
fn widen_backlog(listener: &TcpListener) {
    if let Err(e) = rustix::net::listen(listener, LISTEN_BACKLOG) {
        tracing::debug!(error = %e, "listen backlog not widened");
    }
}

/// Descriptors a process needs besides its client connections (broker, ClickHouse, lingering closes).
const FDS_BESIDES_CONNECTIONS: u64 = 1024;

/// Raises the soft limit on open files to the hard one (often 1024 against 500 000 or more), so that
/// `max_connections` clients can be held, and warns when even the hard limit is too low for them.
fn raise_fd_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            ..limit
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = getrlimit(Resource::Nofile),
            Err(e) => tracing::debug!(error = %e, "open-file limit not raised"),
        }
    }
    let needed = max_connections as u64 + FDS_BESIDES_CONNECTIONS;
    if let Some(current) = limit.current.filter(|current| *current < needed) {
        tracing::warn!(
            limit = current,
            needed,
            "the open-file limit is below the connection cap: raise it (ulimit -n, LimitNOFILE=) or lower MAX_CONNECTIONS"
        );
    }
}

/// The open connections of one [`serve`], each with the moment it started waiting for its client.
struct Open {
    base: Instant,
    next: AtomicU64,
    connections: Mutex<HashMap<u64, Connection>>,
}

struct Connection {
    waiting: Waiting,
    /// Closes the connection when sent to (or dropped).
    shed: oneshot::Sender<()>,
}

impl Default for Open {
    fn default() -> Open {
        Open {
            base: Instant::now(),
            next: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
        }
    }
}

impl Open {
    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Connection>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection; it stays registered until the returned entry is dropped.
    fn insert(self: &Arc<Self>, waiting: Waiting, shed: oneshot::Sender<()>) -> Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.connections().insert(id, Connection { waiting, shed });
        Entry {
            open: self.clone(),
            id,
        }
    }

    /// Closes the connection that has waited longest for its client, if it has waited at least `after`;
    /// false when there is none.
    fn shed_oldest(&self, after: Duration) -> bool {
        let now = self.base.elapsed();
        let mut connections = self.connections();
        let oldest = connections
            .iter()
            .filter_map(|(id, c)| c.waiting.since().map(|since| (since, *id)))
            .filter(|(since, _)| now.saturating_sub(*since) >= after)
            .min();
        match oldest.and_then(|(_, id)| connections.remove(&id)) {
            Some(connection) => {
                let _ = connection.shed.send(());
                true
            }
            None => false,
        }
    }
}

/// A connection's place in [`Open`], removed on drop.
struct Entry {
    open: Arc<Open>,
    id: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.open.connections().remove(&self.id);
    }
}

/// Since when a connection waits for its client (its request's headers or body, or its next request), as
/// time after [`Open::base`]; busy while its request is handled or answered.
#[derive(Clone)]
struct Waiting {
    base: Instant,
    /// Milliseconds after `base` plus one; 0 while busy.
    since: Arc<AtomicU64>,
}

impl Waiting {
    /// Waiting from now on.
    fn new(base: Instant) -> Waiting {
        let waiting = Waiting {
            base,
            since: Arc::new(AtomicU64::new(0)),
        };
        waiting.start_now();
        waiting
    }

    fn start_now(&self) {
        let millis = self.base.elapsed().as_millis() as u64;
        self.since.store(millis + 1, Ordering::Relaxed);
    }

    fn busy(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    fn since(&self) -> Option<Duration> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            millis => Some(Duration::from_millis(millis - 1)),
        }
    }
}

/// The router as one connection's hyper service: the peer's address added, the request deadline, and the
/// connection's [`Waiting`] kept up to date.
fn service(
    router: Router,
    peer: SocketAddr,
    limits: &Limits,
    waiting: Waiting,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<Answer>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<Answer>, Infallible>> + Send,
> + Clone {
    let (deadline, on_timeout) = (limits.request_timeout, limits.timeout_response);
    let handler = move |request: hyper::Request<Incoming>| {
        let (mut parts, body) = request.into_parts();
        // A request without a body (a GET) is busy from its headers on; one with a body once it is read.
        if body.is_end_stream() {
            waiting.busy();
        }
        parts.extensions.insert(ConnectInfo(peer));
        let body = Upload {
            inner: body,
            waiting: waiting.clone(),
        };
        let answer = router
            .clone()
            .oneshot(hyper::Request::from_parts(parts, body));
        let waiting = waiting.clone();
        async move {
            let response = match tokio::time::timeout(deadline, answer).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => on_timeout(),
            };
            Ok(response.map(|inner| Answer { inner, waiting }))
        }
    };
    hyper::service::service_fn(handler)
}

/// A request's body that marks its connection busy once it is read whole, or dropped.
struct Upload {
    inner: Incoming,
    waiting: Waiting,
}

impl Body for Upload {
    type Data = <Incoming as Body>::Data;
    type Error = <Incoming as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.waiting.busy();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.waiting.busy();
    }
}

/// An answer's body that marks its connection waiting again (for the next request) once it is sent.
struct Answer {
    inner: axum::body::Body,
    waiting: Waiting,
}

impl Body for Answer {
    type Data = <axum::body::Body as Body>::Data;
    type Error = <axum::body::Body as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.waiting.start_now();
    }
}
