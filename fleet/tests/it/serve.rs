//! `fleet::http::serve` on a loopback port with a small router: `/` answers at once, `/hold` waits until
//! the test releases it. Clients speak raw HTTP/1.1 over TCP so they can stall mid-request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use fleet::http::{Limits, SHED_AFTER};
use fleet::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A deadline no test step should come near, even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    /// Handlers of `/hold` running now.
    holding: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    stop: Shutdown,
    task: JoinHandle<()>,
}

/// Counts a running `/hold` handler until it returns or is dropped.
struct Holding(Arc<AtomicUsize>);

impl Holding {
    fn new(count: Arc<AtomicUsize>) -> Holding {
        count.fetch_add(1, Ordering::SeqCst);
        Holding(count)
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn start(limits: Limits) -> Server {
    let (release, released) = watch::channel(false);
    let holding = Arc::new(AtomicUsize::new(0));
    let count = holding.clone();
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/upload", post(|body: String| async move { body }))
        .route(
            "/hold",
            get(move || {
                let mut released = released.clone();
                let count = count.clone();
                async move {
                    let _holding = Holding::new(count);
                    let _ = released.wait_for(|r| *r).await;
                    "held"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = Shutdown::new();
    let task = tokio::spawn(fleet::http::serve(
        listener,
        router,
        limits,
        stop.clone().triggered_owned(),
    ));
    Server {
        addr,
        holding,
        release,
        stop,
        task,
    }
}

/// Connects and sends `text` as it is (a whole request or a part of one).
async fn send(addr: SocketAddr, text: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(text.as_bytes()).await.expect("write");
    stream
}

/// A whole request that closes its connection after the answer.
fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
}

/// Everything the server sends until it closes the connection.
async fn answer(mut stream: TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut buf))
        .await
        .expect("the server closes the connection in time")
        .expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

/// Waits (polling every 10 ms) until `condition` holds, failing after [`PATIENCE`].
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    testkit::poll_until_every(what, PATIENCE, Duration::from_millis(10), async || {
        condition()
    })
    .await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_while_others_are_answered() {
    let server = start(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let slow = send(server.addr, "GET / HTTP/1.1\r\nhost: test\r\nx-slow: ").await;
    let started = Instant::now();
    let normal = answer(send(server.addr, &request("/")).await).await;
    assert!(normal.starts_with("HTTP/1.1 200"), "{normal}");
    assert!(normal.ends_with("ok"), "{normal}");
    // The slow one is closed by the server (answer() fails if it stays open for PATIENCE).
    answer(slow).await;
    assert!(
        started.elapsed() < PATIENCE / 2,
        "cut after {:?}",
        started.elapsed()
    );

    // An idle keep-alive connection is closed by the same deadline.
    let mut idle = send(server.addr, "GET / HTTP/1.1\r\nhost: test\r\n\r\n").await;
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.expect("first answer");
    assert_eq!(&head, b"HTTP/1.1 200");
    answer(idle).await;
}

#[tokio::test]
async fn the_connection_cap_holds_and_frees_up() {
    let server = start(Limits {
        max_connections: 2,
        request_timeout: PATIENCE * 3,
        ..Limits::default()
    })
    .await;
    let held = [
        send(server.addr, &request("/hold")).await,
        send(server.addr, &request("/hold")).await,
    ];
    until("both held", || server.holding.load(Ordering::SeqCst) == 2).await;
    // The third connection waits in the backlog: no answer while both slots are taken.
    let mut third = send(server.addr, &request("/")).await;
    let mut byte = [0u8; 1];
    // Busy connections are never closed for a new one, however long they have been open.
    let early = tokio::time::timeout(SHED_AFTER * 2, third.read(&mut byte)).await;
    assert!(early.is_err(), "answered beyond the cap: {early:?}");
    assert_eq!(server.holding.load(Ordering::SeqCst), 2);

    server.release.send_replace(true);
    for stream in held {
        let text = answer(stream).await;
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("held"),
            "{text}"
        );
    }
    let rest = answer(third).await;
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
}

#[tokio::test]
async fn a_request_past_its_deadline_gets_the_timeout_answer() {
    fn late() -> axum::response::Response {
        (StatusCode::SERVICE_UNAVAILABLE, "late").into_response()
    }
    let server = start(Limits {
        request_timeout: Duration::from_millis(300),
        timeout_response: late,
        ..Limits::default()
    })
    .await;
    let text = answer(send(server.addr, &request("/hold")).await).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.ends_with("late"), "{text}");
    // The handler was dropped with its request.
    until("handler dropped", || {
        server.holding.load(Ordering::SeqCst) == 0
    })
    .await;

    let default = start(Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let text = answer(send(default.addr, &request("/hold")).await).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn shutdown_drains_open_requests_then_stops_listening() {
    let server = start(Limits::default()).await;
    let held = send(server.addr, &request("/hold")).await;
    until("held", || server.holding.load(Ordering::SeqCst) == 1).await;
    server.stop.trigger();
    // The listener closes at once; the open request still finishes.
    testkit::poll_until_every(
        "the listener closed after shutdown",
        PATIENCE,
        Duration::from_millis(10),
        async || TcpStream::connect(server.addr).await.is_err(),
    )
    .await;
    assert!(!server.task.is_finished(), "returned before the drain");
    server.release.send_replace(true);
    let text = answer(held).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("held"),
        "{text}"
    );
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("serve returns after the drain")
        .expect("join");
}

#[tokio::test]
async fn the_drain_deadline_bounds_shutdown() {
    let server = start(Limits {
        drain_timeout: Duration::from_millis(300),
        request_timeout: PATIENCE * 3,
        ..Limits::default()
    })
    .await;
    let _held = send(server.addr, &request("/hold")).await;
    until("held", || server.holding.load(Ordering::SeqCst) == 1).await;
    let started = Instant::now();
    server.stop.trigger();
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("serve returns at the drain deadline")
        .expect("join");
    assert!(started.elapsed() < PATIENCE / 2, "{:?}", started.elapsed());
}

#[tokio::test]
async fn at_the_cap_a_new_client_takes_the_slot_of_the_oldest_slow_one() {
    // Deadlines far beyond the test: only the cap's shedding can free a slot in time.
    let server = start(Limits {
        max_connections: 4,
        header_read_timeout: PATIENCE * 3,
        request_timeout: PATIENCE * 3,
        ..Limits::default()
    })
    .await;
    let mut idle = send(server.addr, "GET / HTTP/1.1\r\nhost: test\r\n\r\n").await;
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.expect("first answer");
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut slow = vec![idle];
    slow.push(send(server.addr, "GET / HTTP/1.1\r\nhost: test\r\nx-slow: ").await);
    slow.push(
        send(
            server.addr,
            "POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: 100\r\n\r\nabc",
        )
        .await,
    );
    slow.push(send(server.addr, "GET / HTTP/1.1\r\nhost: test\r\nx-slow: ").await);
    // Every slot is taken by a client that is slow (or idle); each normal client is answered anyway, in
    // the place of the one that has waited longest.
    let mut refills = Vec::new();
    for _ in 0..slow.len() {
        let started = Instant::now();
        let normal = answer(send(server.addr, &request("/")).await).await;
        assert!(normal.starts_with("HTTP/1.1 200"), "{normal}");
        assert!(
            started.elapsed() < PATIENCE / 2,
            "answered after {:?}",
            started.elapsed()
        );
        // The slow clients take the freed slot at once again.
        refills.push(send(server.addr, "GET / HTTP/1.1\r\nhost: test\r\nx-slow: ").await);
    }
    // One slow connection closed per normal client, the oldest first: all of the first ones by now.
    for (i, stream) in slow.into_iter().enumerate() {
        let rest = answer(stream).await;
        assert!(
            !rest.contains("HTTP/1.1 200"),
            "slow connection {i} answered: {rest}"
        );
    }
}
