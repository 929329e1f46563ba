//! `telemetry-loadgen` against a slow server on loopback: its latency counts the wait for a free
//! connection, its service time does not.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use traffic::loadgen::{self, Config};

/// How long the server takes over each answer.
const SERVER_DELAY: Duration = Duration::from_millis(10);

/// Answers every request of a connection 202 after [`SERVER_DELAY`], one at a time.
async fn serve(mut conn: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // A whole request: the head and content-length bytes of body.
        let whole = loop {
            if let Some(whole) = request_len(&buf) {
                if buf.len() >= whole {
                    break whole;
                }
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..whole);
        tokio::time::sleep(SERVER_DELAY).await;
        let body = br#"{"status":"accepted"}"#;
        let mut answer = format!(
            "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        if conn.write_all(&answer).await.is_err() {
            return;
        }
    }
}

fn request_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    })?;
    Some(head_end + length)
}

#[tokio::test]
async fn the_service_time_leaves_out_the_wait_for_a_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn));
        }
    });
    // 20 requests due within 20 ms on one connection that takes at least 10 ms each: they queue.
    let config = Config {
        url: format!("http://{addr}/telemetry"),
        rate: 1000.0,
        seconds: 0.02,
        concurrency: 1,
        forwarded_for: false,
        summary_json: None,
        timeout: 60.0,
    };
    let report = loadgen::run(&config).await.expect("run");
    assert_eq!(report.sent, 20);
    assert_eq!(report.accepted, 20, "{report}");
    let delay_ms = SERVER_DELAY.as_secs_f64() * 1000.0;
    // Each exchange takes the server's delay at least.
    assert!(report.service_p50_ms >= delay_ms, "{report}");
    // The last request was due 19 ms in and left after 19 answers of 10 ms or more: it waited.
    assert!(report.p99_ms >= 19.0 * delay_ms - 19.0, "{report}");
    // The exchanges ran one after another, so at least 10 of them (those at or above the median) fit in
    // the run: a service time that counted the queue (about half the run at the median) could not.
    assert!(
        report.service_p50_ms * 10.0 <= report.elapsed_secs * 1000.0,
        "{report}"
    );
}
