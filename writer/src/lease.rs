//! The PocketBase writer lease: PocketBase is a single SQLite writer, so of several replicas of the
//! PocketBase sink only one writes. It holds a key in the NATS KV bucket `telemetry_writer_lease`, whose
//! entries expire after the lease TTL (the bucket's max age), and renews it every third of the TTL with a
//! compare-and-set on its revision. A standby tries to create the key on the same beat and wins once the
//! holder stopped renewing (died, or lost NATS) and the entry expired. A holder that fails to renew stops
//! writing at once.
//!
//! A holder that was frozen (or cut off from NATS) for longer than the TTL, e.g. while it retried a
//! write with PocketBase down, may find on waking that a standby took over. So every write request is
//! fenced ([`Fence::check`]): just before it, the lease key is read back and must still hold this
//! replica's holder id, at the revision it holds or a later renewal of its own; otherwise the write
//! is not sent and the batch is handed back (`SinkError::LeaseLost`). Two writers then overlap only if
//! one is frozen between that read and its request.

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
    /// The revision held, for the fences of this lease.
    held: watch::Sender<Option<u64>>,
}

/// Why a write may not go out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// The lease is not this replica's (any more): another writer took it, or it expired.
    #[error("lease {key} lost: {why}")]
    Lost { key: String, why: String },
    /// The lease could not be read back (NATS away): not knowing is not writing.
    #[error("lease {key} unreadable: {why}")]
    Unreadable { key: String, why: String },
}

/// The check a write makes just before it goes out: is the lease still this replica's?
#[derive(Clone)]
pub struct Fence {
    kv: kv::Store,
    key: String,
    holder: Bytes,
    held: watch::Receiver<Option<u64>>,
}

impl Fence {
    /// Ok while the lease key holds this replica's holder id at the revision held, or at a later
    /// revision written by this replica (a renewal that raced with the check).
    pub async fn check(&self) -> Result<(), FenceError> {
        let lost = |why: &str| FenceError::Lost {
            key: self.key.clone(),
            why: why.to_string(),
        };
        let Some(held) = *self.held.borrow() else {
            return Err(lost("not held"));
        };
        let entry = self
            .kv
            .entry(&self.key)
            .await
            .map_err(|e| FenceError::Unreadable {
                key: self.key.clone(),
                why: e.to_string(),
            })?;
        let Some(entry) = entry else {
            return Err(lost("expired"));
        };
        if entry.operation != kv::Operation::Put || entry.value != self.holder {
            return Err(lost("another writer holds it"));
        }
        if entry.revision < held {
            return Err(lost("older revision"));
        }
        Ok(())
    }
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
            held: watch::channel(None).0,
        })
    }

    /// A fence for the writes made under this lease.
    pub fn fence(&self) -> Fence {
        Fence {
            kv: self.kv.clone(),
            key: self.key.clone(),
            holder: self.holder.clone(),
            held: self.held.subscribe(),
        }
    }

    fn set_revision(&mut self, revision: Option<u64>) {
        self.revision = revision;
        self.held.send_replace(revision);
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
                    self.set_revision(Some(next));
                    return true;
                }
                Err(e) => {
                    tracing::debug!(key = %self.key, error = %e, "lease renewal failed");
                    self.set_revision(None);
                }
            }
        }
        match self.kv.create(&self.key, self.holder.clone()).await {
            Ok(revision) => {
                self.set_revision(Some(revision));
                true
            }
            Err(_) => false,
        }
    }

    /// Gives the lease up (at shutdown), so a standby takes over without waiting for the TTL.
    pub async fn release(&mut self) {
        if let Some(revision) = self.revision {
            self.set_revision(None);
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
