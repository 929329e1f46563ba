//! The answer cache: moka with stale-while-revalidate. An entry is fresh for `ttl`; after that it is still
//! served (`X-Cache: stale`) while exactly one refresh per key runs in the background, until `max_stale`
//! drops it. A miss loads through moka's `try_get_with`, so parallel cold requests for one key cause one
//! query. Reads are counted per key; [`SwrCache::refresh_popular`] renews the most read keys before they
//! go stale; only keys read at least twice in a round count, so a stream of one-off keys (junk filters)
//! causes no refresh work. With [`SwrCache::weighed`] the entries are weighed in bytes against a budget
//! instead of counted. With [`SwrCache::paced`] an answer stays fresh for at least a multiple of the time
//! its computation took, so a view that grows costly (today's installs on a busy day) is recomputed less
//! often instead of taking ever more of ClickHouse from the writers. Keys are the typed, normalized
//! parameters of a request, never its raw query string. Nothing invalidates it: new data shows up at
//! the next refresh.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics;

/// Reads in one round a key needs to be renewed by [`SwrCache::refresh_popular`].
pub const MIN_READS: u64 = 2;

/// How an answer was found, for the `X-Cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Stale,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Loader<K, V, E> = Arc<dyn Fn(K) -> BoxFuture<Result<V, E>> + Send + Sync>;

#[derive(Clone)]
struct Entry<V> {
    value: V,
    loaded: Instant,
    /// How long it counts as fresh ([`Freshness::after`]).
    fresh: Duration,
}

/// How long an answer counts as fresh.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub ttl: Duration,
    /// 0: `ttl` alone ([`SwrCache::paced`]).
    pub pace: u32,
    pub max_stale: Duration,
}

impl Freshness {
    /// For an answer whose computation took `took`: `ttl`, or `pace` times `took` when that is longer,
    /// but never more than half of `max_stale`, so that it still goes stale (and is refreshed in the
    /// background) before it is dropped.
    pub fn after(self, took: Duration) -> Duration {
        self.ttl
            .max(took.saturating_mul(self.pace).min(self.max_stale / 2))
    }

    /// The entry of `value`, computed from `started` until now.
    fn entry<V>(self, value: V, started: Instant) -> Entry<V> {
        let loaded = Instant::now();
        Entry {
            value,
            loaded,
            fresh: self.after(loaded.duration_since(started)),
        }
    }
}

/// A stale-while-revalidate cache of `K -> V`, loading through one loader.
pub struct SwrCache<K, V, E> {
    name: &'static str,
    entries: moka::future::Cache<K, Entry<V>>,
    loader: Loader<K, V, E>,
    freshness: Freshness,
    refreshing: Arc<Mutex<HashSet<K>>>,
    reads: Mutex<HashMap<K, u64>>,
    /// False (ENABLE_CACHE=false): every `get` loads, nothing is kept.
    enabled: bool,
}

