//! A service running in the test's process: the same `run(config, ..., shutdown)` that its `main` calls,
//! spawned on the test's runtime with a stop future the test controls. [`Service::stop`] signals it and
//! waits (within a deadline) for `run` to return; dropping the handle signals it too, so a failing test
//! does not leave a service running against servers that are going away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long [`Service::stop`] waits for `run` to return.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The shutdown future handed to a service: resolves when its [`Service`] is stopped or dropped.
pub struct Stop(oneshot::Receiver<()>);

impl Future for Stop {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A spawned service and the means to stop it. `R` is what its `run` returns.
pub struct Service<R: Send + 'static = anyhow::Result<()>> {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<R>>,
}

impl<R: Send + 'static> Service<R> {
    /// Spawns the future `start` builds from the stop future: `Service::spawn(|stop| run(config, client,
    /// None, stop))`. Needs a tokio runtime.
    pub fn spawn<Fut>(start: impl FnOnce(Stop) -> Fut) -> Service<R>
    where
        Fut: Future<Output = R> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Service {
            stop: Some(stop),
            task: Some(tokio::spawn(start(Stop(stopped)))),
        }
    }

    /// Signals the service to stop and returns what `run` returned. Panics when `run` panicked or did
    /// not return within [`STOP_DEADLINE`].
    pub async fn stop(self) -> R {
        self.stop_within(STOP_DEADLINE).await
    }

    /// [`Service::stop`] with its own deadline.
    pub async fn stop_within(mut self, deadline: Duration) -> R {
        self.signal();
        let task = self.task.take().expect("a service is joined once");
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => panic!("the service's run failed to finish: {e}"),
            Err(_) => panic!("the service did not stop within {deadline:?}"),
        }
    }

    /// Whether `run` has returned (by itself or after a stop).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl<R: Send + 'static> Drop for Service<R> {
    fn drop(&mut self) {
        self.signal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_signals_and_returns_what_run_returned() {
        let service = Service::spawn(|stop| async move {
            stop.await;
            Ok::<_, String>(7)
        });
        assert!(!service.is_finished());
        assert_eq!(service.stop().await, Ok(7));
    }

    #[tokio::test]
    async fn dropping_the_handle_signals_the_service() {
        let (done, finished) = oneshot::channel();
        drop(Service::spawn(|stop| async move {
            stop.await;
            let _ = done.send(());
        }));
        tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .expect("stopped on drop")
            .expect("sent");
    }

    #[tokio::test]
    #[should_panic(expected = "did not stop within")]
    async fn a_service_that_ignores_the_signal_fails_the_test() {
        let service = Service::spawn(|_stop| std::future::pending::<()>());
        service.stop_within(Duration::from_millis(50)).await;
    }
}
