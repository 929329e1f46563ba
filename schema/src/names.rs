//! Every name that crosses a process boundary (streams, subjects, KV buckets, headers), the stream
//! settings of contract §5 and the KV bucket settings, defined once so that every service agrees on them.
//! The key layout and values of the buckets are in [`crate::stats`] and [`crate::alert`].

use std::time::Duration;

use crate::event::{Kind, Status};

/// The stream every accepted event is published to.
pub const EVENTS_STREAM: &str = "TELEMETRY_EVENTS";
/// Subject prefix of accepted events; the full subject is `telemetry.v1.events.<type>.<status>`.
pub const EVENTS_SUBJECT_PREFIX: &str = "telemetry.v1.events";
/// Wildcard that binds [`EVENTS_STREAM`] to every event subject.
pub const EVENTS_SUBJECTS: &str = "telemetry.v1.events.>";

/// The stream of alerts and resolutions (written by the alerter, read by the web).
pub const ALERTS_STREAM: &str = "TELEMETRY_ALERTS";
/// Wildcard of [`ALERTS_STREAM`].
pub const ALERTS_SUBJECTS: &str = "telemetry.v1.alerts.>";
/// Subject prefix of alerts.
pub const ALERTS_SUBJECT_PREFIX: &str = "telemetry.v1.alerts";

/// Dead letters: events a sink rejected as invalid, with the reason.
pub const DLQ_STREAM: &str = "TELEMETRY_DLQ";
/// Wildcard of [`DLQ_STREAM`].
pub const DLQ_SUBJECTS: &str = "telemetry.v1.dlq.>";
/// Subject prefix of dead letters.
pub const DLQ_SUBJECT_PREFIX: &str = "telemetry.v1.dlq";

/// The ClickHouse schema version of this release: the writer's last migration, and the version the web
/// waits for before it calls itself ready. A web started beside a writer that is still migrating a new
/// database would otherwise serve pages while a later version replaces the tables they read.
pub const CLICKHOUSE_SCHEMA_VERSION: u32 = 8;

/// KV bucket of live rollups (aggregator writes, web and alerter read).
pub const STATS_BUCKET: &str = "telemetry_stats";
/// KV bucket of alert claims and cooldowns.
pub const ALERTS_BUCKET: &str = "telemetry_alerts";
/// KV bucket of the PocketBase writer lease: one key per target, held by the active writer replica.
pub const WRITER_LEASE_BUCKET: &str = "telemetry_writer_lease";

/// Request–reply subject (core NATS, no stream) on which the web asks the alerter to send a test mail;
/// the reply is a [`crate::admin::Reply`] of [`crate::admin::AlertTest`].
pub const ADMIN_ALERTS_TEST_SUBJECT: &str = "telemetry.v1.admin.alerts.test";
/// Request–reply subject on which the web asks the aggregator to time out stuck installs now; the reply
/// is a [`crate::admin::Reply`] of [`crate::admin::CleanupRun`].
pub const ADMIN_CLEANUP_RUN_SUBJECT: &str = "telemetry.v1.admin.cleanup.run";
/// Request–reply subject on which the web asks the aggregator for its cleanup settings and the number of
/// stuck installs; the reply is a [`crate::admin::Reply`] of [`crate::admin::CleanupStatus`].
pub const ADMIN_CLEANUP_STATUS_SUBJECT: &str = "telemetry.v1.admin.cleanup.status";
/// Every admin request subject (what the web may publish and the aggregator and alerter answer).
pub const ADMIN_SUBJECTS: &str = "telemetry.v1.admin.>";
/// Queue group of the alerter replicas on [`ADMIN_ALERTS_TEST_SUBJECT`]: one replica answers (one mail).
pub const ADMIN_ALERTER_QUEUE: &str = "telemetry-alerter-admin";
/// Queue group of the aggregator replicas on the cleanup subjects: one replica answers.
pub const ADMIN_AGGREGATOR_QUEUE: &str = "telemetry-aggregator-admin";

