//! The install-state merge of contract §6 as a pure function, shared by every writer and the aggregator.
//!
//! Every rule is "keep the best candidate" under a total order that depends only on the events, never on
//! arrival: a field keeps the value of the earliest event (by time-ordered `event_id`) that carries it,
//! with `unknown` hardware values losing to known ones; the status keeps the highest rank, a real final
//! beats `unknown`, and among equals the earliest wins. So `merge` is commutative, associative and
//! idempotent: any order, any number of redeliveries, any number of replicas give the same state.
//!
//! The outcome fields (`exit_code`, `error`, `error_category`, `install_duration`) come from the final
//! event that decided the status, not from an earlier final that lost (an `unknown` beaten by a later
//! `success` must not leave its exit code behind). Newer scripts send `install_duration` with every event
//! (about 0 at installing), so the first value would be wrong: a final without one falls back to the
//! largest value any event carried ([`InstallState::longest_duration`], kept with the same "best
//! candidate" rule: largest value, then earliest event).
//!
//! Forged outcomes: anyone who learns an `execution_id` could post a final for it. The install belongs to
//! the `random_id` of its earliest event (by time-ordered `event_id`, which the edge assigns at
//! reception); an event with another `random_id` never changes what the install shows ([`forged`]). So
//! that the rule stays order-independent (the owner's first event may arrive after a forged one, e.g.
//! redelivered), the events of other `random_id`s are merged apart, one state per `random_id`, in
//! [`InstallState::others`]; an event earlier than the owner's first hands the install to its
//! `random_id`. At most [`MAX_OTHERS`] of them are kept (the earliest), so a flood of forged ids costs a
//! bounded size.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::category::Category;
use crate::event::{CpuVendor, Event, GpuPassthrough, GpuVendor, Kind, RepoSource, Status};

/// A value and the event it came from. `weak` values (hardware `unknown`) lose to any known value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<T> {
    pub value: T,
    pub from: Uuid,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub weak: bool,
}

impl<T: Clone> Stamped<T> {
    fn key(&self) -> (bool, Uuid) {
        (self.weak, self.from)
    }
}

/// Keeps the candidate with the smallest (weak, event id).
fn fill<T: Clone>(slot: &mut Option<Stamped<T>>, value: Option<&T>, from: Uuid, weak: bool) {
    let Some(value) = value else { return };
    let candidate = Stamped {
        value: value.clone(),
        from,
        weak,
    };
    if slot.as_ref().is_none_or(|cur| candidate.key() < cur.key()) {
        *slot = Some(candidate);
    }
}

/// How an install ended, taken whole from the final event that decided the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    pub from: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub exit_code: Option<u8>,
    pub error: Option<String>,
    pub error_category: Option<Category>,
    /// The deciding final's own `install_duration` (absent in states stored before it was kept here).
    #[serde(default)]
    pub install_duration: Option<u32>,
}

/// One install (`execution_id`) after merging any set of its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallState {
    pub execution_id: String,
    pub random_id: Stamped<String>,
    pub kind: Stamped<Kind>,
    pub nsapp: Stamped<String>,
    pub repo_source: Stamped<RepoSource>,
    /// The best status seen so far and the event that carried it.
    pub status: Stamped<Status>,
    /// Set once a final event arrived.
    pub outcome: Option<Outcome>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub ct_type: Option<Stamped<u8>>,
    pub disk_size: Option<Stamped<u32>>,
    pub core_count: Option<Stamped<u16>>,
    pub ram_size: Option<Stamped<u32>>,
    pub os_type: Option<Stamped<String>>,
    pub os_version: Option<Stamped<String>>,
    pub pve_version: Option<Stamped<String>>,
    pub method: Option<Stamped<String>>,
    /// The largest `install_duration` any event carried (ties: the earliest event). States stored before
    /// this rule kept the first value under the name `install_duration`; it is read as a candidate.
    #[serde(alias = "install_duration")]
    pub longest_duration: Option<Stamped<u32>>,
    pub cpu_vendor: Option<Stamped<CpuVendor>>,
    pub cpu_model: Option<Stamped<String>>,
    pub gpu_vendor: Option<Stamped<GpuVendor>>,
    pub gpu_model: Option<Stamped<String>>,
    pub gpu_passthrough: Option<Stamped<GpuPassthrough>>,
    pub ram_speed: Option<Stamped<String>>,
    #[serde(default)]
    pub repo_slug: Option<Stamped<String>>,
    #[serde(default)]
    pub has_arm: Option<Stamped<bool>>,
    #[serde(default)]
    pub arch: Option<Stamped<String>>,
    /// The merged events of other `random_id`s than the owner's (forged, or the owner's to be when its
    /// first event arrives late), earliest first; never shown. At most [`MAX_OTHERS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<InstallState>,
}

