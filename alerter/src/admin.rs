//! The alerter's answer to the web's admin request for a test mail over NATS request–reply
//! (`schema::names::ADMIN_ALERTS_TEST_SUBJECT`): one more task of the service that sends the test mail
//! through the alerter's own mailer and replies with a [`Reply`] of [`AlertTest`]. Replicas answer in one
//! queue group, so one request is one mail.

use fleet::Shutdown;
use futures::StreamExt;
use schema::admin::{AlertTest, Reply};
use schema::names;

use crate::config::Config;
use crate::mail::Mailer;

/// Answers test-mail requests until `stop` is triggered.
pub async fn respond(client: async_nats::Client, config: Config, mailer: Mailer, stop: Shutdown) {
    let subscribe = fleet::retry::forever("admin subscription", || {
        client.queue_subscribe(
            names::ADMIN_ALERTS_TEST_SUBJECT,
            names::ADMIN_ALERTER_QUEUE.to_string(),
        )
    });
    let mut requests = tokio::select! {
        s = subscribe => s,
        () = stop.triggered() => return,
    };
    loop {
        let request = tokio::select! {
            () = stop.triggered() => break,
            request = requests.next() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let Some(reply_to) = request.reply else {
            tracing::debug!("test-mail request without a reply subject");
            continue;
        };
        let answer = Reply::Ok(test_mail(&config, &mailer).await);
        if let Err(e) = client.publish(reply_to, answer.to_json().into()).await {
            tracing::warn!(error = %e, "test-mail reply not sent");
        }
    }
    tracing::debug!("admin responder stopped");
}

/// Sends one test mail (whatever `ALERT_ENABLED` says: the admin asked for it) and says how it went.
async fn test_mail(config: &Config, mailer: &Mailer) -> AlertTest {
    match crate::send_test_with(config, mailer).await {
        Ok(recipients) => {
            tracing::info!(recipients, "test mail sent on request");
            let mut message = format!("test mail sent to {recipients} recipient(s)");
            if !config.alert_enabled {
                message.push_str("; ALERT_ENABLED=false: alerts themselves are not mailed");
            }
            AlertTest {
                sent: true,
                message,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "test mail on request failed");
            AlertTest {
                sent: false,
                message: format!("the test mail could not be sent: {e}"),
            }
        }
    }
}
