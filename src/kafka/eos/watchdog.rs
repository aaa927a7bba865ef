//! The loop's watchdog. Every call the loop makes may wait on a broker; ours are bounded
//! (the per-call timeouts, `kafka.transaction_timeout`), but librdkafka has waits of its own
//! (`send_offsets_to_transaction` waits on its internal request with no limit of its own), and
//! a stall inside one of them used to leave a stage silent: a CI run saw score print nothing
//! for three minutes after the broker coordinating its transactions stopped, and not even
//! react to SIGTERM.
//!
//! So the loop names the [`Phase`] it enters, and a thread of its own looks every second:
//! - a phase lasting longer than [`WARN_EVERY`] is logged at warn, naming the phase (and again
//!   every [`WARN_EVERY`]), so that a stall says where it is;
//! - one lasting longer than `stuck_after` (twice `kafka.transaction_timeout`: by then every
//!   bounded call has given up) marks the process not live — `/healthz` answers 503 and
//!   `etl_loop_stuck` is 1 — so that an orchestrator's liveness probe restarts the instance.
//!   A restart is safe: the new process's `init_transactions` with the same transactional id
//!   aborts whatever the stuck one left open.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::LoopTime;

/// How long one phase may last before the watchdog warns (and again every as long).
pub(super) const WARN_EVERY: Duration = Duration::from_secs(30);
/// How often the watchdog looks.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    /// Polling the consumer (rebalance callbacks run in here, see `Revoke`).
    Poll = 0,
    /// Transforming one message and producing its outputs.
    Process = 1,
    /// Committing a batch: transform flush, `send_offsets_to_transaction`, delivery,
    /// `commit_transaction`.
    Commit = 2,
    /// The idle tick: a stateful transform's flush, committing the positions.
    Idle = 3,
    /// Aborting a failed transaction and rewinding to the committed offsets.
    Recover = 4,
    /// The revoke callback committing the transaction in hand.
    Revoke = 5,
    /// Committing the batch in hand on shutdown.
    Shutdown = 6,
}

impl Phase {
    pub(super) fn name(self) -> &'static str {
        match self {
            Phase::Poll => "poll",
            Phase::Process => "process (transform and produce)",
            Phase::Commit => "commit (send_offsets_to_transaction, commit_transaction)",
            Phase::Idle => "idle tick (flush, commit positions)",
            Phase::Recover => "recover (abort, rewind)",
            Phase::Revoke => "revoke (commit before the partitions go)",
            Phase::Shutdown => "shutdown commit",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Process,
            2 => Phase::Commit,
            3 => Phase::Idle,
            4 => Phase::Recover,
            5 => Phase::Revoke,
            6 => Phase::Shutdown,
            _ => Phase::Poll,
        }
    }
}

/// The loop's side: cheap to clone, a few relaxed loads and stores per phase (only the loop's
/// thread writes them).
#[derive(Clone)]
pub(super) struct Watch {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Instant,
    phase: AtomicU8,
    /// When the phase was entered (µs since `origin`); every `enter` moves it, so the same
    /// phase entered again counts from zero.
    since_us: AtomicU64,
    /// Time spent in each phase so far (µs, indexed by `Phase as usize`).
    spent_us: [AtomicU64; PHASES],
    ended: AtomicBool,
}

/// How many [`Phase`]s there are.
const PHASES: usize = 7;

impl Watch {
    pub(super) fn new() -> Watch {
        Watch {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                phase: AtomicU8::new(Phase::Poll as u8),
                since_us: AtomicU64::new(0),
                spent_us: Default::default(),
                ended: AtomicBool::new(false),
            }),
        }
    }

    /// The loop enters `phase` now.
    /// The phase left is counted in [`Self::spent`].
    pub(super) fn enter(&self, phase: Phase) {
        let i = &self.inner;
        let now = i.origin.elapsed().as_micros() as u64;
        let left = &i.spent_us[i.phase.load(Ordering::Relaxed) as usize % PHASES];
        let was = now.saturating_sub(i.since_us.load(Ordering::Relaxed));
        left.store(left.load(Ordering::Relaxed) + was, Ordering::Relaxed);
        i.since_us.store(now, Ordering::Relaxed);
        i.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Where the loop's time went so far (the phase in hand counted up to now).
    pub(super) fn spent(&self) -> LoopTime {
        let i = &self.inner;
        let now = i.origin.elapsed().as_micros() as u64;
        let current = i.phase.load(Ordering::Relaxed) as usize % PHASES;
        let us = |p: Phase| {
            let mut t = i.spent_us[p as usize].load(Ordering::Relaxed);
            if p as usize == current {
                t += now.saturating_sub(i.since_us.load(Ordering::Relaxed));
            }
            Duration::from_micros(t)
        };
        LoopTime {
            poll: us(Phase::Poll),
            process: us(Phase::Process),
            commit: us(Phase::Commit) + us(Phase::Idle) + us(Phase::Revoke) + us(Phase::Shutdown),
            recover: us(Phase::Recover),
        }
    }

    /// The phase in hand and when it was entered (µs since the watch was made).
    fn current(&self) -> (Phase, u64) {
        let since = self.inner.since_us.load(Ordering::Relaxed);
        (
            Phase::from_u8(self.inner.phase.load(Ordering::Relaxed)),
            since,
        )
    }

    /// Starts the watchdog thread for `stage`; it ends when the returned guard is dropped.
    pub(super) fn spawn(&self, stage: &'static str, stuck_after: Duration) -> WatchGuard {
        let watch = self.clone();
        let started = std::thread::Builder::new()
            .name(format!("{stage}-watchdog"))
            .spawn(move || watch.run(stage, stuck_after));
        if let Err(e) = started {
            // Only the diagnostics are missing; the stage itself is fine.
            tracing::warn!(stage, error = %e, "cannot start the loop's watchdog thread");
        }
        WatchGuard {
            inner: self.inner.clone(),
        }
    }

    fn run(&self, stage: &'static str, stuck_after: Duration) {
        let health = crate::observability::health();
        let stuck_gauge = metrics::gauge!("etl_loop_stuck", "stage" => stage);
        stuck_gauge.set(0.0);
        let mut seen = (Phase::Poll, u64::MAX);
        let mut state = State::default();
        while !self.inner.ended.load(Ordering::Relaxed) {
            std::thread::sleep(CHECK_EVERY);
            let (phase, since) = self.current();
            if (phase, since) != seen {
                if state.stuck {
                    health.set_stuck(false);
                    stuck_gauge.set(0.0);
                    tracing::info!(
                        stage,
                        phase = seen.0.name(),
                        "the loop moved on: live again"
                    );
                }
                seen = (phase, since);
                state = State::default();
            }
            let now = self.inner.origin.elapsed().as_micros() as u64;
            let elapsed = Duration::from_micros(now.saturating_sub(since));
            let (warn, stuck) = state.step(elapsed, stuck_after);
            if stuck {
                health.set_stuck(true);
                stuck_gauge.set(1.0);
                tracing::error!(
                    stage,
                    phase = phase.name(),
                    elapsed = ?elapsed,
                    "the exactly-once loop is stuck: longer than twice kafka.transaction_timeout \
                     in one phase; /healthz now answers 503 so that the instance is restarted \
                     (safe: the restart aborts what this one left open)"
                );
            } else if warn {
                tracing::warn!(
                    stage,
                    phase = phase.name(),
                    elapsed = ?elapsed,
                    "the exactly-once loop has been in one phase for long: waiting on a broker \
                     call or a read-back"
                );
            }
        }
    }
}

