//! Lingering close of client connections (used by `http::serve`). The edge may answer before it has read a request's body: 413
//! when the declared length is over the limit, 429 before the body is read. A socket closed with unread
//! bytes makes the kernel send a reset, which can destroy the answer on its way; a reverse proxy that is
//! still sending the body gets a broken pipe and answers 502 instead of the edge's 413 or 429. So, as
//! RFC 9112 §9.3 asks, a closed connection only half-closes (the answer and a FIN go out), and a
//! background task reads and discards what the client still sends, for a bounded time and amount,
//! before the socket is really closed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// How long a closed connection keeps reading what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much it reads at most before closing anyway.
const LINGER_BYTES: usize = 1 << 20;

/// A client connection that lingers when dropped (see the module docs).
pub struct Lingering {
    stream: Option<TcpStream>,
}

impl Lingering {
    pub fn new(stream: TcpStream) -> Lingering {
        Lingering {
            stream: Some(stream),
        }
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("stream present until drop"))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_shutdown(cx)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(stream));
        }
    }
}

/// Half-closes `stream`, then reads until the client closes, `LINGER_BYTES` were read or `LINGER_TIME`
/// passed; dropping the stream then closes it.
async fn drain(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_closed_connection_reads_what_the_client_still_sends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // The server answers after the first bytes of a request and closes, as the edge does with a
        // 413 or 429 before the body.
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut conn = Lingering::new(stream);
            let mut head = [0u8; 1024];
            conn.read_exact(&mut head).await.expect("head");
            conn.write_all(b"answer").await.expect("answer");
            conn.shutdown().await.expect("shutdown");
        });
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(&[b'h'; 1024]).await.expect("head");
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).await.expect("the answer");
        assert_eq!(&answer, b"answer");
        server.await.expect("server");
        // The client is still sending its body: without lingering the closed socket resets and these
        // writes fail.
        for n in 0..32 {
            client
                .write_all(&[b'b'; 16 * 1024])
                .await
                .unwrap_or_else(|e| panic!("body chunk {n}: {e}"));
        }
        client.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("a clean close");
        assert!(rest.is_empty());
    }
}
