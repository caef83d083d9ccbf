//! A Ctrl-C, a termination or a drain, delivered to a running executor.

/// A Ctrl-C or a termination (SIGTERM), delivered to a running executor; or a drain (a server
/// shutting down).
#[derive(Default)]
pub struct Interrupt {
    raised: std::sync::atomic::AtomicBool,
    /// What terminated the run, when nobody stands behind the interrupt to be asked whether to
    /// roll back (SIGTERM from a supervisor, not a human's Ctrl-C).
    terminated: std::sync::Mutex<Option<String>>,
    notify: tokio::sync::Notify,
    /// Why the run is draining: no new step starts, steps in flight finish, and the run stops
    /// where it is, resumable, without undoing anything.
    draining: std::sync::Mutex<Option<String>>,
}

impl Interrupt {
    /// Ctrl-C: stop scheduling, cancel the steps in flight, and ask whoever is at the terminal
    /// whether to roll back.
    pub fn raise(&self) {
        self.raised.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// A termination (`by` such as `SIGTERM`): as [`Interrupt::raise`], but nobody is asked,
    /// so the run stops resumable and undoes nothing unless the run was told to in advance
    /// (`RunOptions::roll_back_on_interrupt`).
    pub fn terminate(&self, by: &str) {
        self.terminated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(|| by.to_owned());
        self.raise();
    }

    /// What terminated the run, if a termination did.
    pub fn terminated(&self) -> Option<String> {
        self.terminated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops the run gently: steps in flight finish, no new one starts, a gate that is waiting
    /// is left unanswered, and the journal records `by` as the reason. Nothing is undone:
    /// `runbook resume` goes on from there.
    pub fn drain(&self, by: &str) {
        self.draining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(|| by.to_owned());
        self.notify.notify_waiters();
    }

    /// Why the run is draining, if it is.
    pub fn draining(&self) -> Option<String> {
        self.draining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Resolves once the run is asked to drain (or interrupted).
    pub async fn drained(&self) {
        loop {
            let notified = self.notify.notified();
            if self.draining().is_some() || self.is_raised() {
                return;
            }
            notified.await;
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}