/// What the watchdog has said about the phase in hand.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct State {
    warnings: u32,
    stuck: bool,
}

impl State {
    /// The phase has lasted `elapsed`: whether to warn now (once per [`WARN_EVERY`] passed)
    /// and whether it just became stuck (once, past `stuck_after`).
    fn step(&mut self, elapsed: Duration, stuck_after: Duration) -> (bool, bool) {
        let due = (elapsed.as_secs() / WARN_EVERY.as_secs().max(1)) as u32;
        let warn = due > self.warnings;
        if warn {
            self.warnings = due;
        }
        let stuck = !self.stuck && elapsed >= stuck_after;
        if stuck {
            self.stuck = true;
        }
        (warn, stuck)
    }
}

/// Ends the watchdog thread when dropped (within a second), and clears a stuck mark.
pub(super) struct WatchGuard {
    inner: Arc<Inner>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.inner.ended.store(true, Ordering::Relaxed);
        crate::observability::health().set_stuck(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_every_thirty_seconds_and_marks_stuck_once() {
        let stuck_after = Duration::from_secs(120);
        let mut s = State::default();
        let at = |s: &mut State, secs| s.step(Duration::from_secs(secs), stuck_after);
        assert_eq!(at(&mut s, 1), (false, false));
        assert_eq!(at(&mut s, 29), (false, false));
        assert_eq!(at(&mut s, 30), (true, false));
        assert_eq!(at(&mut s, 31), (false, false));
        assert_eq!(at(&mut s, 59), (false, false));
        assert_eq!(at(&mut s, 61), (true, false));
        // A check that came late (a busy machine) warns once, not once per period missed.
        assert_eq!(at(&mut s, 119), (true, false));
        // Stuck (logged as such, at error, instead of the warning due at the same time).
        assert_eq!(at(&mut s, 120), (true, true));
        assert_eq!(at(&mut s, 125), (false, false));
        assert_eq!(at(&mut s, 150), (true, false));
    }

    #[test]
    fn the_time_in_each_phase_is_summed_when_it_is_left() {
        let w = Watch::new();
        w.enter(Phase::Process);
        std::thread::sleep(Duration::from_millis(20));
        w.enter(Phase::Commit);
        std::thread::sleep(Duration::from_millis(10));
        w.enter(Phase::Process);
        std::thread::sleep(Duration::from_millis(20));
        w.enter(Phase::Idle);
        let t = w.spent();
        assert!(t.process >= Duration::from_millis(40), "{t:?}");
        assert!(t.commit >= Duration::from_millis(10), "{t:?}");
        assert!(t.commit < t.process, "{t:?}");
        assert_eq!(t.recover, Duration::ZERO);
        // The phase in hand counts up to now; nothing is counted twice.
        std::thread::sleep(Duration::from_millis(10));
        let later = w.spent();
        assert_eq!(later.process, t.process);
        assert!(
            later.commit >= t.commit + Duration::from_millis(10),
            "{later:?}"
        );
    }

    #[test]
    fn entering_a_phase_again_counts_from_zero() {
        let w = Watch::new();
        w.enter(Phase::Commit);
        let (p1, t1) = w.current();
        std::thread::sleep(Duration::from_millis(5));
        w.enter(Phase::Commit);
        let (p2, t2) = w.current();
        assert_eq!((p1, p2), (Phase::Commit, Phase::Commit));
        assert!(t2 > t1, "re-entering moves the start: {t1} -> {t2}");
        for p in 0..=6u8 {
            assert_eq!(Phase::from_u8(p) as u8, p);
        }
    }
}
