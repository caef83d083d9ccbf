//! The admission ledger of one runbook, shared by every replica of `runbook serve
//! --cluster-state`: which of its keys (runbook and bound params) has a run queued or going
//! on, when each key's last run was admitted (its cooldown), and when the runbook's recent
//! runs were admitted (its cap per window).
//!
//! It is the same rules as [`crate::admission`] (which a single server keeps in memory), as a
//! value that is read, decided on and written back whole: the caller stores it in one object
//! through the API server and writes it with the resourceVersion it read, so two replicas
//! deciding at once cannot both admit (one write is refused with 409 and decides again on what
//! the other wrote). Incidents are not in it: each run's object is named by its incident, so
//! the API server's answer to a second create is the deduplication of incidents.
//!
//! Times are wall-clock milliseconds since the Unix epoch, since replicas share no monotonic
//! clock; a replica's clock that is off shortens or stretches a cooldown by as much.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admission::Decision;

/// Keys remembered at most, with a run or a cooldown; past it, the oldest keys without a run go
/// first (their cooldown is forgotten), and a ledger full of keys with runs refuses more (as
/// capped), so the object stays far below the API server's size limit.
pub const KEY_CAPACITY: usize = 5_000;

/// One runbook's admission state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    #[serde(default)]
    pub keys: BTreeMap<String, KeyEntry>,
    /// When the runbook's runs within the window were admitted, oldest first.
    #[serde(default)]
    pub admitted: Vec<u64>,
}

/// One key's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyEntry {
    /// The run queued or going on for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// The key's last run, and when it was admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    #[serde(default)]
    pub admitted_at: u64,
    /// Until when its cooldown holds (0: none).
    #[serde(default)]
    pub cooldown_until: u64,
}

