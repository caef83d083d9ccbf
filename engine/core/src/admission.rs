//! Admission control for alert-triggered runs (`runbook serve`): which matched alert may start
//! a run, and when.
//!
//! A run is identified by its key (the runbook and its bound params). An alert that maps to a
//! key that is already queued or running joins that run instead of starting another; so does
//! one that arrives within the trigger's `cooldown` after the key's last run started. Each
//! runbook may start at most `cap` runs per `window`, counting the ones still queued. The
//! queue is bounded: when it is full, the caller answers with back-pressure (HTTP 503) and
//! Alertmanager sends the alert again later.
//!
//! An incident (Alertmanager's identity of an alert: its fingerprint and `startsAt`) that
//! already asked for a run of a key never starts another, however often Alertmanager repeats
//! or regroups it: a repeat after the run finished and its cooldown passed is still the same
//! incident. The memory of incidents is bounded: an incident is forgotten `retention` after it
//! resolved, and the oldest go first when `incident_capacity` are remembered.
//!
//! Time is passed in, so the rules are tested without sleeping.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Runs waiting for a worker, across all runbooks.
    pub queue_capacity: usize,
    /// Runs one runbook may start per `window`.
    pub cap: usize,
    pub window: Duration,
}

/// What became of an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A new run was queued.
    Queued,
    /// A run with the same key is queued or running: the alert joins it.
    Duplicate { run: String },
    /// The key's last run started less than `cooldown` ago.
    CoolingDown { run: String, remaining: Duration },
    /// The runbook has started `cap` runs within the window.
    Capped { cap: usize, window: Duration },
    /// The queue is full: try again later.
    QueueFull,
    /// The same incident (fingerprint and `startsAt`) already asked for run `run` of this key.
    SameIncident { run: String },
}

/// What became of a resolved alert's key.
#[derive(Debug)]
pub enum Resolution<T> {
    /// The key's queued run was cancelled: no incident it serves still fires.
    Cancelled(Queued<T>),
    /// The key's run (queued or running) also serves an incident that still fires.
    StillNeeded,
    /// Nothing was queued for the key (a run may be going on: the caller's to record).
    NotQueued,
}

/// Incidents remembered at most, across all keys.
pub const INCIDENT_CAPACITY: usize = 10_000;

/// How long an incident is remembered after it resolved, at least (Alertmanager pairs may
/// deliver a late repeat of a firing notification after the resolved one).
pub const INCIDENT_RETENTION: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
struct IncidentState {
    run: String,
    /// When it resolved, and how long after that it is kept.
    forget_at: Option<Instant>,
}

/// What a matched alert asks for.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The runbook and its bound params.
    pub key: &'a str,
    /// The alert's incident (its fingerprint and `startsAt`, as the caller spells them).
    pub incident: Option<&'a str>,
    pub runbook: &'a str,
    /// `None`: no cooldown.
    pub cooldown: Option<Duration>,
}

/// A queued run.
#[derive(Debug)]
pub struct Queued<T> {
    pub run: String,
    pub key: String,
    pub runbook: String,
    pub item: T,
}

#[derive(Debug, Default)]
struct KeyState {
    /// The run queued or running for this key.
    active: Option<String>,
    /// The last run started for this key, and when.
    last: Option<(String, Instant)>,
}

/// The admission state: keys, per-runbook windows and the queue.
#[derive(Debug)]
pub struct Admission<T> {
    limits: Limits,
    keys: HashMap<String, KeyState>,
    /// When each runbook's recent runs started.
    started: HashMap<String, VecDeque<Instant>>,
    queue: VecDeque<Queued<T>>,
    /// Incidents that asked for a run, by `key`, fingerprint and `startsAt`.
    incidents: HashMap<String, IncidentState>,
    /// Incident ids, oldest first, for eviction.
    incident_order: VecDeque<String>,
    /// When resolved incidents were last forgotten.
    swept_at: Option<Instant>,
}

