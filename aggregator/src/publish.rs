//! Writing snapshots to the KV bucket `telemetry_stats`: only the keys whose value changed since the last
//! successful write, deletes for groups that left every window, and at the first publish a sweep of keys
//! a previous run left behind. Runs as its own task so a slow broker never stalls the consumer.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use schema::stats::KEY_META;
use tokio::sync::watch;

use crate::metrics as m;

/// Writes in flight at once.
const CONCURRENT_WRITES: usize = 64;

/// One snapshot: every value by key, plus the heartbeat written every time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub values: BTreeMap<String, Vec<u8>>,
    pub meta: Vec<u8>,
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The keys whose value differs from what was written (by digest), and the written keys now gone.
pub fn changes<'a>(
    written: &HashMap<String, u64>,
    values: &'a BTreeMap<String, Vec<u8>>,
) -> (Vec<(&'a String, &'a Vec<u8>)>, Vec<String>) {
    let puts = values
        .iter()
        .filter(|(k, v)| written.get(*k) != Some(&digest(v)))
        .collect();
    let deletes = written
        .keys()
        .filter(|k| !values.contains_key(*k))
        .cloned()
        .collect();
    (puts, deletes)
}

/// Publishes every snapshot sent on `snapshots` until the sender is dropped.
pub async fn publish_loop(store: kv::Store, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    let mut written: HashMap<String, u64> = HashMap::new();
    let mut swept = false;
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        if !swept {
            match sweep(&store, &snapshot).await {
                Ok(n) => {
                    swept = true;
                    if n > 0 {
                        tracing::info!(deleted = n, "stale keys removed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "listing stats keys failed"),
            }
        }
        let (puts, deletes) = changes(&written, &snapshot.values);
        let puts: Vec<(String, Bytes)> = puts
            .into_iter()
            .map(|(k, v)| (k.clone(), Bytes::copy_from_slice(v)))
            .collect();
        let results: Vec<(String, Option<u64>)> = futures::stream::iter(puts)
            .map(|(key, value)| {
                let store = store.clone();
                async move {
                    let d = digest(&value);
                    let ok = store
                        .put(key.as_str(), value)
                        .await
                        .map_err(|e| tracing::warn!(key = %key, error = %e, "stats write failed"))
                        .is_ok();
                    (key, ok.then_some(d))
                }
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        for (key, done) in results {
            match done {
                Some(d) => {
                    metrics::counter!(m::KV_WRITES, "op" => "put").increment(1);
                    written.insert(key, d);
                }
                None => {
                    metrics::counter!(m::KV_ERRORS).increment(1);
                    written.remove(&key);
                }
            }
        }
        for key in deletes {
            match store.delete(&key).await {
                Ok(()) => {
                    metrics::counter!(m::KV_WRITES, "op" => "delete").increment(1);
                    written.remove(&key);
                }
                Err(e) => {
                    metrics::counter!(m::KV_ERRORS).increment(1);
                    tracing::warn!(key = %key, error = %e, "stats delete failed");
                }
            }
        }
        if let Err(e) = store
            .put(KEY_META, Bytes::from(snapshot.meta.clone()))
            .await
        {
            metrics::counter!(m::KV_ERRORS).increment(1);
            tracing::warn!(error = %e, "stats heartbeat write failed");
        }
    }
}

/// Deletes keys a previous run wrote that this snapshot does not have.
async fn sweep(store: &kv::Store, snapshot: &Snapshot) -> Result<usize, async_nats::Error> {
    let keys: Vec<String> = store.keys().await?.try_collect().await?;
    let mut deleted = 0;
    for key in keys {
        if key != KEY_META && !snapshot.values.contains_key(&key) {
            store.delete(&key).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(written: &[(&str, &str)], values: &[(&str, &str)], puts: &[&str], deletes: &[&str]) {
        let written: HashMap<String, u64> = written
            .iter()
            .map(|(k, v)| (k.to_string(), digest(v.as_bytes())))
            .collect();
        let values: BTreeMap<String, Vec<u8>> = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        let (p, mut d) = changes(&written, &values);
        let p: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        d.sort();
        assert_eq!(
            (p.as_slice(), d.as_slice()),
            (
                puts,
                &deletes.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]
            )
        );
    }

    #[test]
    fn only_changed_keys_are_written() {
        check(&[], &[("a", "1"), ("b", "2")], &["a", "b"], &[]);
        check(
            &[("a", "1"), ("b", "2")],
            &[("a", "1"), ("b", "3")],
            &["b"],
            &[],
        );
        check(&[("a", "1"), ("b", "2")], &[("a", "1")], &[], &["b"]);
        check(&[("a", "1")], &[("a", "1")], &[], &[]);
    }
}
