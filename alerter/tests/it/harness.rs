//! A whole alerting path in-process: nats-server and an SMTP sink (real processes), the aggregator and
//! any number of alerter replicas (the same `run` that `main` calls), and helpers that publish installs
//! like the edge does and read mail from the sink's maildir.

use std::time::{Duration, Instant};

use alerter::record::{AlertEvent, AlertRecord};
use async_nats::jetstream;
use schema::validate::{validate, Reception};
use testkit::smtp::SmtpServer;
use testkit::NatsServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Service {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("run");
        }
    }
}

fn spawn<F>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Service
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    Service {
        stop: Some(stop),
        task: Some(tokio::spawn(run(stopped))),
    }
}

pub struct Stack {
    pub nats: NatsServer,
    pub smtp: SmtpServer,
    pub js: jetstream::Context,
    pub aggregator: Option<Service>,
}

impl Stack {
    pub async fn start() -> Stack {
        let nats = NatsServer::start().expect("nats");
        let smtp = SmtpServer::start().expect("smtp");
        let client = fleet::nats::connect(&nats.url(), "test-client")
            .await
            .expect("connect");
        fleet::nats::wait_connected(&client).await;
        let js = jetstream::new(client);
        let settings = schema::names::events_stream(
            schema::names::DEFAULT_EVENTS_MAX_AGE,
            schema::names::DEFAULT_EVENTS_MAX_BYTES,
            1,
        );
        fleet::nats::ensure_stream(&js, &settings)
            .await
            .expect("stream");
        let mut config = aggregator::Config::for_nats(&nats.url());
        config.windows = vec!["1h".parse().expect("span"), "24h".parse().expect("span")];
        config.publish_interval_ms = 200;
        let agg_client = fleet::nats::connect(&nats.url(), "test-aggregator")
            .await
            .expect("connect");
        let aggregator = spawn(|stopped| {
            aggregator::run(config, agg_client, None, async {
                let _ = stopped.await;
            })
        });
        Stack {
            nats,
            smtp,
            js,
            aggregator: Some(aggregator),
        }
    }

    /// Alerter settings for tests: fast ticks and retries, the signature rule out of the way.
    pub fn alerter_config(&self) -> alerter::Config {
        let mut c = alerter::Config::for_nats(&self.nats.url());
        c.smtp_host = "127.0.0.1".into();
        c.smtp_port = self.smtp.port();
        c.smtp_from = "telemetry@localhost".into();
        c.smtp_to = vec!["maintainers@localhost".into(), "oncall@localhost".into()];
        c.smtp_timeout_secs = 5;
        c.alert_eval_interval_ms = 200;
        c.alert_retry_max_secs = 1;
        c.alert_lease_secs = 10;
        c.alert_signature_min_installs = 1_000_000;
        c.dashboard_url = "http://dash.test".into();
        c
    }

    pub async fn start_alerter(&self, config: alerter::Config) -> Service {
        let client = fleet::nats::connect(&config.nats_url, "test-alerter")
            .await
            .expect("connect");
        spawn(|stopped| {
            alerter::run(config, client, None, async {
                let _ = stopped.await;
            })
        })
    }

    /// Publishes installs of `app`: `failed` failures (exit 100) and `success` successes, each with an
    /// installing event first.
    pub async fn installs(&self, app: &str, prefix: &str, failed: usize, success: usize) {
        for i in 0..failed + success {
            let exec = format!("{prefix}-{i}");
            let end = if i < failed {
                body(
                    &exec,
                    app,
                    "failed",
                    r#","exit_code":100,"error":"x\nE: Unable to locate package foo""#,
                )
            } else {
                body(&exec, app, "success", r#","install_duration":60"#)
            };
            for b in [body(&exec, app, "installing", ""), end] {
                publish(&self.js, &b).await;
            }
        }
    }

    pub async fn mails(&self) -> Vec<String> {
        self.smtp.mails()
    }

    /// Waits until the sink holds `n` mails and returns them.
    pub async fn wait_mails(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_for(&format!("{n} mails"), timeout, || async {
            let mails = self.smtp.mails();
            (mails.len() >= n).then_some(mails)
        })
        .await
    }

    /// Checks the sink keeps exactly `n` mails for `period` (the observation window of a "never").
    pub async fn still_mails(&self, n: usize, period: Duration) {
        let until = Instant::now() + period;
        while Instant::now() < until {
            assert_eq!(
                self.smtp.mails().len(),
                n,
                "mail count changed: {:#?}",
                self.smtp.mails()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn record(&self, key: &str) -> Option<AlertRecord> {
        let store = self
            .js
            .get_key_value(schema::names::ALERTS_BUCKET)
            .await
            .ok()?;
        let bytes = store.get(key).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every event on TELEMETRY_ALERTS.
    pub async fn alert_events(&self) -> Vec<AlertEvent> {
        let Ok(mut stream) = self.js.get_stream(schema::names::ALERTS_STREAM).await else {
            return Vec::new();
        };
        let Ok(info) = stream.info().await else {
            return Vec::new();
        };
        let state = info.state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(msg) = stream.get_raw_message(seq).await {
                out.push(serde_json::from_slice(&msg.payload).expect("alert event"));
            }
        }
        out
    }

    pub async fn stop(mut self) {
        if let Some(a) = self.aggregator.take() {
            a.stop().await;
        }
    }
}

pub fn body(exec: &str, app: &str, status: &str, extra: &str) -> String {
    format!(
        r#"{{"random_id":"r-{exec}","execution_id":"{exec}","type":"lxc","nsapp":"{app}","status":"{status}"{extra}}}"#
    )
}

/// Validates like the edge and publishes with the contract's de-duplication id.
pub async fn publish(js: &jetstream::Context, body: &str) {
    let accepted = validate(body.as_bytes(), Reception::now()).expect("valid event");
    js.send_publish(
        accepted.event.subject(),
        jetstream::message::PublishMessage::build()
            .payload(accepted.event.to_json().into())
            .message_id(accepted.msg_id),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
}

/// Polls `check` every 50 ms until it returns `Some`, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Subject header of a raw mail (unfolded).
pub fn subject(mail: &str) -> String {
    let mut lines = mail.lines().skip_while(|l| !l.starts_with("Subject:"));
    let mut out = lines
        .next()
        .map(|l| l.trim_start_matches("Subject:").trim().to_string())
        .unwrap_or_default();
    for l in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
        out.push(' ');
        out.push_str(l.trim());
    }
    out
}

impl Stack {
    /// Waits until the aggregator published `decided` (success + failed) installs of `app` in 24 h.
    pub async fn wait_rollup(&self, app: &str, decided: u64) {
        let key = format!("24h.app.{}", aggregator::snapshot::encode_subject(app));
        wait_for(
            &format!("{app} rolled up"),
            Duration::from_secs(30),
            || async {
                let store = self
                    .js
                    .get_key_value(schema::names::STATS_BUCKET)
                    .await
                    .ok()?;
                let bytes = store.get(&key).await.ok()??;
                let stats: aggregator::snapshot::GroupStats =
                    serde_json::from_slice(&bytes).ok()?;
                (stats.success + stats.failed == decided).then_some(())
            },
        )
        .await;
    }

    /// Waits until the alert record of `key` satisfies `check`.
    pub async fn wait_record(
        &self,
        key: &str,
        check: impl Fn(&AlertRecord) -> bool,
    ) -> AlertRecord {
        wait_for(
            &format!("alert record {key}"),
            Duration::from_secs(30),
            || async { self.record(key).await.filter(|r| check(r)) },
        )
        .await
    }
}
