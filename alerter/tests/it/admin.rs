//! The web's test-mail request to a real alerter over NATS request–reply: the mail lands in the SMTP
//! sink and the reply says so; with the SMTP server unreachable the reply says it was not sent.

use std::time::Duration;

use schema::admin::{AlertTest, Reply};
use schema::names;
use testkit::poll_until;

use crate::harness::*;

async fn ask_test_mail(client: &async_nats::Client) -> Result<AlertTest, String> {
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(names::ADMIN_ALERTS_TEST_SUBJECT, Vec::new().into()),
    )
    .await
    .map_err(|_| "no reply".to_string())?
    .map_err(|e| e.to_string())?;
    match serde_json::from_slice::<Reply<AlertTest>>(&reply.payload) {
        Ok(Reply::Ok(answer)) => Ok(answer),
        Ok(Reply::Err { error }) => Err(error),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn a_test_mail_on_request_reaches_the_sink_and_the_reply_says_so() {
    let stack = Stack::start().await;
    let client = fleet::nats::connect(&stack.nats.url(), "test-admin")
        .await
        .expect("connect");
    fleet::nats::wait_connected(&client).await;
    let alerter = stack.start_alerter(stack.alerter_config()).await;
    // Until the responder subscribed there is no responder: the request fails fast, and is asked again.
    let answer = poll_until("the alerter answers", Duration::from_secs(30), async || {
        ask_test_mail(&client).await
    })
    .await;
    assert!(answer.sent, "{answer:?}");
    assert!(answer.message.contains("2 recipient"), "{answer:?}");
    let mails = poll_until(
        "the test mail in the sink",
        Duration::from_secs(30),
        async || {
            let mails = stack.smtp.mails();
            (!mails.is_empty()).then_some(mails)
        },
    )
    .await;
    assert_eq!(mails.len(), 1, "one request, one mail");
    assert!(mails[0].contains("[telemetry] test mail"), "{}", mails[0]);
    assert!(mails[0].contains("maintainers@localhost"), "{}", mails[0]);
    alerter.stop().await.expect("alerter");

    // An SMTP server nobody listens on: the reply says the mail was not sent.
    let mut config = stack.alerter_config();
    config.smtp_port = testkit::free_port().expect("port");
    config.smtp_timeout_secs = 2;
    let alerter = stack.start_alerter(config).await;
    let answer = poll_until("the alerter answers", Duration::from_secs(30), async || {
        ask_test_mail(&client).await
    })
    .await;
    assert!(!answer.sent, "{answer:?}");
    assert!(answer.message.contains("could not be sent"), "{answer:?}");
    assert_eq!(stack.smtp.mails().len(), 1);
    alerter.stop().await.expect("alerter");
}