/// What an alert asks of the ledger.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    pub key: &'a str,
    /// The name the run gets if it is admitted.
    pub run: &'a str,
    pub cooldown: Option<Duration>,
    /// Runs the runbook may start per `window`.
    pub cap: usize,
    pub window: Duration,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Ledger {
    /// Decides about one alert at `now` (milliseconds since the epoch) and, if it is admitted,
    /// records it. Never answers `QueueFull` or `SameIncident`: the queue is the replica's, and
    /// incidents are the run objects' names.
    pub fn decide(&mut self, now: u64, ask: &Ask<'_>) -> Decision {
        self.forget(now, ask.window);
        if let Some(entry) = self.keys.get(ask.key) {
            if let Some(active) = &entry.active {
                return Decision::Duplicate {
                    run: active.clone(),
                };
            }
            if entry.cooldown_until > now {
                return Decision::CoolingDown {
                    run: entry.last.clone().unwrap_or_default(),
                    remaining: Duration::from_millis(entry.cooldown_until - now),
                };
            }
        }
        let full = self.keys.len() >= KEY_CAPACITY && !self.keys.contains_key(ask.key);
        if self.admitted.len() >= ask.cap || full {
            return Decision::Capped {
                cap: ask.cap,
                window: ask.window,
            };
        }
        self.admitted.push(now);
        self.keys.insert(
            ask.key.to_owned(),
            KeyEntry {
                active: Some(ask.run.to_owned()),
                last: Some(ask.run.to_owned()),
                admitted_at: now,
                cooldown_until: ask.cooldown.map_or(0, |c| now.saturating_add(millis(c))),
            },
        );
        Decision::Queued
    }

    /// The key's run `run` has ended (or will never start): a new alert for the key may start
    /// another once its cooldown is over. Whether anything changed (nothing to write if not).
    pub fn finished(&mut self, key: &str, run: &str) -> bool {
        match self.keys.get_mut(key) {
            Some(entry) if entry.active.as_deref() == Some(run) => {
                entry.active = None;
                true
            }
            _ => false,
        }
    }

    /// A run that was admitted and then withdrawn before it started (its run object could not
    /// be written): it neither holds the key nor counts against the cap or the cooldown.
    pub fn withdraw(&mut self, key: &str, run: &str) -> bool {
        let Some(entry) = self.keys.get(key) else {
            return false;
        };
        if entry.active.as_deref() != Some(run) {
            return false;
        }
        let at = entry.admitted_at;
        self.keys.remove(key);
        if let Some(position) = self.admitted.iter().rposition(|t| *t == at) {
            self.admitted.remove(position);
        }
        true
    }

    /// Drops what no rule needs any more: admissions older than the window, and keys with no
    /// run whose cooldown is over. Past the capacity, the oldest idle keys.
    fn forget(&mut self, now: u64, window: Duration) {
        let window = millis(window);
        self.admitted.retain(|at| now.saturating_sub(*at) < window);
        self.admitted.sort_unstable();
        self.keys
            .retain(|_, entry| entry.active.is_some() || entry.cooldown_until > now);
        if self.keys.len() >= KEY_CAPACITY {
            let mut idle: Vec<(u64, String)> = self
                .keys
                .iter()
                .filter(|(_, entry)| entry.active.is_none())
                .map(|(key, entry)| (entry.admitted_at, key.clone()))
                .collect();
            idle.sort();
            let excess = self.keys.len() + 1 - KEY_CAPACITY;
            for (_, key) in idle.into_iter().take(excess) {
                self.keys.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn ask<'a>(key: &'a str, run: &'a str, cooldown: Option<u64>) -> Ask<'a> {
        Ask {
            key,
            run,
            cooldown: cooldown.map(Duration::from_secs),
            cap: 2,
            window: HOUR,
        }
    }

    #[test]
    fn a_key_with_a_run_going_on_joins_it_and_is_free_once_it_finished() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.decide(1_000, &ask("k", "r1", None)),
            Decision::Queued
        );
        assert_eq!(
            ledger.decide(2_000, &ask("k", "r2", None)),
            Decision::Duplicate { run: "r1".into() }
        );
        assert!(ledger.finished("k", "r1"));
        assert!(!ledger.finished("k", "r1"), "nothing left to write");
        assert_eq!(
            ledger.decide(3_000, &ask("k", "r3", None)),
            Decision::Queued
        );
    }

    #[test]
    fn the_cooldown_counts_from_the_admission_and_survives_a_round_trip_through_json() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.decide(0, &ask("k", "r1", Some(600))),
            Decision::Queued
        );
        ledger.finished("k", "r1");
        let mut read: Ledger =
            serde_json::from_str(&serde_json::to_string(&ledger).expect("json")).expect("read");
        assert_eq!(
            read.decide(100_000, &ask("k", "r2", Some(600))),
            Decision::CoolingDown {
                run: "r1".into(),
                remaining: Duration::from_secs(500)
            }
        );
        assert_eq!(
            read.decide(600_000, &ask("k", "r3", Some(600))),
            Decision::Queued
        );
    }

    #[test]
    fn a_runbook_is_capped_per_window_and_old_admissions_are_forgotten() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.decide(0, &ask("a", "r1", None)), Decision::Queued);
        assert_eq!(ledger.decide(1, &ask("b", "r2", None)), Decision::Queued);
        assert_eq!(
            ledger.decide(2, &ask("c", "r3", None)),
            Decision::Capped {
                cap: 2,
                window: HOUR
            }
        );
        ledger.finished("a", "r1");
        ledger.finished("b", "r2");
        assert_eq!(
            ledger.decide(3_600_000, &ask("c", "r3", None)),
            Decision::Queued,
            "the first admission left the window"
        );
        assert_eq!(ledger.admitted, vec![1, 3_600_000]);
        assert!(
            !ledger.keys.contains_key("a"),
            "an idle key without cooldown is dropped"
        );
    }

    #[test]
    fn a_withdrawn_admission_neither_holds_the_key_nor_counts() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.decide(5, &ask("k", "r1", Some(600))),
            Decision::Queued
        );
        assert!(ledger.withdraw("k", "r1"));
        assert!(ledger.admitted.is_empty());
        assert_eq!(
            ledger.decide(6, &ask("k", "r2", Some(600))),
            Decision::Queued
        );
        assert!(!ledger.withdraw("k", "r1"), "not the key's run any more");
    }

    #[test]
    fn a_full_ledger_drops_its_oldest_idle_keys_and_refuses_when_all_are_busy() {
        let mut ledger = Ledger::default();
        fn wide(key: &str) -> Ask<'_> {
            Ask {
                key,
                run: key,
                cooldown: Some(HOUR),
                cap: usize::MAX,
                window: HOUR,
            }
        }
        for n in 0..KEY_CAPACITY {
            let key = format!("k{n}");
            assert_eq!(ledger.decide(n as u64, &wide(&key)), Decision::Queued);
        }
        assert!(matches!(
            ledger.decide(KEY_CAPACITY as u64, &wide("one-more")),
            Decision::Capped { .. }
        ));
        ledger.finished("k0", "k0");
        assert_eq!(
            ledger.decide(KEY_CAPACITY as u64, &wide("one-more")),
            Decision::Queued
        );
        assert!(
            !ledger.keys.contains_key("k0"),
            "the oldest idle key made room"
        );
    }
}