/// JetStream's de-duplication header.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The subject an event of this type and status is published on.
pub fn event_subject(kind: Kind, status: Status) -> String {
    format!(
        "{EVENTS_SUBJECT_PREFIX}.{}.{}",
        kind.as_str(),
        status.as_str()
    )
}

/// The de-duplication id of a script's event: `<execution_id>:<status>`, and `:<random_id>` after it when
/// the sender's `random_id` is not the `execution_id` itself. A script's retries of one event carry the same
/// three and collapse to one, as before; an event someone else sends for the same install under another
/// `random_id` (a forged final, contract §3's first-final-wins) gets an id of its own, so it can never
/// make the stream drop the script's own event as a duplicate. (The contract's id is `<execution_id>:
/// <status>`; the ids of the scripts whose `random_id` is their execution id are unchanged.)
pub fn msg_id(execution_id: &str, sent_status: Status, random_id: &str) -> String {
    if random_id.is_empty() || random_id == execution_id {
        format!("{execution_id}:{}", sent_status.as_str())
    } else {
        format!("{execution_id}:{}:{random_id}", sent_status.as_str())
    }
}

/// The de-duplication id of the synthetic timeout of a stuck install (`<execution_id>:timeout`): every
/// aggregator replica that times the install out publishes under this id, so the stream keeps one.
pub fn stuck_msg_id(execution_id: &str) -> String {
    format!("{execution_id}:timeout")
}

/// Settings of a stream, independent of the client library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    pub name: &'static str,
    pub subjects: &'static str,
    /// Messages older than this are dropped (the replay window).
    pub max_age: Duration,
    /// Byte cap of the stream; what happens when it is reached is [`StreamSettings::discard`].
    pub max_bytes: i64,
    /// What the stream does when its byte cap is reached.
    pub discard: Discard,
    /// Window in which a repeated `Nats-Msg-Id` is answered as a duplicate.
    pub duplicate_window: Duration,
    /// Copies kept in a JetStream cluster.
    pub replicas: usize,
}

/// What a stream does at its byte cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// Drops its oldest messages to make room: unread messages can go.
    Old,
    /// Refuses new messages until age (or a purge) frees room: nothing stored is lost, publishers are
    /// told to come back.
    New,
}

/// Default replay window of the event stream.
pub const DEFAULT_EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default byte cap of the event stream (10 GiB). The stream keeps events by age (limits retention,
/// [`DEFAULT_EVENTS_MAX_AGE`]) and refuses new ones at this cap ([`Discard::New`]), so the cap must hold
/// a whole replay window of traffic: 10 GiB is about ten million stored events of 1 KiB, some 17 events
/// a second for seven days on average.
pub const DEFAULT_EVENTS_MAX_BYTES: i64 = 10 * 1024 * 1024 * 1024;
/// The duplicate window of contract §5.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The event stream with the given replay window, byte cap and replica count. At its cap it refuses new
/// events ([`Discard::New`]) rather than drop acknowledged ones no consumer has read yet: the edge answers
/// 503 and the scripts retry, until age frees room.
pub fn events_stream(max_age: Duration, max_bytes: i64, replicas: usize) -> StreamSettings {
    StreamSettings {
        name: EVENTS_STREAM,
        subjects: EVENTS_SUBJECTS,
        max_age,
        max_bytes,
        discard: Discard::New,
        duplicate_window: DUPLICATE_WINDOW,
        replicas,
    }
}

/// The alert stream (kept a year; alerts are rare).
pub fn alerts_stream(replicas: usize) -> StreamSettings {
    StreamSettings {
        name: ALERTS_STREAM,
        subjects: ALERTS_SUBJECTS,
        max_age: Duration::from_secs(365 * 24 * 3600),
        max_bytes: 256 * 1024 * 1024,
        discard: Discard::Old,
        duplicate_window: DUPLICATE_WINDOW,
        replicas,
    }
}

/// The dead-letter stream (kept as long as the event stream).
pub fn dlq_stream(replicas: usize) -> StreamSettings {
    StreamSettings {
        name: DLQ_STREAM,
        subjects: DLQ_SUBJECTS,
        max_age: DEFAULT_EVENTS_MAX_AGE,
        max_bytes: 1024 * 1024 * 1024,
        discard: Discard::Old,
        duplicate_window: DUPLICATE_WINDOW,
        replicas,
    }
}

/// Settings of a KV bucket, independent of the client library. Every service that may be the first to
/// open a bucket creates it with these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSettings {
    pub name: &'static str,
    pub description: &'static str,
    /// Values kept per key (1: the latest only).
    pub history: i64,
    /// Entries older than this expire; zero keeps them until overwritten or deleted.
    pub max_age: Duration,
    /// Copies kept in a JetStream cluster.
    pub replicas: usize,
}

