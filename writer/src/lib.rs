//! The writer: stores every accepted event of the stream in ClickHouse (the `events` table, folded into
//! `installs` by ClickHouse itself) and every install in PocketBase (one record, upserted with the
//! `schema` merge). Each sink is its own durable pull consumer, so a slow store never holds the other
//! back; nothing is acked before the store confirmed, and every write is idempotent, so redelivery,
//! replicas and arrival order never change what the stores show. `run` is the whole service; `main` only
//! parses config, sets up logs and metrics, and calls it.

pub mod clickhouse;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod import;
pub mod lease;
pub mod metrics;
pub mod pocketbase;
pub mod retention;
pub mod sink;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use backon::Retryable;
use fleet::Shutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

pub use config::Config;
pub use consumer::SinkStatus;

/// Consumer-name suffix and metric label of the ClickHouse sink.
pub const CLICKHOUSE: &str = "clickhouse";
/// Consumer-name suffix and metric label of the PocketBase sink.
pub const POCKETBASE: &str = "pocketbase";

/// What each sink of this process is doing; shared with `/readyz` and with tests.
#[derive(Debug, Default, Clone)]
pub struct Statuses {
    pub clickhouse: Arc<SinkStatus>,
    pub pocketbase: Arc<SinkStatus>,
    pub stopping: Arc<AtomicBool>,
}

