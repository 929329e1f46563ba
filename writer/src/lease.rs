//! The PocketBase writer lease: PocketBase is a single SQLite writer, so of several replicas of the
//! PocketBase sink only one writes. It holds a key in the NATS KV bucket `telemetry_writer_lease`, whose
//! entries expire after the lease TTL (the bucket's max age), and renews it every third of the TTL with a
//! compare-and-set on its revision. A standby tries to create the key on the same beat and wins once the
//! holder stopped renewing (died, or lost NATS) and the entry expired. A holder that fails to renew stops
//! writing at once, so two writers overlap only if one is frozen for longer than the TTL between its
//! last check and its write.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use fleet::Shutdown;
use schema::names;
use tokio::sync::watch;

use crate::consumer::SinkStatus;
use crate::metrics as m;

/// One replica's claim on a lease key.
pub struct Lease {
    kv: kv::Store,
    key: String,
    holder: Bytes,
    revision: Option<u64>,
}

impl Lease {
    /// Opens (or creates, with `replicas` copies) the lease bucket with entries that live `ttl`.
    pub async fn open(
        js: &jetstream::Context,
        key: &str,
        holder: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Result<Lease, async_nats::Error> {
        let settings = names::writer_lease_bucket(ttl, replicas);
        let kv = match js.get_key_value(settings.name).await {
            Ok(kv) => kv,
            Err(_) => {
                js.create_key_value(fleet::nats::bucket_config(&settings))
                    .await?
            }
        };
        Ok(Lease {
            kv,
            key: key.to_string(),
            holder: Bytes::copy_from_slice(holder.as_bytes()),
            revision: None,
        })
    }

    /// Renews the lease if held, else tries to take it. True while this replica holds it.
    pub async fn try_hold(&mut self) -> bool {
        if let Some(revision) = self.revision {
            match self
                .kv
                .update(&self.key, self.holder.clone(), revision)
                .await
            {
                Ok(next) => {
                    self.revision = Some(next);
                    return true;
                }
                Err(e) => {
                    tracing::debug!(key = %self.key, error = %e, "lease renewal failed");
                    self.revision = None;
                }
            }
        }
        match self.kv.create(&self.key, self.holder.clone()).await {
            Ok(revision) => {
                self.revision = Some(revision);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives the lease up (at shutdown), so a standby takes over without waiting for the TTL.
    pub async fn release(&mut self) {
        if let Some(revision) = self.revision.take() {
            if let Err(e) = self
                .kv
                .delete_expect_revision(&self.key, Some(revision))
                .await
            {
                tracing::debug!(key = %self.key, error = %e, "lease release failed; it expires by itself");
            }
        }
    }
}

/// Holds or waits for the lease, publishing "may write" on `active`, until `done` is triggered (the
/// consumer stopped after its last batch, so renewal covers that batch). Returns the lease for release.
pub async fn keep(
    mut lease: Lease,
    ttl: Duration,
    active: watch::Sender<bool>,
    status: Arc<SinkStatus>,
    done: Shutdown,
) -> Lease {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            () = done.triggered() => break,
        }
        let held = lease.try_hold().await;
        let was = active.send_replace(held);
        status.active.store(held, Ordering::Relaxed);
        ::metrics::gauge!(m::LEADER, "sink" => "pocketbase").set(if held { 1.0 } else { 0.0 });
        if held != was {
            if held {
                tracing::info!(key = %lease.key, "lease taken, this replica writes to pocketbase");
            } else {
                tracing::warn!(key = %lease.key, "lease lost, standing by");
            }
        }
    }
    active.send_replace(false);
    status.active.store(false, Ordering::Relaxed);
    lease
}
