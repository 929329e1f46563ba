//! The front door for tests: nginx with the repository's own configuration (`deploy/proxy/`), rendered for
//! upstreams on loopback, as a plain process on a free port with its prefix (config, pid file, temp
//! dirs) in a temporary dir. Stopped on drop. nginx is `$NGINX_BIN`, then `PATH`, then `/usr/sbin/nginx`
//! (Debian's `nginx` package, which `deploy/local/test` installs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{find_binary, free_port, port_open};

/// `deploy/proxy/` of this repository.
pub fn proxy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy")
}

/// The template with every `${NAME}` replaced by its value; an error names a placeholder without one.
/// nginx's own variables (`$remote_addr`) have no braces and stay as they are.
pub fn render(template: &str, values: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .with_context(|| format!("unclosed placeholder at {:?}", &rest[start..]))?;
        let name = &after[..end];
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .with_context(|| format!("no value for the placeholder ${{{name}}}"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// nginx in front of an ingest and a web, routing as `deploy/proxy/front.conf.template` says.
pub struct FrontDoor {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl FrontDoor {
    /// Renders the configuration for `ingest` and `web`, starts nginx and waits until it answers its own
    /// `/readyz`. A start that loses its port to another process is retried on a new one, three times.
    pub fn start(ingest: SocketAddr, web: SocketAddr) -> anyhow::Result<FrontDoor> {
        FrontDoor::start_with_ops(ingest, web, web)
    }

    /// [`FrontDoor::start`] with `web_ops`, the web's ops port, behind the door's `/metrics`.
    pub fn start_with_ops(
        ingest: SocketAddr,
        web: SocketAddr,
        web_ops: SocketAddr,
    ) -> anyhow::Result<FrontDoor> {
        let binary = find_nginx()?;
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(&binary, ingest, web, web_ops) {
                Ok(door) => return Ok(door),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("nginx did not start")))
    }

    fn start_once(
        binary: &Path,
        ingest: SocketAddr,
        web: SocketAddr,
        web_ops: SocketAddr,
    ) -> anyhow::Result<FrontDoor> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        std::fs::create_dir_all(dir.path().join("run"))?;
        std::fs::create_dir_all(dir.path().join("tmp/nginx"))?;
        let proxy = proxy_dir();
        let front = dir.path().join("front.conf");
        let main = dir.path().join("nginx.conf");
        let listen = format!("127.0.0.1:{port}");
        let (ingest, web, web_ops) = (ingest.to_string(), web.to_string(), web_ops.to_string());
        std::fs::write(
            &front,
            render(
                &read(&proxy.join("front.conf.template"))?,
                &[
                    ("FRONT_LISTEN", &listen),
                    ("INGEST_UPSTREAM", &ingest),
                    ("WEB_UPSTREAM", &web),
                    ("WEB_OPS_UPSTREAM", &web_ops),
                ],
            )?,
        )?;
        let front_path = front.to_string_lossy().into_owned();
        std::fs::write(
            &main,
            render(
                &read(&proxy.join("nginx.conf.template"))?,
                &[("FRONT_CONF", &front_path)],
            )?,
        )?;
        let log = std::fs::File::create(dir.path().join("nginx.log"))?;
        let child = Command::new(binary)
            .arg("-e")
            .arg("stderr")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&main)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut door = FrontDoor {
            port,
            dir,
            child: Some(child),
        };
        door.wait_ready(Duration::from_secs(20))?;
        Ok(door)
    }

    /// Waits until nginx itself answers `/readyz` (not some other process that took the port).
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("nginx exited at start ({status}): {}", self.log());
                }
            }
            if port_open(self.port) && readyz(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nginx not ready within {timeout:?}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What nginx wrote to its error log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nginx.log")).unwrap_or_default()
    }

    /// Stops nginx: SIGTERM to the master, which stops its workers; SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_nginx() -> anyhow::Result<PathBuf> {
    find_binary("nginx", "NGINX_BIN").or_else(|_| {
        let debian = PathBuf::from("/usr/sbin/nginx");
        anyhow::ensure!(
            debian.is_file(),
            "nginx not found: set NGINX_BIN, put it on PATH, or install Debian's nginx package \
             (deploy/local/test installs it)"
        );
        Ok(debian)
    })
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// True when nginx's own `/readyz` answers 200.
fn readyz(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(template: &str, expected: Result<&str, &str>) {
        let values = [("A", "1"), ("B_C", "x:2")];
        match (render(template, &values), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{template:?}"),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{template:?}: {e}"),
            (got, want) => panic!("{template:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn placeholders_are_replaced_and_nginx_variables_kept() {
        check("listen ${A};", Ok("listen 1;"));
        check("server ${B_C}; ${A}${A}", Ok("server x:2; 11"));
        check("set $x $remote_addr;", Ok("set $x $remote_addr;"));
        check("no placeholders", Ok("no placeholders"));
        check("${MISSING}", Err("no value for the placeholder ${MISSING}"));
        check("${A", Err("unclosed placeholder"));
    }
}
