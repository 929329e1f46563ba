//! The web: a read-only dashboard and JSON API over the writer's ClickHouse tables (exact figures) and the
//! aggregator's live rollups in NATS KV, with the alerter's history from `TELEMETRY_ALERTS`. Pages are
//! rendered on the server (askama) and work without JS; charts are drawn by the vendored Chart.js from the
//! JSON API. Every answer comes through a stale-while-revalidate cache. `run` is the whole service; `main`
//! only parses config, sets up logs and metrics, and calls it. Nothing here writes to any store.

pub mod admin;
pub mod alerts;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod db;
pub mod error;
pub mod figures;
pub mod http;
pub mod ids;
pub mod legacy;
pub mod live;
pub mod metrics;
pub mod model;
pub mod pages;
pub mod params;
pub mod rollup;
pub mod scripts;
pub mod static_files;
pub mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use fleet::Shutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

pub use config::Config;

use cache::SwrCache;
use db::{Db, DbError};
use model::{AppView, Dashboard, Errors, RecordsPage};
use params::{Period, RecordsQuery, Repo, Scope};

/// Freshness of the live strip's cache: the aggregator publishes every few seconds.
const LIVE_TTL: Duration = Duration::from_secs(3);

/// A cached answer: the value for the pages and its JSON, serialized once when it was loaded, so that a
/// hit of the API copies bytes instead of serializing again.
pub type Rendered<T> = (Arc<T>, axum::body::Bytes);

fn rendered<T: serde::Serialize>(value: T) -> Rendered<T> {
    // These views are plain data (strings, numbers, vectors); serializing them cannot fail.
    let json = serde_json::to_vec(&value).unwrap_or_default();
    (Arc::new(value), json.into())
}

/// The caches of every view, one per kind of answer.
pub struct Caches {
    pub dashboard: SwrCache<Scope, Rendered<Dashboard>, DbError>,
    pub errors: SwrCache<Scope, Rendered<Errors>, DbError>,
    pub app: SwrCache<(String, Scope), Rendered<AppView>, DbError>,
    pub records: SwrCache<RecordsQuery, Rendered<RecordsPage>, DbError>,
    pub alerts: SwrCache<(), Arc<Vec<schema::alert::AlertEvent>>, alerts::AlertsError>,
    pub live: SwrCache<Repo, Arc<live::Live>, live::LiveError>,
}

/// Everything a request handler needs, shared by `Arc`.
pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub jetstream: jetstream::Context,
    pub caches: Caches,
    /// `None` when no recorder was installed (then `/metrics` is empty).
    pub metrics: Option<PrometheusHandle>,
    /// Triggered when the web starts shutting down: readiness turns 503.
    pub shutdown: Shutdown,
    /// `/api/scripts` and the script analysis, with the script catalogue.
    pub scripts: scripts::ScriptsService,
    /// Installs ever stored per repo and slug filter (the dashboard's all-time card).
    pub all_time: figures::AllTime,
    /// The caches of the running service's read API (`/api/dashboard`, `/api/records`, `/api/errors`).
    pub legacy: legacy::LegacyCaches,
    /// One permit per CSV export streaming (`CSV_MAX_CONCURRENT`).
    pub csv_slots: Arc<tokio::sync::Semaphore>,
}

/// How many caches share `CACHE_MAX_BYTES`: dashboard, errors, app, records and the three legacy ones.
const WEIGHED_CACHES: u64 = 7;