/// Most states of other `random_id`s an install keeps beside the owner's.
pub const MAX_OTHERS: usize = 3;

/// True when `event` does not belong to the install `state`: its `random_id` is not the one of the
/// install's earliest event, and it is not earlier than that event (an earlier one takes the install
/// over). Such an event does not change what the install shows; stores count it as forged.
pub fn forged(state: &InstallState, event: &Event) -> bool {
    event.random_id != state.random_id.value
        && event.event_id > state.random_id.from
        && state.random_id.from != Uuid::max()
}

/// Orders statuses for the merge: installing < validation < configuring < unknown < real final.
pub fn status_score(status: Status) -> u8 {
    match status {
        Status::Installing => 0,
        Status::Validation => 1,
        Status::Configuring => 2,
        Status::Unknown => 3,
        Status::Success | Status::Failed | Status::Aborted => 4,
    }
}

/// True when `(a, a_id)` beats `(b, b_id)`: higher score, or the same score and earlier.
fn status_beats(a: Status, a_id: Uuid, b: Status, b_id: Uuid) -> bool {
    (status_score(a), std::cmp::Reverse(a_id)) > (status_score(b), std::cmp::Reverse(b_id))
}

/// Merges one event into an install's state (creating it for the first event).
pub fn merge(state: Option<InstallState>, event: &Event) -> InstallState {
    match state {
        None => InstallState::from_event(event),
        Some(mut state) => {
            state.apply(event);
            state
        }
    }
}

impl InstallState {
    fn from_event(e: &Event) -> InstallState {
        let stamp = |value| Stamped {
            value,
            from: e.event_id,
            weak: false,
        };
        let mut state = InstallState {
            execution_id: e.execution_id.clone(),
            random_id: stamp(e.random_id.clone()),
            kind: Stamped {
                value: e.kind,
                from: e.event_id,
                weak: false,
            },
            nsapp: stamp(e.nsapp.clone()),
            repo_source: Stamped {
                value: e.repo_source,
                from: e.event_id,
                weak: false,
            },
            status: Stamped {
                value: e.status,
                from: e.event_id,
                weak: false,
            },
            outcome: None,
            first_seen: e.received_at,
            last_seen: e.received_at,
            ct_type: None,
            disk_size: None,
            core_count: None,
            ram_size: None,
            os_type: None,
            os_version: None,
            pve_version: None,
            method: None,
            longest_duration: None,
            cpu_vendor: None,
            cpu_model: None,
            gpu_vendor: None,
            gpu_model: None,
            gpu_passthrough: None,
            ram_speed: None,
            repo_slug: None,
            has_arm: None,
            arch: None,
            others: Vec::new(),
        };
        state.apply_fields(e);
        state
    }

    /// Applies one more event of the same install: to the owner's state when its `random_id` is the
    /// owner's, else to the state of its `random_id` among [`InstallState::others`]; an event earlier
    /// than the owner's first event makes its `random_id` the owner.
    pub fn apply(&mut self, e: &Event) {
        // A state rebuilt from a record that had no random_id knows no owner yet: the event names it.
        if e.random_id == self.random_id.value || self.random_id.from == Uuid::max() {
            self.apply_own(e);
            return;
        }
        let mut others = std::mem::take(&mut self.others);
        let found = others.iter().position(|o| o.random_id.value == e.random_id);
        let mut claimant = match found {
            Some(i) => {
                let mut other = others.remove(i);
                other.apply_own(e);
                other
            }
            None => InstallState::from_event(e),
        };
        if claimant.random_id.from < self.random_id.from {
            std::mem::swap(self, &mut claimant);
        }
        others.push(claimant);
        others.sort_by_key(|o| o.random_id.from);
        others.truncate(MAX_OTHERS);
        self.others = others;
    }

