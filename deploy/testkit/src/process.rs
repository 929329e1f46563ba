//! A service that runs as a real process (its workspace binary, see [`crate::bin_path`]): started from a
//! `Command`, ended the way its operator would end it (SIGTERM, then a bounded wait for it to finish its
//! batch, flush and exit) or crashed (SIGKILL), and killed when the handle is dropped so a failing test
//! leaves nothing running.

use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::poll_until;

/// A child process that is killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Starts `command`. Panics when it cannot be started.
    pub fn spawn(command: &mut Command) -> Process {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", command.get_program()));
        Process { child }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no batch is finished, nothing is flushed. Waits until the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit; returns its exit status. Panics
    /// when the signal cannot be sent or the process still runs after `within` (then it is killed).
    pub async fn terminate(mut self, within: Duration) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap_or_else(|e| panic!("running kill -TERM {pid}: {e}"));
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let child = &mut self.child;
        poll_until(
            &format!("process {pid} exits after SIGTERM"),
            within,
            async || child.try_wait().ok().flatten(),
        )
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn terminate_ends_a_process_with_sigterm() {
        let process = Process::spawn(Command::new("sleep").arg("30"));
        let status = process.terminate(Duration::from_secs(10)).await;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(15), "{status:?}");
    }

    #[tokio::test]
    #[should_panic(expected = "exits after SIGTERM: not within")]
    async fn a_process_that_ignores_sigterm_fails_the_test() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let script = format!("trap '' TERM; touch '{}'; exec sleep 30", ready.display());
        let process = Process::spawn(Command::new("sh").args(["-c", &script]));
        poll_until("the trap is set", Duration::from_secs(10), async || {
            ready.exists()
        })
        .await;
        process.terminate(Duration::from_millis(300)).await;
    }
}
