//! The synthetic final event of contract §6 for an install that never reported an end: `unknown` with
//! category `timeout`, marked `synthetic`, built from the merged state so that every store records it like
//! any other event. The aggregator publishes it with [`crate::names::stuck_msg_id`], so replicas that
//! decide at the same moment collapse to one event.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::category::Category;
use crate::event::{Event, Sealed, Status, SCHEMA_VERSION};
use crate::merge::InstallState;

/// The log line a timed-out install carries; also its error signature.
pub const STUCK_ERROR: &str = "no final status received before the stuck-install timeout";

impl Event {
    /// The synthetic `unknown`/`timeout` final event of an install that is not final. `event_id` should be
    /// a fresh UUIDv7 and `received_at` the time the timeout was decided.
    pub fn stuck_timeout(
        state: &InstallState,
        event_id: Uuid,
        received_at: OffsetDateTime,
    ) -> Event {
        let value = |s: &Option<crate::merge::Stamped<String>>| s.as_ref().map(|s| s.value.clone());
        Event {
            v: SCHEMA_VERSION,
            event_id,
            received_at,
            random_id: state.random_id.value.clone(),
            execution_id: state.execution_id.clone(),
            kind: state.kind.value,
            nsapp: state.nsapp.value.clone(),
            status: Status::Unknown,
            ct_type: state.ct_type.as_ref().map(|s| s.value),
            disk_size: state.disk_size.as_ref().map(|s| s.value),
            core_count: state.core_count.as_ref().map(|s| s.value),
            ram_size: state.ram_size.as_ref().map(|s| s.value),
            os_type: value(&state.os_type),
            os_version: value(&state.os_version),
            pve_version: value(&state.pve_version),
            method: value(&state.method),
            exit_code: None,
            error: Some(STUCK_ERROR.to_string()),
            error_category: Some(Category::Timeout),
            install_duration: None,
            cpu_vendor: state.cpu_vendor.as_ref().map(|s| s.value),
            cpu_model: value(&state.cpu_model),
            gpu_vendor: state.gpu_vendor.as_ref().map(|s| s.value),
            gpu_model: value(&state.gpu_model),
            gpu_passthrough: state.gpu_passthrough.as_ref().map(|s| s.value),
            ram_speed: value(&state.ram_speed),
            repo_source: state.repo_source.value,
            repo_slug: value(&state.repo_slug),
            has_arm: state.has_arm.as_ref().map(|s| s.value),
            arch: value(&state.arch),
            error_signature: Some(STUCK_ERROR.to_string()),
            synthetic: true,
            rescued: Vec::new(),
            sealed: Sealed::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::merge;
    use crate::validate::{validate, Reception};

    fn installing(body: &str) -> Event {
        validate(body.as_bytes(), Reception::now())
            .expect("valid installing event")
            .event
    }

    #[test]
    fn a_stuck_install_gets_a_synthetic_timeout_that_finalizes_it() {
        let first = installing(
            r#"{"random_id":"r-1","execution_id":"x-1","type":"lxc","nsapp":"docker","status":"installing","core_count":2,"repo_source":"ProxmoxVED"}"#,
        );
        let state = merge(None, &first);
        let at = first.received_at + time::Duration::hours(1);
        let event = Event::stuck_timeout(&state, Uuid::now_v7(), at);
        assert_eq!(event.status, Status::Unknown);
        assert_eq!(event.error_category, Some(Category::Timeout));
        assert!(event.synthetic);
        assert_eq!(event.execution_id, "x-1");
        assert_eq!(event.nsapp, "docker");
        assert_eq!(event.core_count, Some(2));
        assert_eq!(
            event.subject(),
            crate::names::event_subject(crate::Kind::Lxc, Status::Unknown)
        );
        let back: Event = serde_json::from_slice(&event.to_json()).expect("round trip");
        assert_eq!(back, event);
        let merged = merge(Some(state), &event);
        assert!(merged.is_final());
        assert_eq!(merged.status.value, Status::Unknown);
        assert_eq!(merged.nsapp.value, "docker");
    }
}
