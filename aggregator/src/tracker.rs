//! The installs of the longest window, in bounded memory. An install that is not final yet keeps its full
//! [`InstallState`] and goes through `schema::merge` like in every store. Once final it shrinks to a
//! 48-byte [`Slot`] holding only what the rollups need; a late event for a final install (a redelivery,
//! a real final beating `unknown`, a progress ping carrying a larger running duration) is applied to the
//! slot with the same rules (`status_score`, earliest event wins, the deciding final's duration else the
//! largest carried), comparing the time-ordered top 64 bits of event ids.
//!
//! An install belongs to the `random_id` of its first event (`schema::merge::forged`): a pending install
//! keeps the events of other `random_id`s apart in its state; a final one keeps a 32-bit hash of its
//! owner's `random_id`, and an event with another one is not applied ([`Tracker::apply`] says so, for the
//! forged-events counter). The stream is read in order, so the owner's first event comes first.
//!
//! Slots sit in a deque in arrival order, so expiring the oldest is a pop from the front; a
//! `hashbrown::HashTable` of 4-byte positions finds an install by a 64-bit hash of its `execution_id`.
//! Measured cost per final install is in aggregator/README.md.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;

use hashbrown::HashTable;
use schema::hash::stable_hash;
use schema::merge::{forged, merge, status_score, InstallState};
use schema::{Category, Event, Kind, RepoSource, Status};
use time::OffsetDateTime;
use uuid::Uuid;

/// The time-ordered part of a UUIDv7 (48-bit milliseconds, version, 12 random bits).
fn id_prefix(id: Uuid) -> u64 {
    id.as_u64_pair().0
}

/// The slot's tag of a `random_id`.
fn owner_tag(random_id: &str) -> u32 {
    stable_hash(random_id) as u32
}

fn unix_secs(at: OffsetDateTime) -> u32 {
    u32::try_from(at.unix_timestamp().max(0)).unwrap_or(u32::MAX)
}

/// Names from client text (app names, error signatures) in bounded memory. An install keeps only the
/// 32-bit hash of its name (0: none), so the names cost nothing per install; the text of a name is kept
/// here, at most `cap` of them, plus those the last rollup `wanted` (the names that qualify for tracking:
/// a real app never loses its text to a flood of others). A name whose text was not kept still counts
/// in the global, repo and type groups and under the untracked remainder, and its next event offers the
/// text again. The hash is keyed per process (std's SipHash with random keys), so client text cannot
/// be crafted to collide with a real name; two names colliding by chance (about n² / 2³³ pairs for n
/// names) count as one.
#[derive(Debug)]
pub struct Names {
    hasher: std::collections::hash_map::RandomState,
    texts: HashMap<u32, Box<str>>,
    cap: usize,
    wanted: HashSet<u32>,
    refused: u64,
    /// A text was refused since the last [`Names::keep`].
    full: bool,
}

impl Default for Names {
    fn default() -> Names {
        Names::new(usize::MAX)
    }
}

impl Names {
    /// Keeps at most `cap` texts (plus the wanted ones).
    pub fn new(cap: usize) -> Names {
        Names {
            hasher: Default::default(),
            texts: HashMap::new(),
            cap,
            wanted: HashSet::new(),
            refused: 0,
            full: false,
        }
    }

    /// The hash of `text`, never 0.
    pub fn hash(&self, text: &str) -> u32 {
        let h = self.hasher.hash_one(text);
        ((h ^ (h >> 32)) as u32).max(1)
    }

    /// The hash of `text`, keeping its text when there is room or it is wanted.
    pub fn offer(&mut self, text: &str) -> u32 {
        let h = self.hash(text);
        if !self.texts.contains_key(&h) {
            if self.texts.len() < self.cap || self.wanted.contains(&h) {
                self.texts.insert(h, text.into());
            } else {
                self.refused += 1;
                self.full = true;
            }
        }
        h
    }

    /// The text of a hash, when kept.
    pub fn name(&self, hash: u32) -> Option<&str> {
        self.texts.get(&hash).map(|s| &**s)
    }

