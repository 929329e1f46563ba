//! A ClickHouse server for tests: `clickhouse-server` as a plain process with a small loopback-only
//! config (the same one `deploy/local/up` writes), on free ports with its data in a temporary dir. It can
//! be killed and started again on the same ports and data, to play "ClickHouse down".

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::{find_binary, free_port, wait_until};

/// The read-only user every test server has (no password, profile `readonly`: `readonly = 2`, reads and
/// per-query settings, no INSERT, ALTER, DROP or CREATE), as the web's user of `deploy/local/up`.
pub const READONLY_USER: &str = "web";

/// A clickhouse-server on 127.0.0.1 with the default user (no password), the read-only
/// [`READONLY_USER`], and its data in a temporary dir.
pub struct ClickHouseServer {
    binary: PathBuf,
    http_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ClickHouseServer {
    /// Starts a fresh server and waits until it answers `SELECT 1` over HTTP.
    /// Starts a fresh server. A start that does not answer (for example because another test took one of
    /// the free ports between our probe and the server's bind) is retried on new ports, three times.
    pub fn start() -> anyhow::Result<ClickHouseServer> {
        Self::start_with(false)
    }

    /// [`ClickHouseServer::start`] with every statement of every user logged to `system.query_log`
    /// (flushed every 100 ms), for tests that read back which SQL the services ran.
    pub fn start_with_query_log() -> anyhow::Result<ClickHouseServer> {
        Self::start_with(true)
    }

    fn start_with(query_log: bool) -> anyhow::Result<ClickHouseServer> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(query_log) {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("clickhouse-server did not start")))
    }

    fn start_once(query_log: bool) -> anyhow::Result<ClickHouseServer> {
        let binary = find_binary("clickhouse-server", "CLICKHOUSE_SERVER_BIN")
            .or_else(|_| find_binary_at("/usr/sbin/clickhouse-server"))?;
        let dir = tempfile::tempdir()?;
        let http_port = free_port()?;
        let tcp_port = free_port()?;
        write_config(dir.path(), http_port, tcp_port, query_log)?;
        let mut server = ClickHouseServer {
            binary,
            http_port,
            dir,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let config = self.dir.path().join("config.xml");
        let log = std::fs::File::create(self.dir.path().join("server.log"))?;
        let child = Command::new(&self.binary)
            .arg(format!("--config-file={}", config.display()))
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let port = self.http_port;
        wait_until("clickhouse-server", Duration::from_secs(30), || {
            query(port, "SELECT 1").is_ok_and(|r| r.trim() == "1")
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Runs one statement over HTTP and returns the body (TabSeparated); an error for a non-200 answer.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        query(self.http_port, sql)
    }

    /// [`ClickHouseServer::query`] as `user` (without a password).
    pub fn query_as(&self, user: &str, sql: &str) -> anyhow::Result<String> {
        query_as(self.http_port, Some(user), sql)
    }

    /// Kills the server (SIGKILL); the data dir stays for [`ClickHouseServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data dir.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn find_binary_at(path: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(path);
    anyhow::ensure!(
        path.is_file(),
        "clickhouse-server not found: set CLICKHOUSE_SERVER_BIN or install the clickhouse-server package"
    );
    Ok(path)
}

fn write_config(dir: &Path, http_port: u16, tcp_port: u16, query_log: bool) -> anyhow::Result<()> {
    let d = dir.display();
    let (log_table, log_setting) = if query_log {
        (
            "\n  <query_log><database>system</database><table>query_log</table><flush_interval_milliseconds>100</flush_interval_milliseconds></query_log>",
            "<log_queries>1</log_queries>",
        )
    } else {
        ("", "")
    };
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>{log_table}
</yandex>
"#
    );
    let users = format!(
        r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>{log_setting}</default><readonly><readonly>2</readonly>{log_setting}</readonly></profiles>
  <users><default><password></password><networks><ip>::1</ip><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default><web><password></password><networks><ip>::1</ip><ip>127.0.0.1</ip></networks><profile>readonly</profile><quota>default</quota></web></users>
  <quotas><default></default></quotas>
</yandex>
"#
    );
    std::fs::write(dir.join("config.xml"), config)?;
    std::fs::write(dir.join("users.xml"), users)?;
    Ok(())
}

/// Runs one statement on the server at `port` (for a thread without the server at hand): a minimal
/// HTTP/1.0 POST (keeps this crate free of an HTTP client).
pub fn query(port: u16, sql: &str) -> anyhow::Result<String> {
    query_as(port, None, sql)
}

fn query_as(port: u16, user: Option<&str>, sql: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // The user as a URL parameter: ClickHouse 18.16 knows no X-ClickHouse-User header.
    let path = user
        .map(|u| format!("/?user={u}"))
        .unwrap_or_else(|| "/".into());
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status_line = head.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status_line.contains(" 200 "),
        "clickhouse answered {status_line}: {body}"
    );
    Ok(body.to_string())
}
