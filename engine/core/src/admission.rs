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
}

impl<T> Admission<T> {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            keys: HashMap::new(),
            started: HashMap::new(),
            queue: VecDeque::new(),
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
        if let Some(state) = self.keys.get(key) {
            if let Some(active) = &state.active {
                return Decision::Duplicate {
                    run: active.clone(),
                };
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
        self.keys.entry(key.to_owned()).or_default().active = Some(run.clone());
        self.queue.push_back(Queued {
            run,
            key: key.to_owned(),
            runbook: runbook.to_owned(),
            item,
        });
        Decision::Queued
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
}