/// The weight of a cached view: its JSON twice (the bytes and the value they were made from).
fn weigh_rendered<T>(value: &Rendered<T>) -> u32 {
    u32::try_from(value.1.len().saturating_mul(2))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl AppState {
    pub fn new(
        config: Config,
        client: async_nats::Client,
        metrics: Option<PrometheusHandle>,
    ) -> AppState {
        let db = Db::new(&config);
        let js = jetstream::new(client);
        let budget = (config.cache_max_bytes / WEIGHED_CACHES).max(1);
        let (capacity, ttl, stale, cached, pace) = (
            config.cache_capacity,
            config.cache_ttl(),
            config.cache_max_stale(),
            config.enable_cache,
            config.cache_refresh_pace,
        );
        let d = db.clone();
        let dashboard = SwrCache::new("dashboard", capacity, ttl, stale, move |scope| {
            let d = d.clone();
            async move { d.steady(|| d.dashboard(scope, now())).await.map(rendered) }
        })
        .weighed(budget, weigh_rendered)
        .paced(pace)
        .enabled(cached);
        let d = db.clone();
        let errors = SwrCache::new("errors", capacity, ttl, stale, move |scope| {
            let d = d.clone();
            async move { d.steady(|| d.errors(scope, now())).await.map(rendered) }
        })
        .weighed(budget, weigh_rendered)
        .paced(pace)
        .enabled(cached);
        let d = db.clone();
        let app = SwrCache::new(
            "app",
            capacity,
            ttl,
            stale,
            move |(nsapp, scope): (String, Scope)| {
                let d = d.clone();
                async move { d.steady(|| d.app(&nsapp, scope, now())).await.map(rendered) }
            },
        )
        .weighed(budget, weigh_rendered)
        .paced(pace)
        .enabled(cached);
        let d = db.clone();
        let records = SwrCache::new("records", capacity, ttl, stale, move |q: RecordsQuery| {
            let d = d.clone();
            async move { d.steady(|| d.records(&q, now())).await.map(rendered) }
        })
        .weighed(budget, weigh_rendered)
        .paced(pace)
        .enabled(cached);
        let j = js.clone();
        let max = config.alerts_max;
        let alerts = SwrCache::new("alerts", 1, ttl, stale, move |()| {
            let j = j.clone();
            async move { alerts::read(&j, max).await.map(Arc::new) }
        })
        .enabled(cached);
        let j = js.clone();
        let live = SwrCache::new("live", 8, LIVE_TTL, stale, move |repo| {
            let j = j.clone();
            async move { live::read(&j, repo).await.map(Arc::new) }
        })
        .enabled(cached);
        let legacy = legacy::LegacyCaches::new(&db, &config, budget);
        let csv_slots = Arc::new(tokio::sync::Semaphore::new(
            config.csv_max_concurrent as usize,
        ));
        let scripts = scripts::ScriptsService::new(&config, db.clone());
        let all_time = figures::all_time_cache(&config, db.clone());
        AppState {
            legacy,
            csv_slots,
            scripts,
            all_time,
            db,
            jetstream: js,
            caches: Caches {
                dashboard,
                errors,
                app,
                records,
                alerts,
                live,
            },
            metrics,
            shutdown: Shutdown::new(),
            config,
        }
    }
}

/// Runs the web on `listener` until `shutdown` resolves, then drains: readiness turns 503, the listener
/// closes, and open requests finish within the shutdown deadline. The HTTP server (header and request
/// deadlines, connection cap, drain) is `fleet::http::serve`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    client: async_nats::Client,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.check()?;
    let state = Arc::new(AppState::new(config, client.clone(), metrics));
    if state.config.id_hash_key.expose().is_empty() {
        tracing::warn!(
            "ID_HASH_KEY is unset: public install ids change on restart; set it for stable links"
        );
    }
    state.scripts.start(Duration::from_secs(20)).await;
    let catalogue = tokio::spawn(
        state
            .scripts
            .catalog
            .clone()
            .keep_fresh(Duration::from_secs(
                state.config.script_catalog_refresh_secs,
            )),
    );
    let background = tokio::spawn(keep_warm(state.clone()));
    let gauges = tokio::spawn(install_gauges(state.clone()));
    let addr = listener.local_addr()?;
    // The ops port outlives the public one's drain: /readyz shows 503 and metrics are scraped to the end.
    let stop_ops = Shutdown::new();
    let (ops_addr, ops_task) = fleet::ops::spawn(
        state.config.ops_addr,
        http::ops(&state),
        stop_ops.clone().triggered_owned(),
    )
    .await?;
    tracing::info!(%addr, %ops_addr, "listening");
    fleet::http::serve(
        listener,
        http::router(state.clone()),
        state.config.limits(),
        state.shutdown.clone().trigger_after(shutdown),
    )
    .await;
    background.abort();
    gauges.abort();
    catalogue.abort();
    stop_ops.trigger();
    let _ = ops_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Warm-up at start (every period of the overview and the errors page, all repos), then every
/// `CACHE_REFRESH_SECS` a renewal of the most read keys of each cache before they go stale. Nothing with
/// `ENABLE_CACHE=false`.
async fn keep_warm(state: Arc<AppState>) {
    let c = &state.caches;
    if !state.config.enable_cache {
        tracing::info!("ENABLE_CACHE=false: every answer is computed when asked");
        return;
    }
    if state.config.cache_warmup {
        tracing::info!("cache warm-up started");
        // The default view first, then the other periods, one at a time.
        let mut periods = vec![Period::default()];
        periods.extend(Period::ALL.into_iter().filter(|p| *p != Period::default()));
        for period in periods {
            let scope = Scope {
                period,
                ..Scope::default()
            };
            c.dashboard.warm(scope).await;
            c.errors.warm(scope).await;
        }
        c.alerts.warm(()).await;
        let raw = Vec::new();
        let raw = legacy::params::Raw(&raw);
        state
            .legacy
            .dashboard
            .warm(legacy::params::Scope::parse(&raw, 1))
            .await;
        state
            .legacy
            .errors
            .warm(legacy::params::Scope::parse(&raw, 7))
            .await;
        // The running service's script view, and the all-time one a public app reads.
        for days in [scripts::DEFAULT_DAYS, 0] {
            let q = scripts::ScriptsQuery {
                days,
                ..scripts::ScriptsQuery::default()
            };
            state.scripts.cache.warm(q).await;
        }
        tracing::info!("cache warm-up done");
    }
    let top = state.config.cache_refresh_top;
    let mut tick =
        tokio::time::interval(Duration::from_secs(state.config.cache_refresh_secs.max(1)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let started = c.dashboard.refresh_popular(top).await
            + c.errors.refresh_popular(top).await
            + c.app.refresh_popular(top).await
            + c.records.refresh_popular(top).await
            + c.alerts.refresh_popular(1).await
            + state.legacy.dashboard.refresh_popular(top).await
            + state.legacy.errors.refresh_popular(top).await
            + state.legacy.records.refresh_popular(top).await
            + state.scripts.cache.refresh_popular(top).await
            + state.all_time.refresh_popular(top).await;
        tracing::debug!(started, "popular keys refreshed");
    }
}

/// Every `METRICS_REFRESH_SECS`, today's installs of ProxmoxVE by final status into the
/// `telemetry_installs_*` gauges of `/metrics` (one query per round, none per scrape); paced like the
/// caches: the next round waits at least `CACHE_REFRESH_PACE` times as long as this one took.
async fn install_gauges(state: Arc<AppState>) {
    let db = legacy::db::LegacyDb {
        db: state.db.clone(),
    };
    let raw = Vec::new();
    let scope = legacy::params::Scope::parse(&legacy::params::Raw(&raw), 1);
    let pace = cache::Freshness {
        ttl: Duration::from_secs(state.config.metrics_refresh_secs.max(1)),
        pace: state.config.cache_refresh_pace,
        max_stale: state.config.cache_max_stale(),
    };
    loop {
        let started = std::time::Instant::now();
        match db.db.steady(|| db.status_counts(&scope, now())).await {
            Ok(counts) => metrics::set_install_gauges(&counts),
            Err(e) => tracing::debug!(error = %e, "install gauges not refreshed"),
        }
        let took = started.elapsed();
        tokio::time::sleep(pace.after(took).saturating_sub(took)).await;
    }
}
