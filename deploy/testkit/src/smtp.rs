//! An SMTP sink for tests: aiosmtpd with its Maildir handler on a free loopback port. Every accepted mail
//! is one file under `DIR/new`; tests read them back with [`SmtpServer::mails`]. The server can be
//! stopped and started again on the same port and maildir, to play "SMTP down".

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::{free_port, port_open, wait_until};

/// An aiosmtpd process on 127.0.0.1, writing a Maildir in a temporary dir.
pub struct SmtpServer {
    python: PathBuf,
    port: u16,
    /// Keeps the temporary dir alive; the maildir is a child that aiosmtpd creates itself (it refuses
    /// an existing empty folder).
    _dir: tempfile::TempDir,
    maildir: PathBuf,
    child: Option<Child>,
}

/// The python that has aiosmtpd: `$SMTP_PYTHON`, then the repo's `.tools/venv/bin/python`, then `PATH`.
fn find_python() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SMTP_PYTHON") {
        return Ok(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/python");
    if venv.is_file() {
        return Ok(venv);
    }
    crate::find_binary("python3", "SMTP_PYTHON")
}

impl SmtpServer {
    /// Starts a fresh sink and waits until it accepts connections.
    pub fn start() -> anyhow::Result<SmtpServer> {
        let dir = tempfile::tempdir()?;
        let mut server = SmtpServer {
            python: find_python()?,
            port: free_port()?,
            maildir: dir.path().join("mail"),
            _dir: dir,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting aiosmtpd with {}", self.python.display()))?;
        self.child = Some(child);
        let port = self.port;
        wait_until("aiosmtpd", Duration::from_secs(20), || port_open(port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (the maildir stays); connections are refused until [`SmtpServer::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and maildir.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// The raw text of every mail received so far, oldest first.
    pub fn mails(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (modified, e.path())
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