/// The live rollups (the aggregator writes, the web and the alerter read; whichever starts first creates
/// it).
pub fn stats_bucket(replicas: usize) -> BucketSettings {
    BucketSettings {
        name: STATS_BUCKET,
        description: "live rollups written by telemetry-aggregator",
        history: 1,
        max_age: Duration::ZERO,
        replicas,
    }
}

/// The alert records of the alerter.
pub fn alerts_bucket(replicas: usize) -> BucketSettings {
    BucketSettings {
        name: ALERTS_BUCKET,
        description: "alert claims, delivery state and cooldowns of telemetry-alerter",
        history: 1,
        max_age: Duration::ZERO,
        replicas,
    }
}

/// The PocketBase writer lease: entries live `ttl` unless renewed.
pub fn writer_lease_bucket(ttl: Duration, replicas: usize) -> BucketSettings {
    BucketSettings {
        name: WRITER_LEASE_BUCKET,
        description: "active replica of each PocketBase writer",
        history: 1,
        max_age: ttl,
        replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_fall_under_the_stream_wildcard() {
        let subject = event_subject(Kind::Lxc, Status::Failed);
        assert_eq!(subject, "telemetry.v1.events.lxc.failed");
        assert!(subject.starts_with(EVENTS_SUBJECTS.trim_end_matches('>')));
    }

    #[test]
    fn msg_id_is_execution_status_and_sender() {
        assert_eq!(
            msg_id("abc-1", Status::Installing, "abc-1"),
            "abc-1:installing"
        );
        assert_eq!(msg_id("abc-1", Status::Installing, ""), "abc-1:installing");
        assert_eq!(msg_id("abc-1", Status::Success, "r-9"), "abc-1:success:r-9");
        assert_ne!(
            msg_id("abc-1", Status::Success, "r-9"),
            msg_id("abc-1", Status::Success, "r-8")
        );
    }

    #[test]
    fn stuck_msg_id_differs_from_any_script_status() {
        let id = stuck_msg_id("abc-1");
        assert_eq!(id, "abc-1:timeout");
        assert!(Status::ALL
            .iter()
            .all(|s| msg_id("abc-1", *s, "abc-1") != id));
    }

    #[test]
    fn events_stream_has_the_contract_window() {
        let s = events_stream(DEFAULT_EVENTS_MAX_AGE, DEFAULT_EVENTS_MAX_BYTES, 1);
        assert_eq!(s.duplicate_window, Duration::from_secs(120));
        assert_eq!(s.max_age, Duration::from_secs(604_800));
        assert_eq!(s.name, "TELEMETRY_EVENTS");
        assert_eq!(
            s.discard,
            Discard::New,
            "acknowledged events are never evicted"
        );
    }

    #[test]
    fn buckets_keep_their_names_and_only_the_lease_expires() {
        let ttl = Duration::from_secs(15);
        let buckets = [
            stats_bucket(3),
            alerts_bucket(3),
            writer_lease_bucket(ttl, 3),
        ];
        let got: Vec<(&str, Duration, i64, usize)> = buckets
            .iter()
            .map(|b| (b.name, b.max_age, b.history, b.replicas))
            .collect();
        assert_eq!(
            got,
            vec![
                ("telemetry_stats", Duration::ZERO, 1, 3),
                ("telemetry_alerts", Duration::ZERO, 1, 3),
                ("telemetry_writer_lease", ttl, 1, 3),
            ]
        );
    }
}