impl<K, V, E> SwrCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + std::fmt::Debug + 'static,
    V: Clone + Send + Sync + 'static,
    E: std::fmt::Display + Send + Sync + 'static,
{
    /// `name` labels the metrics; `loader` computes a value for a key.
    pub fn new<F, Fut>(
        name: &'static str,
        capacity: u64,
        ttl: Duration,
        max_stale: Duration,
        loader: F,
    ) -> Self
    where
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        // An entry is dropped no sooner than it goes stale.
        let max_stale = max_stale.max(ttl);
        SwrCache {
            name,
            entries: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(max_stale)
                .build(),
            loader: Arc::new(move |k| Box::pin(loader(k))),
            freshness: Freshness {
                ttl,
                pace: 0,
                max_stale,
            },
            refreshing: Arc::default(),
            reads: Mutex::default(),
            enabled: true,
        }
    }

    /// The same cache that keeps nothing when `enabled` is false: every read loads (a miss), warm-up and
    /// refreshes do nothing.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The same cache whose answers stay fresh for at least `pace` times as long as their computation
    /// took ([`Freshness::after`]): refreshing a key then takes at most about 1/`pace` of the time
    /// (2/`pace` for a popular key, renewed at half its freshness), however costly its computation
    /// grows. 0: every answer is fresh for the TTL alone.
    pub fn paced(mut self, pace: u32) -> Self {
        self.freshness.pace = pace;
        self
    }

    /// The same (empty) cache bounded by `max_bytes` as weighed by `weigh` instead of by entry count.
    pub fn weighed(mut self, max_bytes: u64, weigh: fn(&V) -> u32) -> Self {
        let ttl = self.entries.policy().time_to_live();
        let mut builder = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |_k: &K, e: &Entry<V>| weigh(&e.value));
        if let Some(ttl) = ttl {
            builder = builder.time_to_live(ttl);
        }
        self.entries = builder.build();
        self
    }

    /// The weight the cache holds (bytes when weighed, entries otherwise), after pending evictions.
    pub async fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.weighted_size()
    }

    /// The value for `key`: fresh from the cache, stale (with a refresh started if none runs), or loaded.
    pub async fn get(&self, key: K) -> Result<(V, CacheStatus), Arc<E>> {
        if !self.enabled {
            ::metrics::counter!(metrics::CACHE, "cache" => self.name, "result" => "miss")
                .increment(1);
            let value = (self.loader)(key).await.map_err(Arc::new)?;
            return Ok((value, CacheStatus::Miss));
        }
        self.count_read(&key);
        if let Some(entry) = self.entries.get(&key).await {
            if entry.loaded.elapsed() < entry.fresh {
                ::metrics::counter!(metrics::CACHE, "cache" => self.name, "result" => "hit")
                    .increment(1);
                return Ok((entry.value, CacheStatus::Hit));
            }
            ::metrics::counter!(metrics::CACHE, "cache" => self.name, "result" => "stale")
                .increment(1);
            self.refresh(key);
            return Ok((entry.value, CacheStatus::Stale));
        }
        ::metrics::counter!(metrics::CACHE, "cache" => self.name, "result" => "miss").increment(1);
        let loader = self.loader.clone();
        let load_key = key.clone();
        let freshness = self.freshness;
        let entry = self
            .entries
            .try_get_with(key, async move {
                let started = Instant::now();
                let value = loader(load_key).await?;
                Ok::<_, E>(freshness.entry(value, started))
            })
            .await?;
        Ok((entry.value, CacheStatus::Miss))
    }

    /// Marks `key` as refreshing; false when a refresh of it already runs.
    fn claim(&self, key: &K) -> bool {
        self.refreshing
            .lock()
            .map(|mut running| running.insert(key.clone()))
            .unwrap_or(false)
    }

    /// The load of a claimed refresh: stores the new value, or keeps the stale one on error.
    fn reload(&self, key: K) -> impl Future<Output = ()> + Send + 'static {
        let entries = self.entries.clone();
        let loader = self.loader.clone();
        let refreshing = self.refreshing.clone();
        let name = self.name;
        let freshness = self.freshness;
        async move {
            ::metrics::counter!(metrics::CACHE_REFRESHES, "cache" => name).increment(1);
            let started = Instant::now();
            match loader(key.clone()).await {
                Ok(value) => {
                    let entry = freshness.entry(value, started);
                    ::metrics::gauge!(metrics::CACHE_FRESH_SECONDS, "cache" => name)
                        .set(entry.fresh.as_secs_f64());
                    entries.insert(key.clone(), entry).await;
                }
                // The stale value stays until it expires; the next read tries again.
                Err(e) => tracing::warn!(cache = name, ?key, error = %e, "cache refresh failed"),
            }
            if let Ok(mut running) = refreshing.lock() {
                running.remove(&key);
            }
        }
    }

    /// Starts a background refresh of `key` unless one is running. Returns whether it started one.
    pub fn refresh(&self, key: K) -> bool {
        if !self.enabled || !self.claim(&key) {
            return false;
        }
        tokio::spawn(self.reload(key));
        true
    }

    /// Loads `key` now if it is absent or past half its freshness and no refresh of it runs (warm-up and
    /// popular keys; one at a time, so the store is not asked for everything at once). Returns whether
    /// it loaded.
    pub async fn warm(&self, key: K) -> bool {
        let due = match self.entries.get(&key).await {
            Some(entry) => entry.loaded.elapsed() >= entry.fresh / 2,
            None => true,
        };
        if !self.enabled || !due || !self.claim(&key) {
            return false;
        }
        self.reload(key).await;
        true
    }

    /// Renews the `top` most read keys since the last call that are due, one after the other; returns
    /// how many it renewed.
    pub async fn refresh_popular(&self, top: usize) -> usize {
        let mut reads: Vec<(K, u64)> = match self.reads.lock() {
            Ok(mut reads) => reads.drain().collect(),
            Err(_) => return 0,
        };
        reads.retain(|(_, n)| *n >= MIN_READS);
        reads.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let mut renewed = 0;
        for (key, _) in reads.into_iter().take(top) {
            if self.warm(key).await {
                renewed += 1;
            }
        }
        renewed
    }

    /// True while a refresh of `key` runs.
    pub fn is_refreshing(&self, key: &K) -> bool {
        self.refreshing
            .lock()
            .map(|running| running.contains(key))
            .unwrap_or(false)
    }

    fn count_read(&self, key: &K) {
        if let Ok(mut reads) = self.reads.lock() {
            // Bounded: the map is drained by every popular-key round; cap it in between.
            if reads.len() < 10_000 || reads.contains_key(key) {
                *reads.entry(key.clone()).or_default() += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::sync::Semaphore;

    /// A loader that counts its calls, returns the call number, and waits for a permit of `gate`.
    fn counting(ttl: Duration) -> (SwrCache<u32, u64, String>, Arc<AtomicU64>, Arc<Semaphore>) {
        let calls = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let (c, g) = (calls.clone(), gate.clone());
        let cache = SwrCache::new(
            "test",
            100,
            ttl,
            Duration::from_secs(3600),
            move |_k: u32| {
                let (c, g) = (c.clone(), g.clone());
                async move {
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    g.acquire().await.map_err(|e| e.to_string())?.forget();
                    Ok(n)
                }
            },
        );
        (cache, calls, gate)
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "{what} did not happen in time");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_cold_requests_cause_one_load() {
        let (cache, calls, gate) = counting(Duration::from_secs(60));
        let cache = Arc::new(cache);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(7).await })
            })
            .collect();
        until("the first load", || calls.load(Ordering::SeqCst) == 1).await;
        let read =
            |cache: &SwrCache<u32, u64, String>| cache.reads.lock().unwrap().get(&7).copied();
        until("every request to arrive", || read(&cache) == Some(32)).await;
        gate.add_permits(100);
        let mut misses = 0;
        for task in tasks {
            let (value, status) = task.await.expect("join").expect("value");
            assert_eq!(value, 1, "every request gets the one load's value");
            // A request the scheduler delays past the load's end finds the entry: a hit, no load.
            assert_ne!(status, CacheStatus::Stale);
            misses += usize::from(status == CacheStatus::Miss);
        }
        // A miss looked before the load ended (the gate was shut) and got its value: requests waited
        // on the one load together.
        assert!(misses >= 2, "{misses} requests waited on the load");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let (value, status) = cache.get(7).await.expect("value");
        assert_eq!((value, status), (1, CacheStatus::Hit));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_stale_entry_is_served_while_one_refresh_runs() {
        // Zero freshness: every entry is stale as soon as it is loaded.
        let (cache, calls, gate) = counting(Duration::ZERO);
        gate.add_permits(1);
        assert_eq!(cache.get(1).await.expect("first"), (1, CacheStatus::Miss));
        // The refresh blocks on the gate: reads meanwhile get the old value at once, and start no other.
        for _ in 0..10 {
            assert_eq!(cache.get(1).await.expect("stale"), (1, CacheStatus::Stale));
        }
        until("the refresh to start", || calls.load(Ordering::SeqCst) == 2).await;
        assert!(cache.is_refreshing(&1));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one refresh in flight");
        gate.add_permits(1);
        until("the refresh to finish", || !cache.is_refreshing(&1)).await;
        let (value, status) = cache.get(1).await.expect("refreshed");
        assert_eq!((value, status), (2, CacheStatus::Stale));
        gate.add_permits(10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn popular_keys_are_refreshed_and_errors_keep_the_stale_value() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let cache: SwrCache<u32, u64, String> = SwrCache::new(
            "test",
            100,
            Duration::ZERO,
            Duration::from_secs(60),
            move |k| {
                let c = c.clone();
                async move {
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    if n > 1 && k == 2 {
                        return Err("down".to_string());
                    }
                    Ok(n)
                }
            },
        );
        cache.get(2).await.expect("first");
        cache.get(2).await.expect("second read");
        until("the second read's refresh", || !cache.is_refreshing(&2)).await;
        assert_eq!(cache.refresh_popular(5).await, 1);
        assert!(!cache.is_refreshing(&2));
        assert_eq!(cache.get(2).await.expect("kept"), (1, CacheStatus::Stale));
        // Nothing read since the last round: nothing to renew.
        until("the read's refresh", || !cache.is_refreshing(&2)).await;
        cache.refresh_popular(5).await;
        assert_eq!(cache.refresh_popular(5).await, 0);
    }

    #[test]
    fn a_costly_answer_stays_fresh_longer_but_goes_stale_before_it_is_dropped() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let f = |ttl, pace, max_stale| Freshness {
            ttl,
            pace,
            max_stale,
        };
        let hour = s(3600);
        // Cheap: the TTL.
        assert_eq!(f(s(60), 10, hour).after(ms(40)), s(60));
        // Costly: ten times its computation.
        assert_eq!(f(s(60), 10, hour).after(ms(8_500)), s(85));
        // Never past half the stale limit, never below the TTL.
        assert_eq!(f(s(60), 10, hour).after(s(400)), s(1800));
        assert_eq!(f(s(60), 10, s(100)).after(s(400)), s(60));
        // Pace 0: the TTL alone.
        assert_eq!(f(s(10), 0, hour).after(s(400)), s(10));
    }

    /// A cache of zero TTL whose loader takes at least 50 ms, paced by `pace`.
    fn slow(pace: u32) -> SwrCache<u32, u64, String> {
        let calls = Arc::new(AtomicU64::new(0));
        SwrCache::new(
            "test",
            100,
            Duration::ZERO,
            Duration::from_secs(3600),
            move |_k: u32| {
                let c = calls.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(c.fetch_add(1, Ordering::SeqCst) + 1)
                }
            },
        )
        .paced(pace)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paced_cache_keeps_a_slow_answer_fresh() {
        // 50 ms at least, times 1000: fresh for 50 s at least (the TTL alone: stale at once).
        let paced = slow(1000);
        assert_eq!(paced.get(1).await.expect("load"), (1, CacheStatus::Miss));
        assert_eq!(paced.get(1).await.expect("read"), (1, CacheStatus::Hit));
        assert!(!paced.warm(1).await, "not due for renewal");
        until("no refresh", || !paced.is_refreshing(&1)).await;

        let unpaced = slow(0);
        assert_eq!(unpaced.get(1).await.expect("load"), (1, CacheStatus::Miss));
        assert_eq!(unpaced.get(1).await.expect("read"), (1, CacheStatus::Stale));
        until("the refresh", || !unpaced.is_refreshing(&1)).await;
        assert_eq!(unpaced.get(1).await.expect("refreshed").0, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disabled_cache_loads_every_time() {
        let (cache, calls, gate) = counting(Duration::from_secs(60));
        let cache = cache.enabled(false);
        gate.add_permits(10);
        assert_eq!(cache.get(1).await.expect("first"), (1, CacheStatus::Miss));
        assert_eq!(cache.get(1).await.expect("second"), (2, CacheStatus::Miss));
        assert!(!cache.warm(1).await);
        assert!(!cache.refresh(1));
        assert_eq!(cache.refresh_popular(5).await, 0);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_off_keys_are_not_refreshed_and_rounds_are_bounded() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let cache: SwrCache<u32, u64, String> = SwrCache::new(
            "test",
            1000,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            move |_k| {
                let c = c.clone();
                async move { Ok(c.fetch_add(1, Ordering::SeqCst) + 1) }
            },
        );
        // 100 keys read once (junk), 5 keys read three times.
        for k in 0..100 {
            cache.get(k).await.expect("junk");
        }
        for _ in 0..3 {
            for k in 1000..1005 {
                cache.get(k).await.expect("popular");
            }
        }
        cache.entries.invalidate_all();
        let before = calls.load(Ordering::SeqCst);
        assert_eq!(cache.refresh_popular(3).await, 3, "at most top keys");
        assert_eq!(calls.load(Ordering::SeqCst) - before, 3);
        assert_eq!(
            cache.refresh_popular(3).await,
            0,
            "the round drained the reads"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_are_weighed_in_bytes() {
        let cache: SwrCache<u32, Vec<u8>, String> = SwrCache::new(
            "test",
            1_000_000,
            Duration::from_secs(60),
            Duration::from_secs(60),
            |k: u32| async move { Ok(vec![0u8; 400 + k as usize]) },
        )
        .weighed(1_000, |v| v.len() as u32);
        for k in 0..10 {
            let (value, status) = cache.get(k).await.expect("value");
            assert_eq!((value.len(), status), (400 + k as usize, CacheStatus::Miss));
        }
        let size = cache.weighted_size().await;
        assert!(size <= 1_000, "{size} bytes kept");
        assert!(size >= 400, "something is kept: {size}");
    }
}
