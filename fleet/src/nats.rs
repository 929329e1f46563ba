//! The NATS side every service shares: a client that connects (and reconnects) by itself, as the
//! service's own NATS user and over TLS when configured ([`Auth`]), its flush at shutdown, and the stream
//! and KV bucket configurations of the contract in async-nats' terms.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use schema::names::{BucketSettings, Discard, StreamSettings};

/// The async-nats stream configuration for a stream of the contract.
pub fn stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: settings.name.to_string(),
        subjects: vec![settings.subjects.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: match settings.discard {
            Discard::Old => stream::DiscardPolicy::Old,
            Discard::New => stream::DiscardPolicy::New,
        },
        max_age: settings.max_age,
        max_bytes: settings.max_bytes,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// The async-nats KV bucket configuration for a bucket of the contract.
pub fn bucket_config(settings: &BucketSettings) -> kv::Config {
    kv::Config {
        bucket: settings.name.to_string(),
        description: settings.description.to_string(),
        history: settings.history,
        max_age: settings.max_age,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// How a service logs in to NATS and checks the servers (`fleet::config::Common::nats_auth`). The
/// default is no login and TLS only when a `tls://` URL asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// User and password (`NATS_USER`, `NATS_PASSWORD`).
    pub user: Option<(String, crate::Secret)>,
    /// A credentials file with the user's JWT and NKey seed (`NATS_CREDS`).
    pub creds: Option<PathBuf>,
    /// The CA that signed the servers' certificates (`NATS_TLS_CA`); set, TLS is required.
    pub tls_ca: Option<PathBuf>,
}

/// Connects to NATS at `url` without a login ([`connect_with`] and the default [`Auth`]).
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    connect_with(url, &Auth::default(), name).await
}

/// Connects to NATS at `url`, one server or a comma-separated list of a cluster's servers, logging in
/// as `auth` says. Returns at once even when the servers are down: the client keeps retrying, forever.
pub async fn connect_with(
    url: &str,
    auth: &Auth,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    let servers = url
        .split(',')
        .map(|server| server.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, password)) = &auth.user {
        // Replies come on the user's own inbox prefix: deploy/nats/users.conf lets each user subscribe
        // to `_INBOX_<user>.>` only, so no service reads another's replies.
        options = options
            .user_and_password(user.clone(), password.expose().to_string())
            .custom_inbox_prefix(inbox_prefix(user));
    }
    if let Some(path) = &auth.creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| anyhow::anyhow!("NATS_CREDS {}: {e}", path.display()))?;
    }
    if let Some(ca) = &auth.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = options
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("broker connected"),
                async_nats::Event::Disconnected => tracing::warn!("broker disconnected"),
                other => tracing::debug!(event = %other, "broker event"),
            }
        })
        .connect(servers)
        .await?;
    Ok(client)
}

/// The inbox prefix of NATS user `user`: `_INBOX_<user>`.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// True while the client holds a live connection.
pub fn connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// How long a service waits at shutdown for the client to hand over what it still buffers.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Flushes what the client still buffers (acks, publishes) at shutdown, waiting at most `deadline`: the
/// broker may be gone, and a flush that cannot finish must not hold the exit. Warns when it did not finish.
pub async fn flush(client: &async_nats::Client, deadline: Duration) {
    match tokio::time::timeout(deadline, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "broker flush failed at shutdown"),
        Err(_) => tracing::warn!(?deadline, "broker flush timed out at shutdown"),
    }
}

/// Creates the stream, or brings an existing one to the given settings (byte cap, age, discard policy
/// and the rest of [`stream_config`]: an update, so a stream made with older settings follows).
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<stream::Stream, async_nats::Error> {
    js.create_or_update_stream(stream_config(settings)).await?;
    Ok(js.get_stream(settings.name).await?)
}

/// Waits until the client is connected, polling.
pub async fn wait_connected(client: &async_nats::Client) {
    while !connected(client) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens a KV bucket, creating it when missing; retries with capped backoff while the broker is away.
pub async fn ensure_bucket(js: &jetstream::Context, settings: &BucketSettings) -> kv::Store {
    let config = bucket_config(settings);
    crate::retry::forever("kv bucket", || async {
        match js.get_key_value(settings.name).await {
            Ok(store) => Ok(store),
            Err(_) => js
                .create_key_value(config.clone())
                .await
                .map_err(async_nats::Error::from),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::names;

    fn check(settings: BucketSettings, expected: (&str, i64, Duration, usize)) {
        let c = bucket_config(&settings);
        assert_eq!(
            (c.bucket.as_str(), c.history, c.max_age, c.num_replicas),
            expected
        );
        assert_eq!(c.description, settings.description);
        assert_eq!(c.storage, stream::StorageType::File);
    }

    #[test]
    fn the_event_stream_refuses_new_events_when_full_and_the_others_drop_old_ones() {
        let events = names::events_stream(Duration::from_secs(60), 1 << 20, 1);
        let got: Vec<(String, stream::DiscardPolicy)> = [
            events.clone(),
            names::dlq_stream(1),
            names::alerts_stream(1),
        ]
        .iter()
        .map(|s| {
            let c = stream_config(s);
            (c.name, c.discard)
        })
        .collect();
        assert_eq!(
            got,
            [
                (names::EVENTS_STREAM.to_string(), stream::DiscardPolicy::New),
                (names::DLQ_STREAM.to_string(), stream::DiscardPolicy::Old),
                (names::ALERTS_STREAM.to_string(), stream::DiscardPolicy::Old),
            ]
        );
        assert_eq!(
            stream_config(&events).retention,
            stream::RetentionPolicy::Limits
        );
    }

    #[test]
    fn buckets_map_to_kv_configs() {
        let ttl = Duration::from_secs(15);
        check(
            names::stats_bucket(1),
            (names::STATS_BUCKET, 1, Duration::ZERO, 1),
        );
        check(
            names::alerts_bucket(3),
            (names::ALERTS_BUCKET, 1, Duration::ZERO, 3),
        );
        check(
            names::writer_lease_bucket(ttl, 1),
            (names::WRITER_LEASE_BUCKET, 1, ttl, 1),
        );
    }
}