    /// Texts kept.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Events whose name text was not kept because the store was full, since the last call.
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// After a rollup: drops the texts of hashes no install refers to (`present`, sorted), and when
    /// over the cap every text the rollup does not want; remembers `wanted` for the events to come.
    pub fn keep(&mut self, present: &[u32], wanted: HashSet<u32>) {
        self.texts
            .retain(|h, _| present.binary_search(h).is_ok() || wanted.contains(h));
        if self.texts.len() > self.cap {
            self.texts.retain(|h, _| wanted.contains(h));
        }
        self.wanted = wanted;
        self.full = false;
    }

    /// A text was refused since the last [`Names::keep`].
    pub fn is_full(&self) -> bool {
        self.full
    }
}

/// One install as the rollups see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub key: u64,
    /// 32 bits of the hash of the owner's `random_id` (the install's first event).
    owner: u32,
    /// Top 64 bits of the event that decided the outcome (0 while not final).
    outcome_from: u64,
    /// Start of the install (its earliest event), unix seconds.
    pub first_seen: u32,
    pub app: u32,
    pub signature: u32,
    /// Seconds in the bits of [`DURATION_SECS`], and where they came from ([`DURATION_OF_FINAL`],
    /// [`DURATION_OF_CLOCK`], neither: the largest any event carried); [`NO_DURATION`] when unknown.
    duration: u32,
    pub status: Status,
    pub kind: Kind,
    pub repo: RepoSource,
    pub category: Option<Category>,
    pub exit_code: Option<u8>,
    /// True while the full state is in `pending`.
    pending: bool,
}

const NO_DURATION: u32 = u32::MAX;
/// The deciding final's own `install_duration`: no later event but a final that beats it moves it.
const DURATION_OF_FINAL: u32 = 1 << 31;
/// No event carried a duration: the time from the first event to the final.
const DURATION_OF_CLOCK: u32 = 1 << 30;
const DURATION_SECS: u32 = DURATION_OF_CLOCK - 1;

/// The slot's duration of a merged state: the deciding final's, else the largest carried, else the clock.
fn state_duration(state: &InstallState) -> u32 {
    if let Some(d) = state.outcome.as_ref().and_then(|o| o.install_duration) {
        return d.min(DURATION_SECS) | DURATION_OF_FINAL;
    }
    if let Some(d) = &state.longest_duration {
        return d.value.min(DURATION_SECS);
    }
    state
        .duration_secs()
        .map_or(NO_DURATION, |d| d.min(DURATION_SECS) | DURATION_OF_CLOCK)
}

impl Slot {
    /// The install's client for counting distinct clients cheaply: 8 bits of the same hash of its
    /// `random_id` as [`Slot::owner`].
    pub fn client(&self) -> u8 {
        self.owner as u8
    }

    pub fn duration(&self) -> Option<u32> {
        (self.duration != NO_DURATION).then_some(self.duration & DURATION_SECS)
    }

    /// A late event of a final install that carries `install_duration` `d` (and did not decide it).
    fn carried(&mut self, d: u32) {
        let d = d.min(DURATION_SECS);
        let replaces = match self.duration {
            NO_DURATION => true,
            current if current & DURATION_OF_FINAL != 0 => false,
            current if current & DURATION_OF_CLOCK != 0 => true,
            current => d > current,
        };
        if replaces {
            self.duration = d;
        }
    }

    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }
}

/// A non-final install: its full merge state and when a timeout was last published for it.
#[derive(Debug)]
struct Pending {
    state: InstallState,
    timeout_sent: Option<OffsetDateTime>,
}

