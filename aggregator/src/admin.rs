//! The aggregator's answers to the web's admin requests over NATS request–reply: a cleanup round now
//! (`schema::names::ADMIN_CLEANUP_RUN_SUBJECT`) and the cleanup settings with the count of stuck installs
//! (`ADMIN_CLEANUP_STATUS_SUBJECT`). The responder is one more task of the service: it hands each request
//! to the consume loop, which owns the install tracker, as a [`Command`], and publishes the loop's
//! [`Reply`]. Replicas answer in one queue group, so one replica does each round; the timeouts it
//! publishes carry the same de-duplication id as those of the periodic round.

use std::time::Duration;

use fleet::Shutdown;
use futures::StreamExt;
use schema::admin::{CleanupRun, CleanupStatus, Reply};
use schema::names;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// A request for the consume loop, with the channel its answer goes back on.
#[derive(Debug)]
pub enum Command {
    /// Time out the stuck installs now.
    Run(oneshot::Sender<Reply<CleanupRun>>),
    /// The cleanup settings and the count of stuck installs.
    Status(oneshot::Sender<Reply<CleanupStatus>>),
}

/// How long the responder waits for the loop (it answers between two messages; a run also waits for the
/// broker's acks of its timeouts).
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);

/// Commands waiting for the loop at once; more requests wait in NATS.
pub const QUEUE: usize = 16;

/// Answers admin requests until `stop` is triggered, forwarding each to the loop through `commands`.
pub async fn respond(client: async_nats::Client, commands: mpsc::Sender<Command>, stop: Shutdown) {
    let subscribe = |subject: &'static str| {
        let client = client.clone();
        async move {
            fleet::retry::forever("admin subscription", || {
                client.queue_subscribe(subject, names::ADMIN_AGGREGATOR_QUEUE.to_string())
            })
            .await
        }
    };
    let subscriptions = async {
        (
            subscribe(names::ADMIN_CLEANUP_RUN_SUBJECT).await,
            subscribe(names::ADMIN_CLEANUP_STATUS_SUBJECT).await,
        )
    };
    let (run, status) = tokio::select! {
        s = subscriptions => s,
        () = stop.triggered() => return,
    };
    let mut requests = futures::stream::select(run, status);
    loop {
        let request = tokio::select! {
            () = stop.triggered() => break,
            request = requests.next() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let Some(reply_to) = request.reply else {
            tracing::debug!(subject = %request.subject, "admin request without a reply subject");
            continue;
        };
        let answer = if request.subject.as_str() == names::ADMIN_CLEANUP_RUN_SUBJECT {
            ask(&commands, Command::Run).await
        } else {
            ask(&commands, Command::Status).await
        };
        if let Err(e) = client.publish(reply_to, answer.into()).await {
            tracing::warn!(error = %e, "admin reply not sent");
        }
    }
    tracing::debug!("admin responder stopped");
}

async fn ask<T: Serialize>(
    commands: &mpsc::Sender<Command>,
    command: impl FnOnce(oneshot::Sender<Reply<T>>) -> Command,
) -> Vec<u8> {
    let (answer, answered) = oneshot::channel();
    let failed = |error: &str| {
        Reply::<T>::Err {
            error: error.to_string(),
        }
        .to_json()
    };
    if commands.send(command(answer)).await.is_err() {
        return failed("the aggregator is stopping");
    }
    match tokio::time::timeout(ANSWER_DEADLINE, answered).await {
        Ok(Ok(reply)) => reply.to_json(),
        Ok(Err(_)) => failed("the aggregator dropped the request"),
        Err(_) => failed("the aggregator did not answer in time"),
    }
}