    /// Applies an event of the owner's `random_id`.
    fn apply_own(&mut self, e: &Event) {
        let id = e.event_id;
        fill_required(&mut self.random_id, &e.random_id, id);
        fill_required(&mut self.kind, &e.kind, id);
        fill_required(&mut self.nsapp, &e.nsapp, id);
        fill_required(&mut self.repo_source, &e.repo_source, id);
        if status_beats(e.status, id, self.status.value, self.status.from) {
            self.status = Stamped {
                value: e.status,
                from: id,
                weak: false,
            };
        }
        self.first_seen = self.first_seen.min(e.received_at);
        self.last_seen = self.last_seen.max(e.received_at);
        self.apply_fields(e);
    }

    fn apply_fields(&mut self, e: &Event) {
        let id = e.event_id;
        if e.status.is_final()
            && self
                .outcome
                .as_ref()
                .is_none_or(|o| status_beats(e.status, id, o.status, o.from))
        {
            self.outcome = Some(Outcome {
                status: e.status,
                from: id,
                at: e.received_at,
                exit_code: e.exit_code,
                error: e.error.clone(),
                error_category: e.error_category,
                install_duration: e.install_duration,
            });
        }
        fill(&mut self.ct_type, e.ct_type.as_ref(), id, false);
        fill(&mut self.disk_size, e.disk_size.as_ref(), id, false);
        fill(&mut self.core_count, e.core_count.as_ref(), id, false);
        fill(&mut self.ram_size, e.ram_size.as_ref(), id, false);
        fill(&mut self.os_type, e.os_type.as_ref(), id, false);
        fill(&mut self.os_version, e.os_version.as_ref(), id, false);
        fill(&mut self.pve_version, e.pve_version.as_ref(), id, false);
        fill(&mut self.method, e.method.as_ref(), id, false);
        fill_longest(&mut self.longest_duration, e.install_duration, id);
        let cpu_weak = e.cpu_vendor == Some(CpuVendor::Unknown);
        fill(&mut self.cpu_vendor, e.cpu_vendor.as_ref(), id, cpu_weak);
        fill(&mut self.cpu_model, e.cpu_model.as_ref(), id, false);
        let gpu_weak = e.gpu_vendor == Some(GpuVendor::Unknown);
        fill(&mut self.gpu_vendor, e.gpu_vendor.as_ref(), id, gpu_weak);
        fill(&mut self.gpu_model, e.gpu_model.as_ref(), id, false);
        let pass_weak = e.gpu_passthrough == Some(GpuPassthrough::Unknown);
        fill(
            &mut self.gpu_passthrough,
            e.gpu_passthrough.as_ref(),
            id,
            pass_weak,
        );
        fill(&mut self.ram_speed, e.ram_speed.as_ref(), id, false);
        fill(&mut self.repo_slug, e.repo_slug.as_ref(), id, false);
        fill(&mut self.has_arm, e.has_arm.as_ref(), id, false);
        fill(&mut self.arch, e.arch.as_ref(), id, false);
    }

    /// True once a final event (success, failed, aborted, unknown) arrived.
    pub fn is_final(&self) -> bool {
        self.outcome.is_some()
    }

    /// When the install ended, if it did.
    pub fn finished_at(&self) -> Option<OffsetDateTime> {
        self.outcome.as_ref().map(|o| o.at)
    }

    /// The `install_duration` every store shows: the deciding final's, else the largest any event of the
    /// install carried (also while the install is not final).
    pub fn reported_duration(&self) -> Option<u32> {
        self.outcome
            .as_ref()
            .and_then(|o| o.install_duration)
            .or_else(|| self.longest_duration.as_ref().map(|d| d.value))
    }

    /// The reported duration, else the time from the first event to the final one.
    pub fn duration_secs(&self) -> Option<u32> {
        if let Some(d) = self.reported_duration() {
            return Some(d);
        }
        let finished = self.finished_at()?;
        let secs = (finished - self.first_seen).whole_seconds();
        u32::try_from(secs).ok()
    }
}

/// Keeps the largest value, ties to the earliest event: a total order on candidates, like [`fill`].
fn fill_longest(slot: &mut Option<Stamped<u32>>, value: Option<u32>, from: Uuid) {
    let Some(value) = value else { return };
    let beats = |cur: &Stamped<u32>| {
        (value, std::cmp::Reverse(from)) > (cur.value, std::cmp::Reverse(cur.from))
    };
    if slot.as_ref().is_none_or(beats) {
        *slot = Some(Stamped {
            value,
            from,
            weak: false,
        });
    }
}

fn fill_required<T: Clone>(slot: &mut Stamped<T>, value: &T, from: Uuid) {
    if from < slot.from {
        *slot = Stamped {
            value: value.clone(),
            from,
            weak: false,
        };
    }
}