impl<T> Admission<T> {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            keys: HashMap::new(),
            started: HashMap::new(),
            queue: VecDeque::new(),
            incidents: HashMap::new(),
            incident_order: VecDeque::new(),
            swept_at: None,
        }
    }

    /// Decides about one matched alert. `run` is the id the new run gets if it is queued.
    pub fn admit(
        &mut self,
        now: Instant,
        key: &str,
        runbook: &str,
        cooldown: Option<Duration>,
        run: impl FnOnce() -> String,
        item: T,
    ) -> Decision {
        let candidate = Candidate {
            key,
            incident: None,
            runbook,
            cooldown,
        };
        self.admit_incident(now, &candidate, run, item)
    }

    /// `admit`, for an alert of an incident: an incident that already asked for a run of its
    /// key starts no other.
    pub fn admit_incident(
        &mut self,
        now: Instant,
        candidate: &Candidate<'_>,
        run: impl FnOnce() -> String,
        item: T,
    ) -> Decision {
        let Candidate {
            key,
            incident,
            runbook,
            cooldown,
        } = *candidate;
        self.forget_incidents(now);
        let incident = incident.map(|incident| format!("{key}\u{0}{incident}"));
        if let Some(state) = self.keys.get(key) {
            if let Some(active) = &state.active {
                let active = active.clone();
                if let Some(incident) = incident {
                    self.remember(incident, &active);
                }
                return Decision::Duplicate { run: active };
            }
            if let (Some(cooldown), Some((last, at))) = (cooldown, &state.last) {
                let elapsed = now.saturating_duration_since(*at);
                if elapsed < cooldown {
                    return Decision::CoolingDown {
                        run: last.clone(),
                        remaining: cooldown - elapsed,
                    };
                }
            }
        }
        if let Some(seen) = incident.as_ref().and_then(|id| self.incidents.get(id)) {
            return Decision::SameIncident {
                run: seen.run.clone(),
            };
        }
        let window = self.limits.window;
        let recent = self.started.get_mut(runbook).map_or(0, |starts| {
            while starts
                .front()
                .is_some_and(|at| now.saturating_duration_since(*at) >= window)
            {
                starts.pop_front();
            }
            starts.len()
        });
        let queued = self.queue.iter().filter(|q| q.runbook == runbook).count();
        if recent + queued >= self.limits.cap {
            return Decision::Capped {
                cap: self.limits.cap,
                window,
            };
        }
        if self.queue.len() >= self.limits.queue_capacity {
            return Decision::QueueFull;
        }
        let run = run();
        if let Some(incident) = incident {
            self.remember(incident, &run);
        }
        self.keys.entry(key.to_owned()).or_default().active = Some(run.clone());
        self.queue.push_back(Queued {
            run,
            key: key.to_owned(),
            runbook: runbook.to_owned(),
            item,
        });
        Decision::Queued
    }

    fn remember(&mut self, incident: String, run: &str) {
        if self.incidents.contains_key(&incident) {
            return;
        }
        while self.incident_order.len() >= INCIDENT_CAPACITY {
            match self.incident_order.pop_front() {
                Some(oldest) => {
                    self.incidents.remove(&oldest);
                }
                None => break,
            }
        }
        self.incident_order.push_back(incident.clone());
        self.incidents.insert(
            incident,
            IncidentState {
                run: run.to_owned(),
                forget_at: None,
            },
        );
    }

    /// The incident resolved: it is forgotten once `retention` (at least
    /// `INCIDENT_RETENTION`) has passed, so the memory does not grow with every incident ever
    /// seen.
    pub fn incident_resolved(
        &mut self,
        now: Instant,
        key: &str,
        incident: &str,
        retention: Duration,
    ) {
        let id = format!("{key}\u{0}{incident}");
        if let Some(state) = self.incidents.get_mut(&id) {
            state.forget_at = Some(now + retention.max(INCIDENT_RETENTION));
        }
    }

    fn forget_incidents(&mut self, now: Instant) {
        // At most once a second: a sweep costs one pass over every incident remembered.
        if self
            .swept_at
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        self.swept_at = Some(now);
        let incidents = &mut self.incidents;
        incidents.retain(|_, state| state.forget_at.is_none_or(|at| now < at));
        self.incident_order.retain(|id| incidents.contains_key(id));
    }

    /// A resolved alert of `incident`: the incident is forgotten in time (see
    /// [`Admission::incident_resolved`]), and the key's queued run is cancelled unless an
    /// incident it serves still fires: a resolve of one alert (or a late one of an earlier
    /// incident) never leaves another alert that still fires without its run.
    pub fn resolve(
        &mut self,
        now: Instant,
        key: &str,
        incident: &str,
        retention: Duration,
    ) -> Resolution<T> {
        self.incident_resolved(now, key, incident, retention);
        if self
            .active(key)
            .is_some_and(|run| self.serves_firing_incident(run))
        {
            return Resolution::StillNeeded;
        }
        match self.cancel(key) {
            Some(queued) => Resolution::Cancelled(queued),
            None => Resolution::NotQueued,
        }
    }

    /// Whether an incident that asked for `run` still fires (has not resolved). A resolve of
    /// one incident must not cancel a run another incident still needs: that one's repeats
    /// would be answered "already served" and it would never get a run.
    pub fn serves_firing_incident(&self, run: &str) -> bool {
        self.incidents
            .values()
            .any(|state| state.run == run && state.forget_at.is_none())
    }

    /// Forgets the incidents that asked for `run`, a run that never started (its lock or
    /// journal could not be had): their repeats may then start a run again.
    pub fn forget_incidents_of(&mut self, run: &str) {
        self.incidents.retain(|_, state| state.run != run);
        let incidents = &self.incidents;
        self.incident_order.retain(|id| incidents.contains_key(id));
    }

    /// Incidents remembered.
    pub fn incidents(&self) -> usize {
        self.incidents.len()
    }

    /// The next run to start; it counts as started `now`.
    pub fn next(&mut self, now: Instant) -> Option<Queued<T>> {
        let queued = self.queue.pop_front()?;
        self.keys.entry(queued.key.clone()).or_default().last = Some((queued.run.clone(), now));
        self.started
            .entry(queued.runbook.clone())
            .or_default()
            .push_back(now);
        Some(queued)
    }

    /// The key's run has finished: a new alert for it may start another (after the cooldown).
    pub fn finished(&mut self, key: &str, run: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            if state.active.as_deref() == Some(run) {
                state.active = None;
            }
        }
    }

    /// Removes the key's run from the queue if it has not started yet (its alert resolved).
    pub fn cancel(&mut self, key: &str) -> Option<Queued<T>> {
        let position = self.queue.iter().position(|q| q.key == key)?;
        let queued = self.queue.remove(position)?;
        if let Some(state) = self.keys.get_mut(key) {
            state.active = None;
        }
        Some(queued)
    }

    /// Empties the queue (a server shutting down), returning what was waiting.
    pub fn drain(&mut self) -> Vec<Queued<T>> {
        let drained: Vec<Queued<T>> = self.queue.drain(..).collect();
        for queued in &drained {
            if let Some(state) = self.keys.get_mut(&queued.key) {
                state.active = None;
            }
        }
        drained
    }

    /// The run queued or running for `key`, if any.
    pub fn active(&self, key: &str) -> Option<&str> {
        self.keys.get(key).and_then(|state| state.active.as_deref())
    }

    /// Queues a run that was admitted elsewhere (by the replicas' shared ledger), bypassing
    /// the rules: it holds its key here until it finishes.
    pub fn enqueue(&mut self, key: &str, runbook: &str, run: String, item: T) {
        self.keys.entry(key.to_owned()).or_default().active = Some(run.clone());
        self.queue.push_back(Queued {
            run,
            key: key.to_owned(),
            runbook: runbook.to_owned(),
            item,
        });
    }

    /// Whether the queue is full (a new run would be refused).
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.limits.queue_capacity
    }

    /// Runs waiting for a worker.
    pub fn depth(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Admission<()> {
        Admission::new(Limits {
            queue_capacity: 3,
            cap: 2,
            window: Duration::from_secs(3600),
        })
    }

    fn id(n: &str) -> impl FnOnce() -> String + '_ {
        move || n.to_owned()
    }

    #[test]
    fn the_same_key_joins_the_queued_or_running_run() {
        let mut a = admission();
        let t0 = Instant::now();
        assert_eq!(a.admit(t0, "k", "rb", None, id("r1"), ()), Decision::Queued);
        assert_eq!(
            a.admit(t0, "k", "rb", None, id("r2"), ()),
            Decision::Duplicate { run: "r1".into() }
        );
        let started = a.next(t0).expect("queued");
        assert_eq!(started.run, "r1");
        assert_eq!(
            a.admit(t0, "k", "rb", None, id("r3"), ()),
            Decision::Duplicate { run: "r1".into() },
            "running counts too"
        );
        a.finished("k", "r1");
        assert_eq!(a.admit(t0, "k", "rb", None, id("r4"), ()), Decision::Queued);
    }

    #[test]
    fn cooldown_counts_from_the_last_start() {
        let mut a = Admission::new(Limits {
            queue_capacity: 10,
            cap: 10,
            window: Duration::from_secs(3600),
        });
        let t0 = Instant::now();
        let cooldown = Some(Duration::from_secs(600));
        assert_eq!(
            a.admit(t0, "k", "rb", cooldown, id("r1"), ()),
            Decision::Queued
        );
        a.next(t0);
        a.finished("k", "r1");
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(
            a.admit(t1, "k", "rb", cooldown, id("r2"), ()),
            Decision::CoolingDown {
                run: "r1".into(),
                remaining: Duration::from_secs(500)
            }
        );
        // Other params are another key.
        assert_eq!(
            a.admit(t1, "other", "rb", cooldown, id("r3"), ()),
            Decision::Queued
        );
        let t2 = t0 + Duration::from_secs(600);
        assert_eq!(
            a.admit(t2, "k", "rb", cooldown, id("r4"), ()),
            Decision::Queued
        );
    }

    #[test]
    fn a_runbook_starts_at_most_cap_runs_per_window() {
        let mut a = admission();
        let t0 = Instant::now();
        assert_eq!(
            a.admit(t0, "k1", "rb", None, id("r1"), ()),
            Decision::Queued
        );
        assert_eq!(
            a.admit(t0, "k2", "rb", None, id("r2"), ()),
            Decision::Queued
        );
        let capped = Decision::Capped {
            cap: 2,
            window: Duration::from_secs(3600),
        };
        assert_eq!(
            a.admit(t0, "k3", "rb", None, id("r3"), ()),
            capped,
            "queued ones count"
        );
        a.next(t0);
        a.next(t0);
        a.finished("k1", "r1");
        a.finished("k2", "r2");
        assert_eq!(
            a.admit(t0, "k3", "rb", None, id("r3"), ()),
            capped,
            "started ones count"
        );
        assert_eq!(
            a.admit(t0, "k4", "another", None, id("r4"), ()),
            Decision::Queued,
            "per runbook"
        );
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(
            a.admit(later, "k3", "rb", None, id("r5"), ()),
            Decision::Queued
        );
    }

    #[test]
    fn a_full_queue_pushes_back_and_makes_room_when_a_run_starts() {
        let mut a = Admission::new(Limits {
            queue_capacity: 2,
            cap: 100,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        assert_eq!(a.admit(t0, "a", "rb", None, id("r1"), ()), Decision::Queued);
        assert_eq!(a.admit(t0, "b", "rb", None, id("r2"), ()), Decision::Queued);
        assert_eq!(
            a.admit(t0, "c", "rb", None, id("r3"), ()),
            Decision::QueueFull
        );
        assert_eq!(a.active("c"), None, "a refused alert holds no key");
        assert_eq!(a.depth(), 2);
        a.next(t0);
        assert_eq!(a.admit(t0, "c", "rb", None, id("r3"), ()), Decision::Queued);
    }

    #[test]
    fn cancel_removes_only_a_run_that_has_not_started() {
        let mut a = admission();
        let t0 = Instant::now();
        a.admit(t0, "k1", "rb", None, id("r1"), ());
        a.admit(t0, "k2", "other", None, id("r2"), ());
        assert!(a.next(t0).is_some_and(|q| q.run == "r1"));
        assert!(a.cancel("k1").is_none(), "r1 is running");
        let cancelled = a.cancel("k2").expect("r2 is queued");
        assert_eq!(cancelled.run, "r2");
        assert_eq!(a.depth(), 0);
        assert_eq!(a.active("k2"), None);
        assert_eq!(
            a.admit(t0, "k2", "other", None, id("r3"), ()),
            Decision::Queued
        );
        assert_eq!(a.drain().len(), 1);
        assert_eq!(a.active("k2"), None);
    }

    #[test]
    fn a_run_serves_a_firing_incident_until_every_incident_it_serves_resolved() {
        let mut admission = admission();
        let now = Instant::now();
        let candidate = |incident| Candidate {
            key: "k",
            incident: Some(incident),
            runbook: "r",
            cooldown: None,
        };
        assert_eq!(
            admission.admit_incident(now, &candidate("a@1"), id("run-1"), ()),
            Decision::Queued
        );
        assert_eq!(
            admission.admit_incident(now, &candidate("b@1"), id("run-2"), ()),
            Decision::Duplicate {
                run: "run-1".to_owned()
            }
        );
        assert!(matches!(
            admission.resolve(now, "k", "b@1", Duration::ZERO),
            Resolution::StillNeeded
        ));
        assert!(admission.serves_firing_incident("run-1"), "a@1 still fires");
        // A late resolve of an incident this run never served changes nothing.
        admission.incident_resolved(now, "k", "a@0", Duration::ZERO);
        assert!(admission.serves_firing_incident("run-1"));
        assert!(matches!(
            admission.resolve(now, "k", "a@1", Duration::ZERO),
            Resolution::Cancelled(queued) if queued.run == "run-1"
        ));
        assert!(!admission.serves_firing_incident("run-1"));

        // A run that never started forgets its incidents: their repeats may run again.
        assert_eq!(
            admission.admit_incident(now, &candidate("c@1"), id("run-3"), ()),
            Decision::Queued
        );
        admission.cancel("k");
        admission.forget_incidents_of("run-3");
        assert_eq!(
            admission.admit_incident(now, &candidate("c@1"), id("run-4"), ()),
            Decision::Queued
        );
    }

    #[test]
    fn an_incident_starts_one_run_however_often_it_is_repeated() {
        let mut a = admission();
        let t0 = Instant::now();
        let cooldown = Some(Duration::from_secs(60));
        let first = Candidate {
            key: "k",
            incident: Some("fp@03:00"),
            runbook: "rb",
            cooldown,
        };
        assert_eq!(a.admit_incident(t0, &first, id("r1"), ()), Decision::Queued);
        a.next(t0);
        a.finished("k", "r1");
        // Long after the cooldown, a repeat of the same incident.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(
            a.admit_incident(later, &first, id("r2"), ()),
            Decision::SameIncident { run: "r1".into() }
        );
        // A new incident of the key may run; its own repeats join it.
        let second = Candidate {
            incident: Some("fp@04:00"),
            ..first
        };
        assert_eq!(
            a.admit_incident(later, &second, id("r3"), ()),
            Decision::Queued
        );
        a.next(later);
        a.finished("k", "r3");
        a.incident_resolved(later, "k", "fp@04:00", Duration::ZERO);
        let much_later = later + INCIDENT_RETENTION + Duration::from_secs(61);
        assert_eq!(a.incidents(), 2);
        assert_eq!(
            a.admit_incident(much_later, &second, id("r4"), ()),
            Decision::Queued,
            "a resolved incident is forgotten after its retention"
        );
        assert_eq!(a.incidents(), 2, "fp@03:00 never resolved; r4's is new");
    }
}
