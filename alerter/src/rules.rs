//! The alert rules as pure functions: whether a rollup is firing, clear or in the hysteresis band
//! ([`rate_condition`]), and what to do given the condition and the shared record of the rule and subject
//! ([`decide`]): fire, resolve, take over a delivery whose owner vanished, or nothing. The I/O (claiming
//! in KV, mailing) happens in the caller, only for the transitions decided here.

use schema::alert::{AlertRecord, Delivery, Kind};
use schema::stats::{GroupStats, NewSignature};
use time::OffsetDateTime;

/// Thresholds of the rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Fire at a failure rate at or above this (0..1).
    pub failure_rate: f64,
    /// ... with at least this many decided (success + failed) installs in the window.
    pub min_installs: u64,
    /// Resolve below `failure_rate - hysteresis`.
    pub hysteresis: f64,
    /// A new signature fires with at least this many installs.
    pub signature_min_installs: u64,
    /// An app's rate fires only with at least this many distinct clients in the window.
    pub min_clients: u32,
}

/// What a rollup says about a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Firing,
    Clear,
    /// Between the resolve and the fire threshold, or too few installs to tell: keep the state.
    Hold,
}

/// Rates are ratios of small integers: keep 0.2 - 0.05 from landing a hair above 0.15.
const RATE_EPSILON: f64 = 1e-9;

/// The failure-rate rule on one group (`None`: the group has no installs in the window).
pub fn rate_condition(stats: Option<&GroupStats>, t: &Thresholds) -> Condition {
    let Some(stats) = stats else {
        return Condition::Clear;
    };
    let decided = stats.success + stats.failed;
    let rate = stats.failure_rate.unwrap_or(0.0);
    if decided >= t.min_installs && rate >= t.failure_rate {
        Condition::Firing
    } else if decided == 0 || rate < t.failure_rate - t.hysteresis - RATE_EPSILON {
        Condition::Clear
    } else {
        Condition::Hold
    }
}

/// The failure-rate rule on one app: the rate rule, but an app started by fewer than `min_clients`
/// distinct clients (or by an aggregator that does not count them) never fires; its state is kept.
pub fn app_condition(stats: &GroupStats, t: &Thresholds) -> Condition {
    match rate_condition(Some(stats), t) {
        Condition::Firing if stats.clients.unwrap_or(0) < t.min_clients => Condition::Hold,
        condition => condition,
    }
}

/// The new-signature rule on one entry of `signatures.new`. It never resolves: once announced, a
/// signature is not new again until it has left the aggregator's history.
pub fn signature_condition(signature: &NewSignature, t: &Thresholds) -> Condition {
    if signature.installs >= t.signature_min_installs {
        Condition::Firing
    } else {
        Condition::Hold
    }
}

/// What to do for one rule and subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Claim and announce a new alert.
    Fire,
    /// Claim and announce the resolution of the current alert.
    Resolve,
    /// The owner of a pending delivery let its lease lapse: claim it and deliver the same mail.
    TakeOver,
}

