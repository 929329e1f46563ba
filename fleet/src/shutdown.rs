//! The shutdown token every service passes to its tasks: a cloneable flag that turns on once, by SIGTERM or
//! Ctrl+C ([`signal`]), by the `shutdown` future a service's `run` was given ([`Shutdown::trigger_after`]),
//! or by hand (tests, or a task that tells another one to stop). Tasks check it ([`Shutdown::is_triggered`])
//! or wait for it ([`Shutdown::triggered`]) in their `select!`.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// A one-way stop flag shared by clones: once triggered, every clone sees it, for good.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A token not triggered yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Turns the token on; every waiter wakes. Triggering again does nothing.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once the token is triggered (at once if it already is).
    pub async fn triggered(&self) {
        self.0.cancelled().await;
    }

    /// [`Shutdown::triggered`] for a task or server that needs a future of its own (`Send + 'static`).
    pub fn triggered_owned(self) -> impl Future<Output = ()> + Send + 'static {
        self.0.cancelled_owned()
    }

    /// Waits for `signal` (the `shutdown` future a service's `run` gets), then triggers the token; resolves
    /// once it did. Hand it to whatever should stop on that signal while the token tells everyone else.
    pub async fn trigger_after(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.trigger();
    }
}

/// Resolves on SIGTERM or Ctrl+C.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let token = Shutdown::new();
        let clone = token.clone();
        assert!(!clone.is_triggered());
        let waiter = tokio::spawn(clone.clone().triggered_owned());
        token.trigger();
        assert!(clone.is_triggered());
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter woke")
            .expect("join");
        // Already triggered: resolves at once; triggering again is harmless.
        token.trigger();
        clone.triggered().await;
    }

    #[tokio::test]
    async fn trigger_after_follows_the_signal() {
        let token = Shutdown::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let follow = tokio::spawn(token.clone().trigger_after(async {
            let _ = rx.await;
        }));
        assert!(!token.is_triggered());
        tx.send(()).expect("send");
        tokio::time::timeout(Duration::from_secs(5), token.triggered())
            .await
            .expect("triggered after the signal");
        follow.await.expect("join");
    }
}