/// Runs the configured sinks until `shutdown` resolves, then stops in order: readiness turns 503, each
/// consumer finishes and acks the batch in hand (bounded by the shutdown deadline), the PocketBase lease
/// is released, and the NATS client flushes.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    metrics: Option<PrometheusHandle>,
    statuses: Statuses,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.check()?;
    let js = jetstream::new(client.clone());
    let stop = Shutdown::new();

    let mut sinks: Vec<(&'static str, Arc<SinkStatus>)> = Vec::new();
    if config.sink.clickhouse() {
        sinks.push((CLICKHOUSE, statuses.clickhouse.clone()));
    }
    if config.sink.pocketbase() {
        sinks.push((POCKETBASE, statuses.pocketbase.clone()));
    }
    let readiness = {
        let client = client.clone();
        let stopping = statuses.stopping.clone();
        let sinks = sinks.clone();
        move || {
            let (sinks_ready, mut details) = consumer::ready(&sinks);
            let broker = fleet::nats::connected(&client);
            let stopping = stopping.load(Ordering::Relaxed);
            if let Some(map) = details.as_object_mut() {
                map.insert("broker".into(), broker.into());
                map.insert("stopping".into(), stopping.into());
            }
            (sinks_ready && broker && !stopping, details)
        }
    };
    let ops = fleet::ops::Ops::json(readiness, metrics);
    let (ops_addr, ops_task) =
        fleet::ops::spawn(config.ops_addr, ops, stop.clone().triggered_owned()).await?;
    tracing::info!(%ops_addr, sink = ?config.sink, "writer starting");

    let mut tasks = Vec::new();
    if config.sink.clickhouse() {
        tasks.push(tokio::spawn(run_clickhouse(
            config.clone(),
            js.clone(),
            statuses.clickhouse.clone(),
            stop.clone(),
        )));
    }
    if config.sink.pocketbase() {
        tasks.push(tokio::spawn(run_pocketbase(
            config.clone(),
            js.clone(),
            statuses.pocketbase.clone(),
            stop.clone(),
        )));
    }

    shutdown.await;
    tracing::info!("shutting down, finishing the batches in hand");
    statuses.stopping.store(true, Ordering::Relaxed);
    stop.trigger();
    // Consumers give up on a store that stays down after `shutdown_timeout`; a little more for the naks.
    let deadline = config.shutdown_timeout() + Duration::from_secs(2);
    let all = futures::future::join_all(tasks.iter_mut());
    if tokio::time::timeout(deadline, all).await.is_err() {
        tracing::warn!(?deadline, "shutdown deadline passed, stopping the sinks");
        for task in &tasks {
            task.abort();
        }
    }
    fleet::nats::flush(&client, fleet::nats::FLUSH_DEADLINE).await;
    let _ = ops_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// The consumer settings of one sink.
pub fn consumer_settings(config: &Config, sink: &str) -> consumer::Settings {
    consumer::Settings {
        consumer: config.consumer_name(sink),
        batch_size: config.batch_size as usize,
        batch_max_wait: config.batch_max_wait(),
        max_ack_pending: config.max_ack_pending,
        ack_wait: config.ack_wait(),
        retry_max_delay: config.retry_max_delay(),
        shutdown_timeout: config.shutdown_timeout(),
        replicas: config.kv_replicas,
    }
}

/// The ClickHouse sink of `config`.
pub fn clickhouse_sink(config: &Config) -> clickhouse::ClickHouseSink {
    clickhouse::ClickHouseSink::new(&clickhouse::Settings {
        url: config.clickhouse_url.clone(),
        user: config.clickhouse_user.clone(),
        password: config.clickhouse_password.clone(),
        database: config.clickhouse_database.clone(),
        write_timeout: config.write_timeout(),
        migrate_to: config.clickhouse_migrate_to,
    })
}

/// The PocketBase sink of `config`.
pub fn pocketbase_sink(config: &Config) -> anyhow::Result<pocketbase::PocketBaseSink> {
    pocketbase::PocketBaseSink::new(pocketbase::Settings {
        url: config.pb_url.clone(),
        email: config.pb_email.clone(),
        password: config.pb_password.clone(),
        auth_collection: config.pb_auth_collection.clone(),
        collection: config.pb_target_collection.clone(),
        batch_requests: config.pb_batch_requests as usize,
        timeout: config.write_timeout(),
        allow_schema_changes: config.pb_allow_schema_changes,
        allow_settings_changes: config.pb_allow_settings_changes,
    })
}

async fn run_clickhouse(
    config: Config,
    js: jetstream::Context,
    status: Arc<SinkStatus>,
    stop: Shutdown,
) {
    let sink = clickhouse_sink(&config);
    let migrate = || sink.migrate();
    let migrated = tokio::select! {
        r = migrate.retry(fleet::retry::backoff(config.retry_max_delay()))
            .notify(|e, wait| tracing::warn!(sink = CLICKHOUSE, error = %e, ?wait, "clickhouse not ready, retrying")) => r.is_ok(),
        () = stop.triggered() => false,
    };
    if !migrated {
        return;
    }
    status.up.store(true, Ordering::Relaxed);
    status.active.store(true, Ordering::Relaxed);
    ::metrics::gauge!(metrics::SINK_UP, "sink" => CLICKHOUSE).set(1.0);
    let retention = {
        let sink = sink.clone();
        retention::spawn(
            &config,
            CLICKHOUSE,
            consumer::always_active(),
            move |now, policy| {
                let sink = sink.clone();
                async move { sink.retention(now, &policy).await }
            },
        )
    };
    let settle =
        clickhouse::settle::spawn(sink.clone(), config.settle_interval(), config.settle_lag());
    let rollup = config
        .rollup_interval()
        .map(|every| clickhouse::rollup::spawn(sink.clone(), every));
    let settings = consumer_settings(&config, CLICKHOUSE);
    consumer::run(
        &sink,
        &js,
        &settings,
        status,
        consumer::always_active(),
        stop,
    )
    .await;
    settle.stop().await;
    if let Some(rollup) = rollup {
        rollup.abort();
    }
    if let Some(retention) = retention {
        retention.abort();
    }
}

async fn run_pocketbase(
    config: Config,
    js: jetstream::Context,
    status: Arc<SinkStatus>,
    stop: Shutdown,
) {
    let sink = match pocketbase_sink(&config) {
        Ok(sink) => Arc::new(sink),
        Err(e) => {
            tracing::error!(sink = POCKETBASE, error = %e, "pocketbase client could not be built");
            return;
        }
    };
    let prepare = || sink.prepare();
    let prepared = tokio::select! {
        r = prepare.retry(fleet::retry::backoff(config.retry_max_delay()))
            .notify(|e, wait| tracing::warn!(sink = POCKETBASE, error = %e, ?wait, "pocketbase not ready, retrying")) => r.is_ok(),
        () = stop.triggered() => false,
    };
    if !prepared {
        return;
    }
    status.up.store(true, Ordering::Relaxed);
    ::metrics::gauge!(metrics::SINK_UP, "sink" => POCKETBASE).set(1.0);

    let key = format!("{POCKETBASE}.{}", config.pb_target_collection);
    let holder = uuid::Uuid::now_v7().to_string();
    let open = || lease::Lease::open(&js, &key, &holder, config.lease_ttl(), config.kv_replicas);
    let lease = tokio::select! {
        r = open.retry(fleet::retry::backoff(config.retry_max_delay()))
            .notify(|e, wait| tracing::warn!(sink = POCKETBASE, error = %e, ?wait, "lease bucket not ready, retrying")) => match r {
            Ok(lease) => lease,
            Err(_) => return,
        },
        () = stop.triggered() => return,
    };
    sink.fence_with(lease.fence());
    let (active_tx, active_rx) = watch::channel(false);
    let done = Shutdown::new();
    let keeper = tokio::spawn(lease::keep(
        lease,
        config.lease_ttl(),
        active_tx,
        status.clone(),
        done.clone(),
    ));
    let retention = {
        let sink = sink.clone();
        retention::spawn(
            &config,
            POCKETBASE,
            active_rx.clone(),
            move |now, policy| {
                let sink = sink.clone();
                async move { sink.retention(now, &policy).await.map(|r| r.deleted()) }
            },
        )
    };
    let settings = consumer_settings(&config, POCKETBASE);
    consumer::run(sink.as_ref(), &js, &settings, status, active_rx, stop).await;
    if let Some(retention) = retention {
        retention.abort();
    }
    done.trigger();
    if let Ok(mut lease) = keeper.await {
        lease.release().await;
    }
}