/// The transition for `condition` given the shared record (`None`: never alerted).
pub fn decide(condition: Condition, record: Option<&AlertRecord>, now: OffsetDateTime) -> Action {
    let Some(r) = record else {
        return match condition {
            Condition::Firing => Action::Fire,
            Condition::Clear | Condition::Hold => Action::Nothing,
        };
    };
    if r.delivery == Delivery::Pending {
        return if r.lease_until < now {
            Action::TakeOver
        } else {
            Action::Nothing
        };
    }
    match (r.state, condition) {
        (Kind::Alert, Condition::Clear) => Action::Resolve,
        (Kind::Resolved, Condition::Firing) if now >= r.cooldown_until => Action::Fire,
        _ => Action::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::alert::{AlertEvent, Rule, Scope};
    use schema::stats::Scope as StatsScope;

    const T: Thresholds = Thresholds {
        failure_rate: 0.2,
        min_installs: 10,
        hysteresis: 0.05,
        signature_min_installs: 5,
        min_clients: 5,
    };

    fn stats(success: u64, failed: u64) -> GroupStats {
        let decided = success + failed;
        GroupStats {
            v: 1,
            window: "24h".into(),
            window_secs: 86_400,
            scope: StatsScope::App,
            subject: "docker".into(),
            started: decided,
            in_progress: 0,
            success,
            failed,
            aborted: 0,
            unknown: 0,
            failure_rate: (decided > 0).then(|| failed as f64 / decided as f64),
            duration_p50_secs: None,
            duration_p95_secs: None,
            top_exit_codes: vec![],
            top_categories: vec![],
            top_signatures: vec![],
            clients: Some(decided as u32),
        }
    }

    fn check_condition(success: Option<(u64, u64)>, expected: Condition) {
        let s = success.map(|(ok, failed)| stats(ok, failed));
        assert_eq!(rate_condition(s.as_ref(), &T), expected, "{success:?}");
    }

    #[test]
    fn rate_conditions_have_a_minimum_and_hysteresis() {
        check_condition(Some((20, 20)), Condition::Firing);
        check_condition(Some((8, 2)), Condition::Firing);
        check_condition(Some((4, 1)), Condition::Hold);
        check_condition(Some((5, 4)), Condition::Hold);
        check_condition(Some((82, 18)), Condition::Hold);
        check_condition(Some((85, 15)), Condition::Hold);
        check_condition(Some((86, 14)), Condition::Clear);
        check_condition(Some((10, 0)), Condition::Clear);
        check_condition(Some((0, 0)), Condition::Clear);
        check_condition(None, Condition::Clear);
    }

    #[test]
    fn an_app_fires_only_with_enough_clients() {
        let check = |clients: Option<u32>, expected: Condition| {
            let s = GroupStats {
                clients,
                ..stats(0, 20)
            };
            assert_eq!(app_condition(&s, &T), expected, "{clients:?}");
        };
        check(Some(20), Condition::Firing);
        check(Some(5), Condition::Firing);
        check(Some(4), Condition::Hold);
        check(Some(1), Condition::Hold);
        check(None, Condition::Hold);
        let s = GroupStats {
            clients: Some(1),
            ..stats(20, 0)
        };
        assert_eq!(app_condition(&s, &T), Condition::Clear);
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).expect("time")
    }

    /// (state, delivery, lease_until, cooldown_until) in seconds after the test epoch.
    fn record(state: Kind, delivery: Delivery, lease: i64, cooldown: i64) -> AlertRecord {
        AlertRecord {
            v: 1,
            state,
            delivery,
            owner: "a".into(),
            lease_until: at(lease),
            cooldown_until: at(cooldown),
            attempts: 0,
            recorded: true,
            event: AlertEvent {
                v: 1,
                alert_id: uuid::Uuid::nil(),
                kind: state,
                rule: Rule::FailureRate,
                scope: Scope::App,
                subject: "docker".into(),
                at: at(0),
                window: "24h".into(),
                threshold: Some(0.2),
                failure_rate: Some(0.5),
                started: 40,
                success: 20,
                failed: 20,
                aborted: 0,
                unknown: 0,
                apps: vec![],
                top_exit_codes: vec![],
                top_signatures: vec![],
                dashboard_url: String::new(),
            },
        }
    }

    fn check(condition: Condition, r: Option<AlertRecord>, now: i64, expected: Action) {
        assert_eq!(
            decide(condition, r.as_ref(), at(now)),
            expected,
            "{condition:?} {r:?} at {now}"
        );
    }

    #[test]
    fn transitions_follow_the_record() {
        use Condition::*;
        use Delivery::*;
        use Kind::*;
        check(Firing, None, 0, Action::Fire);
        check(Hold, None, 0, Action::Nothing);
        check(Clear, None, 0, Action::Nothing);
        // Already firing and delivered: nothing until it clears.
        check(
            Firing,
            Some(record(Alert, Sent, 0, 3600)),
            10,
            Action::Nothing,
        );
        check(
            Hold,
            Some(record(Alert, Sent, 0, 3600)),
            10,
            Action::Nothing,
        );
        check(
            Clear,
            Some(record(Alert, Sent, 0, 3600)),
            10,
            Action::Resolve,
        );
        // Resolved: a new alert only after the cooldown.
        check(
            Firing,
            Some(record(Resolved, Sent, 0, 3600)),
            10,
            Action::Nothing,
        );
        check(
            Firing,
            Some(record(Resolved, Sent, 0, 3600)),
            3600,
            Action::Fire,
        );
        check(
            Clear,
            Some(record(Resolved, Sent, 0, 3600)),
            7200,
            Action::Nothing,
        );
        // A pending delivery belongs to its owner until the lease lapses, whatever the condition.
        check(
            Firing,
            Some(record(Alert, Pending, 60, 3600)),
            10,
            Action::Nothing,
        );
        check(
            Clear,
            Some(record(Alert, Pending, 60, 3600)),
            10,
            Action::Nothing,
        );
        check(
            Clear,
            Some(record(Alert, Pending, 60, 3600)),
            61,
            Action::TakeOver,
        );
        check(
            Hold,
            Some(record(Resolved, Pending, 60, 3600)),
            61,
            Action::TakeOver,
        );
    }

    #[test]
    fn a_signature_fires_with_enough_installs() {
        let sig = |installs| NewSignature {
            signature: "E: x".into(),
            installs,
            first_seen: at(0),
            apps: vec![],
        };
        assert_eq!(signature_condition(&sig(5), &T), Condition::Firing);
        assert_eq!(signature_condition(&sig(4), &T), Condition::Hold);
    }
}