/// Every install whose first event is inside the longest window.
#[derive(Debug)]
pub struct Tracker {
    slots: VecDeque<Slot>,
    /// Absolute position of `slots[0]` (wrapping).
    base: u32,
    index: HashTable<u32>,
    /// Boxed: a state is over a kilobyte, and a table of them would move every one when it grows (and
    /// grow for its tombstones even at a steady count).
    pending: HashMap<u64, Box<Pending>>,
    /// Most full states kept in `pending` ([`Tracker::with_state_cap`]).
    max_states: usize,
    /// Keys in the order their installs got a full state (some no longer pending): the oldest is shed
    /// first when `pending` is over `max_states`.
    order: VecDeque<u64>,
    /// Installs not final whose full state was shed: their slot follows their events alone.
    shed: usize,
    /// Full states shed since the last [`Tracker::take_shed`].
    newly_shed: u64,
    /// App names (`nsapp`) by hash.
    pub apps: Names,
    /// Error signatures by hash.
    pub signatures: Names,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker {
            slots: VecDeque::new(),
            base: 0,
            index: HashTable::new(),
            pending: HashMap::new(),
            max_states: usize::MAX,
            order: VecDeque::new(),
            shed: 0,
            newly_shed: 0,
            apps: Names::default(),
            signatures: Names::default(),
        }
    }
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Keeps the full merge state of at most `max` installs not final (`MAX_PENDING_STATES`). Past it,
    /// the state of the install that got one first is shed: the install stays in its windows and
    /// counts as in progress, its slot applies its later events like a final install's (status, outcome,
    /// durations), and it gets no synthetic timeout. Bounds the memory a flood of installs that never
    /// end can take (about 1.4 KB per state).
    pub fn with_state_cap(mut self, max: usize) -> Tracker {
        self.max_states = max;
        self
    }

    /// Keeps at most `apps` app-name texts and `signatures` signature texts (plus the wanted ones).
    pub fn with_name_caps(apps: usize, signatures: usize) -> Tracker {
        Tracker {
            apps: Names::new(apps),
            signatures: Names::new(signatures),
            ..Tracker::default()
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Installs not final, with their full state or without (shed).
    pub fn pending(&self) -> usize {
        self.pending.len() + self.shed
    }

    /// Full states shed since the last call ([`Tracker::with_state_cap`]).
    pub fn take_shed(&mut self) -> u64 {
        std::mem::take(&mut self.newly_shed)
    }

    /// Sheds the oldest full states while more than `max_states` are kept.
    fn bound_states(&mut self) {
        while self.pending.len() > self.max_states {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if self.pending.remove(&key).is_none() {
                continue;
            }
            if let Some(i) = self.find(key) {
                self.slots[i].pending = false;
            }
            self.shed += 1;
            self.newly_shed += 1;
        }
        // Keys whose install ended or expired stay in `order` until they reach its front; keep them
        // from piling up when few installs are shed.
        if self.order.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.order.retain(|k| pending.contains_key(k));
        }
    }

    /// Keeps the name texts a rollup's report asks for (see [`Names::keep`]).
    pub fn keep_names(&mut self, report: crate::rollup::Report) {
        self.apps.keep(&report.apps.present, report.apps.wanted);
        self.signatures
            .keep(&report.signatures.present, report.signatures.wanted);
    }

    /// A name store refused a text since its last pruning.
    pub fn names_full(&self) -> bool {
        self.apps.is_full() || self.signatures.is_full()
    }

    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    fn find(&self, key: u64) -> Option<usize> {
        let (slots, base) = (&self.slots, self.base);
        self.index
            .find(key, |&pos| {
                slots
                    .get(pos.wrapping_sub(base) as usize)
                    .is_some_and(|s| s.key == key)
            })
            .map(|&pos| pos.wrapping_sub(base) as usize)
    }

    /// Merges one event from the stream. False when the event was not applied: its `random_id` is not
    /// the install's (`schema::merge::forged`).
    pub fn apply(&mut self, event: &Event) -> bool {
        let key = stable_hash(&event.execution_id);
        match self.find(key) {
            None => {
                let state = merge(None, event);
                let mut slot = Slot {
                    key,
                    owner: 0,
                    outcome_from: 0,
                    first_seen: 0,
                    app: 0,
                    signature: 0,
                    duration: NO_DURATION,
                    status: Status::Installing,
                    kind: Kind::Lxc,
                    repo: RepoSource::ProxmoxVE,
                    category: None,
                    exit_code: None,
                    pending: false,
                };
                self.refresh(&mut slot, &state, event);
                let pos = self.base.wrapping_add(self.slots.len() as u32);
                self.slots.push_back(slot);
                let slots = &self.slots;
                let base = self.base;
                self.index.insert_unique(key, pos, |&p| {
                    slots
                        .get(p.wrapping_sub(base) as usize)
                        .map_or(0, |s| s.key)
                });
                if slot.pending {
                    self.pending.insert(
                        key,
                        Box::new(Pending {
                            state,
                            timeout_sent: None,
                        }),
                    );
                    self.order.push_back(key);
                    self.bound_states();
                }
                true
            }
            Some(i) => {
                let mut slot = self.slots[i];
                let applied = if let Some(mut p) = self.pending.remove(&key) {
                    let applied = !forged(&p.state, event);
                    p.state.apply(event);
                    self.refresh(&mut slot, &p.state, event);
                    if slot.pending {
                        self.pending.insert(key, p);
                    }
                    applied
                } else if owner_tag(&event.random_id) != slot.owner {
                    false
                } else {
                    let shed = !slot.is_final();
                    self.apply_to_final(&mut slot, event);
                    if shed && slot.is_final() {
                        self.shed = self.shed.saturating_sub(1);
                    }
                    true
                };
                self.slots[i] = slot;
                applied
            }
        }
    }

    /// Copies a merged state into its slot; `event` is the one just merged (it carries the signature
    /// when it decided the outcome).
    fn refresh(&mut self, slot: &mut Slot, state: &InstallState, event: &Event) {
        slot.owner = owner_tag(&state.random_id.value);
        slot.first_seen = unix_secs(state.first_seen);
        slot.app = self.apps.offer(&state.nsapp.value);
        slot.kind = state.kind.value;
        slot.repo = state.repo_source.value;
        slot.status = state.status.value;
        slot.pending = !state.is_final();
        if let Some(outcome) = &state.outcome {
            slot.outcome_from = id_prefix(outcome.from);
            slot.exit_code = outcome.exit_code;
            slot.category = outcome.error_category;
            if outcome.from == event.event_id {
                slot.signature = self.intern_signature(event);
            }
            slot.duration = state_duration(state);
        }
    }

    fn intern_signature(&mut self, event: &Event) -> u32 {
        event
            .error_signature
            .as_deref()
            .map_or(0, |s| self.signatures.offer(s))
    }

    /// The merge rules of `schema::merge` on a final install's slot. Only the largest duration is not
    /// exact: when a final without a duration beats one that had its own, that one's figure stands for
    /// the largest (the slot does not keep the other events' figures).
    fn apply_to_final(&mut self, slot: &mut Slot, event: &Event) {
        let at = unix_secs(event.received_at);
        slot.first_seen = slot.first_seen.min(at);
        if !event.status.is_final() {
            if let Some(d) = event.install_duration {
                slot.carried(d);
            }
            return;
        }
        let candidate = (
            status_score(event.status),
            std::cmp::Reverse(id_prefix(event.event_id)),
        );
        let current = (
            status_score(slot.status),
            std::cmp::Reverse(slot.outcome_from),
        );
        if candidate <= current {
            if let Some(d) = event.install_duration {
                slot.carried(d);
            }
            return;
        }
        slot.status = event.status;
        slot.outcome_from = id_prefix(event.event_id);
        slot.exit_code = event.exit_code;
        slot.category = event.error_category;
        slot.signature = self.intern_signature(event);
        slot.duration = match (event.install_duration, slot.duration) {
            (Some(d), _) => d.min(DURATION_SECS) | DURATION_OF_FINAL,
            (None, current) if current != NO_DURATION && current & DURATION_OF_CLOCK == 0 => {
                current & DURATION_SECS
            }
            (None, _) => at.saturating_sub(slot.first_seen).min(DURATION_SECS) | DURATION_OF_CLOCK,
        };
    }

    /// Forgets installs that started before `cutoff` (unix seconds).
    pub fn expire(&mut self, cutoff: u32) -> usize {
        let mut expired = 0;
        while let Some(front) = self.slots.front().copied() {
            if front.first_seen >= cutoff {
                break;
            }
            self.slots.pop_front();
            let pos = self.base;
            if let Ok(entry) = self.index.find_entry(front.key, |&p| p == pos) {
                entry.remove();
            }
            self.base = self.base.wrapping_add(1);
            if front.pending {
                self.pending.remove(&front.key);
            } else if !front.is_final() {
                self.shed = self.shed.saturating_sub(1);
            }
            expired += 1;
        }
        expired
    }

    /// Installs not final that started before `cutoff` (the stuck ones, timed out or not yet).
    pub fn count_stuck(&self, cutoff: OffsetDateTime) -> usize {
        self.pending
            .values()
            .filter(|p| p.state.first_seen < cutoff)
            .count()
    }

    /// Installs not final that started before `cutoff` and were not timed out since `retry_before`.
    /// Marks them as timed out at `now`.
    pub fn take_stuck(
        &mut self,
        cutoff: OffsetDateTime,
        retry_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Vec<InstallState> {
        let mut out = Vec::new();
        for p in self.pending.values_mut() {
            if p.state.first_seen < cutoff && p.timeout_sent.is_none_or(|t| t < retry_before) {
                p.timeout_sent = Some(now);
                out.push(p.state.clone());
            }
        }
        out.sort_by(|a, b| a.execution_id.cmp(&b.execution_id));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use schema::validate::{validate, Reception};

    /// A validated event received `secs` after the epoch base of the tests.
    pub fn event(secs: i64, body: &str) -> Event {
        let received_at = OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).expect("time");
        let (hi, lo) = Uuid::now_v7().as_u64_pair();
        // A UUIDv7 whose time part follows `received_at`, so ids are ordered like the test's clock.
        let ms = (1_700_000_000 + secs) as u64 * 1000;
        let hi = (ms << 16) | (hi & 0xffff);
        let reception = Reception {
            event_id: Uuid::from_u64_pair(hi, lo),
            received_at,
        };
        validate(body.as_bytes(), reception)
            .unwrap_or_else(|e| panic!("{body}: {e:?}"))
            .event
    }

    pub fn body(exec: &str, app: &str, status: &str, extra: &str) -> String {
        format!(
            r#"{{"random_id":"r","execution_id":"{exec}","type":"lxc","nsapp":"{app}","status":"{status}"{extra}}}"#
        )
    }

    fn check(events: &[(i64, &str)], expected: (usize, usize, Status)) {
        let mut t = Tracker::new();
        for (at, b) in events {
            t.apply(&event(*at, b));
        }
        let first = t.slots().next().copied().expect("one install");
        assert_eq!((t.len(), t.pending(), first.status), expected, "{events:?}");
    }

    /// An event of another `random_id` than the install's first event is not applied, whether the
    /// install is pending (full state) or final (slot); `apply` says so.
    #[test]
    fn events_of_another_random_id_are_not_applied() {
        let forge = |b: String| b.replace(r#""random_id":"r""#, r#""random_id":"forger""#);
        let installing = body("x", "docker", "installing", "");
        let unknown = body("x", "docker", "unknown", "");
        let success = body("x", "docker", "success", "");
        let forged_failed = forge(body("x", "docker", "failed", r#","exit_code":1"#));
        let forged_success = forge(success.clone());
        check(
            &[(0, &installing), (5, &forged_failed)],
            (1, 1, Status::Installing),
        );
        check(
            &[(0, &installing), (5, &forged_failed), (9, &success)],
            (1, 0, Status::Success),
        );
        check(
            &[(0, &installing), (5, &unknown), (6, &forged_success)],
            (1, 0, Status::Unknown),
        );
        let mut t = Tracker::new();
        assert!(t.apply(&event(0, &installing)));
        assert!(!t.apply(&event(1, &forged_failed)));
        assert!(t.apply(&event(2, &unknown)));
        assert!(!t.apply(&event(3, &forged_success)));
        assert!(t.apply(&event(4, &success)));
        assert_eq!(t.slots().next().map(|s| s.status), Some(Status::Success));
    }

    /// Past `with_state_cap`, the oldest pending install loses its full state: it still counts as in
    /// progress, refuses forged events, follows its final event and expires, but gets no timeout.
    #[test]
    fn a_state_cap_sheds_the_oldest_states_and_keeps_the_counts() {
        let mut t = Tracker::new().with_state_cap(2);
        for (at, exec) in [(0, "a"), (1, "b"), (2, "c")] {
            assert!(t.apply(&event(at, &body(exec, "docker", "installing", ""))));
        }
        assert_eq!((t.len(), t.pending(), t.take_shed()), (3, 3, 1));
        let later = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let stuck = |t: &mut Tracker| -> Vec<String> {
            t.take_stuck(later, later, later)
                .into_iter()
                .map(|s| s.execution_id)
                .collect()
        };
        assert_eq!(
            stuck(&mut t),
            ["b", "c"],
            "a's state was shed: no timeout for it"
        );

        let forged = body("a", "docker", "failed", r#","exit_code":1"#)
            .replace(r#""random_id":"r""#, r#""random_id":"forger""#);
        assert!(
            !t.apply(&event(3, &forged)),
            "a shed install keeps its owner"
        );
        assert!(t.apply(&event(
            5,
            &body("a", "docker", "failed", r#","exit_code":1"#)
        )));
        let a = t.slots().next().copied().expect("a");
        assert_eq!(
            (a.status, a.exit_code, a.duration(), t.pending()),
            (Status::Failed, Some(1), Some(5), 2)
        );

        // A fourth install sheds b; a (final) and b (shed) then expire.
        assert!(t.apply(&event(6, &body("d", "docker", "installing", ""))));
        assert_eq!((t.pending(), t.take_shed()), (3, 1));
        assert_eq!(t.expire(1_700_000_002), 2);
        assert_eq!((t.len(), t.pending()), (2, 2));
        assert_eq!(stuck(&mut t), ["d"], "c was timed out above, d is new");
    }

    #[test]
    fn installs_merge_in_any_order() {
        let installing = body("x", "docker", "installing", "");
        let failed = body("x", "docker", "failed", r#","exit_code":100"#);
        let success = body("x", "docker", "success", "");
        let unknown = body("x", "docker", "unknown", "");
        check(&[(0, &installing)], (1, 1, Status::Installing));
        check(&[(0, &installing), (5, &failed)], (1, 0, Status::Failed));
        check(&[(5, &failed), (0, &installing)], (1, 0, Status::Failed));
        check(
            &[(0, &installing), (5, &unknown), (9, &success)],
            (1, 0, Status::Success),
        );
        check(
            &[(0, &unknown), (3, &success), (9, &failed)],
            (1, 0, Status::Success),
        );
        check(&[(0, &success), (0, &success)], (1, 0, Status::Success));
    }

    #[test]
    fn a_final_slot_takes_the_outcome_of_the_winning_event() {
        let mut t = Tracker::new();
        t.apply(&event(0, &body("x", "a", "installing", "")));
        t.apply(&event(10, &body("x", "a", "unknown", r#","exit_code":1"#)));
        t.apply(&event(
            20,
            &body(
                "x",
                "a",
                "failed",
                r#","exit_code":100,"install_duration":42"#,
            ),
        ));
        let slot = t.slots().next().copied().expect("slot");
        assert_eq!(slot.status, Status::Failed);
        assert_eq!(slot.exit_code, Some(100));
        assert_eq!(slot.duration(), Some(42));
    }

    /// The newer scripts send the running duration with every event: the slot shows the deciding
    /// final's, else the largest carried, else the clock, in whatever order the events arrive (finals
    /// first exercise the slot's own rules, pending installs the full merge).
    #[test]
    fn a_slot_takes_the_deciding_finals_duration_else_the_largest_carried() {
        let d = |status: &str, secs: Option<u32>| {
            let extra = secs.map_or(String::new(), |s| format!(r#","install_duration":{s}"#));
            let code = match status {
                "success" => r#","exit_code":0"#,
                "failed" | "unknown" => r#","exit_code":1"#,
                _ => "",
            };
            body("x", "a", status, &format!("{code}{extra}"))
        };
        let installing = d("installing", Some(0));
        let configuring = d("configuring", Some(141));
        let failed = d("failed", Some(412));
        let failed_bare = d("failed", None);
        let unknown = d("unknown", Some(300));
        let late = d("configuring", Some(500));
        let installing_bare = d("installing", None);
        // (events as (received at, body), expected duration)
        type Row<'a> = (Vec<(i64, &'a String)>, Option<u32>);
        let cases: Vec<Row> = vec![
            (
                vec![(0, &installing), (141, &configuring), (412, &failed)],
                Some(412),
            ),
            (
                vec![(412, &failed), (0, &installing), (141, &configuring)],
                Some(412),
            ),
            (vec![(412, &failed), (500, &late)], Some(412)),
            (
                vec![(0, &installing), (141, &configuring), (412, &failed_bare)],
                Some(141),
            ),
            (
                vec![(412, &failed_bare), (0, &installing), (141, &configuring)],
                Some(141),
            ),
            (vec![(412, &failed_bare), (500, &late)], Some(500)),
            (vec![(100, &installing), (412, &failed_bare)], Some(0)),
            // No figure at all: the clock, until an event brings one.
            (
                vec![(100, &installing_bare), (412, &failed_bare)],
                Some(312),
            ),
            (vec![(412, &failed_bare), (600, &late)], Some(500)),
            // An unknown beaten by a real final: the real final's figure, else the largest carried.
            (vec![(300, &unknown), (412, &failed)], Some(412)),
            (vec![(300, &unknown), (412, &failed_bare)], Some(300)),
        ];
        for (events, expected) in cases {
            let mut t = Tracker::new();
            for (at, b) in &events {
                t.apply(&event(*at, b));
            }
            let slot = t.slots().next().copied().expect("slot");
            assert!(slot.is_final());
            assert_eq!(slot.duration(), expected, "{events:?}");
        }
    }

    #[test]
    fn expiry_pops_the_oldest_and_forgets_their_keys() {
        let mut t = Tracker::new();
        for i in 0..100 {
            t.apply(&event(i, &body(&format!("x{i}"), "a", "success", "")));
        }
        assert_eq!(
            t.expire(unix_secs(
                event(50, &body("y", "a", "success", "")).received_at
            )),
            50
        );
        assert_eq!(t.len(), 50);
        // An expired install that shows up again starts anew; a live one is found.
        t.apply(&event(200, &body("x10", "a", "failed", "")));
        t.apply(&event(200, &body("x60", "a", "failed", "")));
        assert_eq!(t.len(), 51);
        let statuses: Vec<Status> = t.slots().map(|s| s.status).collect();
        assert_eq!(statuses.iter().filter(|s| **s == Status::Failed).count(), 1);
    }

    #[test]
    fn stuck_installs_are_handed_out_once_until_retry() {
        let mut t = Tracker::new();
        t.apply(&event(0, &body("x", "a", "installing", "")));
        t.apply(&event(0, &body("y", "a", "success", "")));
        let at = |s: i64| OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).expect("time");
        assert_eq!(t.count_stuck(at(0)), 0);
        assert_eq!(t.count_stuck(at(1)), 1);
        assert_eq!(t.take_stuck(at(1), at(0), at(10)).len(), 1);
        // Timed out but not final yet: still counted as stuck until the timeout comes back.
        assert_eq!(t.count_stuck(at(1)), 1);
        assert_eq!(t.take_stuck(at(1), at(0), at(11)).len(), 0);
        assert_eq!(t.take_stuck(at(1), at(11), at(12)).len(), 1);
    }
}

#[cfg(test)]
mod size {
    /// The per-install figure of aggregator/README.md rests on this.
    #[test]
    fn a_final_install_costs_forty_eight_bytes_of_slot() {
        assert_eq!(std::mem::size_of::<super::Slot>(), 48);
    }
}
