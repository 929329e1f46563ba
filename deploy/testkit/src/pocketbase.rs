//! A PocketBase server for tests: `pocketbase serve` on a free loopback port with its data in a temporary
//! dir and a superuser made with `pocketbase superuser upsert`. It can be stopped and started again on the
//! same port and data, to play "PocketBase down".

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{find_binary, free_port, wait_until};

/// The superuser every test server gets.
pub const SUPERUSER_EMAIL: &str = "writer@telemetry.test";
/// Its password (a test-only server on loopback).
pub const SUPERUSER_PASSWORD: &str = "writer-test-password";

/// A PocketBase process on 127.0.0.1 with a superuser, its data in a temporary dir.
pub struct PocketBaseServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PocketBaseServer {
    /// Starts a fresh server with the superuser [`SUPERUSER_EMAIL`] and waits until `/api/health` answers.
    /// A start that does not answer (a port taken in between, a machine under load) is retried up to
    /// three times on a new port and data dir.
    pub fn start() -> anyhow::Result<PocketBaseServer> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once() {
                Ok(server) => return Ok(server),
                Err(error) => last = Some(error),
            }
        }
        Err(last.expect("three attempts"))
    }

    fn start_once() -> anyhow::Result<PocketBaseServer> {
        let binary = find_binary("pocketbase", "POCKETBASE_BIN")?;
        let dir = tempfile::tempdir()?;
        let status = Command::new(&binary)
            .args([
                "superuser",
                "upsert",
                SUPERUSER_EMAIL,
                SUPERUSER_PASSWORD,
                "--dir",
            ])
            .arg(dir.path().join("pb_data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {} superuser upsert", binary.display()))?;
        if !status.success() {
            bail!("pocketbase superuser upsert failed: {status}");
        }
        let mut server = PocketBaseServer {
            binary,
            port: free_port()?,
            dir,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("pocketbase.log"))?;
        let child = Command::new(&self.binary)
            .args([
                "serve",
                "--http",
                &format!("127.0.0.1:{}", self.port),
                "--dir",
            ])
            .arg(self.dir.path().join("pb_data"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let port = self.port;
        let mut exited = None;
        let waited = wait_until("pocketbase", Duration::from_secs(30), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                exited = Some(status);
                return true;
            }
            health(port)
        });
        let log =
            std::fs::read_to_string(self.dir.path().join("pocketbase.log")).unwrap_or_default();
        if let Some(status) = exited {
            self.child = None;
            bail!("pocketbase exited at start ({status}): {}", log.trim());
        }
        if waited.is_err() {
            self.stop();
        }
        waited.with_context(|| format!("pocketbase log: {}", log.trim()))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL; the data stays); requests are refused until [`PocketBaseServer::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data dir.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for PocketBaseServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /api/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}
