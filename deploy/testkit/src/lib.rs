//! Test harness: starts real servers (nats-server with JetStream, ClickHouse, PocketBase, an SMTP sink,
//! nginx as the front door) on free loopback ports with temporary data dirs, waits until they answer,
//! and stops them on drop.
//! Tests never depend on a server somebody started by hand. Binaries are found through an env var
//! (`NATS_SERVER_BIN`, ...), then `PATH`, then the repo's own tool folder `.tools/venv/bin` that
//! `deploy/local/test` fills.
//!
//! Around the servers, what every harness needs: [`poll_until`] to wait on a condition with a deadline,
//! [`Service`] to run a service's `run` in-process and stop it, [`recorder`] for the process's metrics
//! recorder and [`sample`] to read it back, [`fixtures`] for the payload corpus, and [`bin_path`] with
//! [`Process`] to run a workspace binary as a real process.

mod bin;
pub mod clickhouse;
pub mod fixtures;
pub mod nats;
pub mod nginx;
pub mod pocketbase;
pub mod poll;
pub mod process;
mod recorder;
pub mod service;
pub mod smtp;

pub use bin::bin_path;
pub use nats::{NatsCluster, NatsServer};
pub use poll::{poll_until, poll_until_every};
pub use process::Process;
pub use recorder::{recorder, sample};
pub use service::Service;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Finds an executable: `$env_var`, then `PATH`, then the repo's `.tools/venv/bin`.
pub fn find_binary(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if let Some(path) = on_path {
        return Ok(path);
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/venv/bin")
        .join(name);
    if tools.is_file() {
        return Ok(tools);
    }
    bail!("{name} not found: set {env_var}, put it on PATH, or run deploy/local/test to install it")
}

/// Polls `check` until it succeeds or `timeout` passes; an error (not a panic) for the servers' `start`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} not ready within {timeout:?}")
}

pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}
