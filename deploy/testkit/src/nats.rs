//! nats-server with JetStream for tests: one server, or a cluster of them on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{find_binary, free_port, port_open, wait_until};

/// The servers' JetStream storage limit. Left unset, nats-server allows about three quarters of the disk
/// that is free when it starts, and then refuses the events stream (its `max_bytes` is reserved at
/// creation) on a machine with less than ~13 GiB free, which made tests fail far from the cause. Tests
/// store a few megabytes, so a limit that never binds is right here.
pub const JETSTREAM_LIMITS: &str = "jetstream {\n  max_file_store: 1TB\n}\n";

/// A nats-server with JetStream on a loopback port, its data in a temporary dir.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// A configuration file (`-c`) and the environment it reads, when started with one.
    config: Option<(PathBuf, Vec<(String, String)>)>,
}

impl NatsServer {
    /// Starts a fresh server with `include`d into its configuration (e.g. `deploy/nats/users.conf`, copied
    /// into the server's dir) and `env` in its environment (the passwords that file reads), and waits
    /// until it accepts connections.
    pub fn start_with(include: &Path, env: &[(&str, &str)]) -> anyhow::Result<NatsServer> {
        let dir = tempfile::tempdir()?;
        let name = include.file_name().context("include file name")?;
        std::fs::copy(include, dir.path().join(name))
            .with_context(|| format!("copying {}", include.display()))?;
        let conf = dir.path().join("server.conf");
        std::fs::write(
            &conf,
            format!("include {:?}\n{JETSTREAM_LIMITS}", name.to_string_lossy()),
        )?;
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut server = NatsServer {
            binary: find_binary("nats-server", "NATS_SERVER_BIN")?,
            port: free_port()?,
            dir,
            child: None,
            config: Some((conf, env)),
        };
        server.spawn()?;
        Ok(server)
    }

    /// Starts a fresh server and waits until it accepts connections.
    pub fn start() -> anyhow::Result<NatsServer> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("server.conf");
        std::fs::write(&conf, JETSTREAM_LIMITS)?;
        let mut server = NatsServer {
            binary: find_binary("nats-server", "NATS_SERVER_BIN")?,
            port: free_port()?,
            dir,
            child: None,
            config: Some((conf, Vec::new())),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        if let Some((conf, env)) = &self.config {
            command.arg("-c").arg(conf).envs(env.iter().cloned());
        }
        let child = command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("jetstream"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let port = self.port;
        wait_until("nats-server", Duration::from_secs(20), || port_open(port))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL); the data dir stays for a restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered. Returns once every
    /// thread of the server has stopped: the signal alone only asks them to, and on a loaded machine a
    /// thread still running could answer a request sent right after it.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")?;
        let pid = self.child.as_ref().context("server not running")?.id();
        wait_until(
            "every nats-server thread stopped",
            Duration::from_secs(30),
            || all_threads_stopped(pid),
        )
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("server not running")?.id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    /// Starts the server again on the same port and data dir.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.resume();
        self.kill();
    }
}

/// A JetStream cluster of nats-server processes on loopback: each node has its own client, route and
/// monitoring port and its own store dir, and routes to every other node. A node can be killed (SIGKILL)
/// and started again on the same ports and data, to play a broker crash.
pub struct NatsCluster {
    binary: PathBuf,
    name: String,
    dir: tempfile::TempDir,
    nodes: Vec<ClusterNode>,
}

struct ClusterNode {
    name: String,
    client_port: u16,
    route_port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until every one reports JetStream healthy (meta leader elected,
    /// node current with it).
    pub fn start(size: usize) -> anyhow::Result<NatsCluster> {
        anyhow::ensure!(size >= 1, "a cluster needs a node");
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            nodes.push(ClusterNode {
                name: format!("n{}", i + 1),
                client_port: free_port()?,
                route_port: free_port()?,
                monitor_port: free_port()?,
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            binary: find_binary("nats-server", "NATS_SERVER_BIN")?,
            name: "telemetry-test".to_string(),
            dir: tempfile::tempdir()?,
            nodes,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        for i in 0..size {
            cluster.wait_healthy(i, Duration::from_secs(60))?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.route_port))
            .collect::<Vec<_>>()
            .join(",");
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", node.name)))?;
        let conf = self.dir.path().join("server.conf");
        std::fs::write(&conf, JETSTREAM_LIMITS)?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &node.client_port.to_string(),
                "-m",
                &node.monitor_port.to_string(),
                "--server_name",
                &node.name,
                "--cluster_name",
                &self.name,
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.route_port),
                "--routes",
                &routes,
                "-sd",
            ])
            .arg(self.dir.path().join(&node.name))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let port = node.client_port;
        self.nodes[i].child = Some(child);
        wait_until("nats-server", Duration::from_secs(20), || port_open(port))
    }

    /// Waits until node `i` answers `/healthz` with 200: JetStream on, current with the meta leader.
    pub fn wait_healthy(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let port = self.nodes[i].monitor_port;
        wait_until(&format!("nats node {i}"), timeout, || {
            http_get(port, "/healthz").is_some_and(|(status, _)| status == 200)
        })
    }

    /// Every node's client URL, comma-separated, as `NATS_URL` takes them.
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `nats://127.0.0.1:<client port of node i>`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The body of a monitoring endpoint of node `i` (e.g. `/jsz?streams=true`), `None` while it does
    /// not answer 200.
    pub fn monitor(&self, i: usize, path: &str) -> Option<String> {
        http_get(self.nodes[i].monitor_port, path)
            .and_then(|(status, body)| (status == 200).then_some(body))
    }

    /// Kills node `i` (SIGKILL): no flush, no goodbye to the other nodes. Its store dir stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store dir, and waits until it is healthy.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_healthy(i, Duration::from_secs(60))
    }

    /// The log of node `i` so far (for a failing test's message).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.nodes[i].name)))
            .unwrap_or_default()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A minimal HTTP/1.0 GET on loopback: the status and the body, `None` when nothing answered.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Whether every thread of process `pid` is in the stopped state (`T` in `/proc/PID/task/*/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            return false;
        };
        // The state is the first field after the command name, which ends at the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if state != Some("T") {
            return false;
        }
        any = true;
    }
    any
}
