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
//!   aborts whatever the stuck one left open;
//! - [`EXIT_GRACE`] later, if the loop has still not moved, the process exits with
//!   [`STUCK_EXIT_CODE`], so that a supervisor without a liveness probe (Compose's
//!   `restart: on-failure`, systemd, the local harness) starts it again too. A stuck loop
//!   holds its lock and ignores SIGTERM, so exiting is the only way out; it is a crash as far
//!   as the data goes (the SIGKILL tests cover it).
//!
//! The loop also names the [`Call`] in hand inside a commit or a recovery, so that the warning
//! and the exit say which librdkafka call never returned.
//!
//! A single attempt of a transactional call (`send_offsets_to_transaction`,
//! `commit_transaction`, `abort_transaction`) that outlasts its own timeout by far is not
//! waited out that long: it is librdkafka ignoring its timeout, which it does in
//! `send_offsets_to_transaction` when the group coordinator's broker is stopped (the group
//! coordinator request waits for that broker to change state, and a broker that left the
//! metadata never does: librdkafka issues #5456 and #5511, open; the cluster test hit it in
//! every instance whose group the stopped node coordinated). Such an attempt, `overdue_after`
//! old (the longest librdkafka may legitimately take: the larger of the call's timeout and
//! `socket.timeout.ms`, plus a margin), marks the process not live and exits it at once.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::LoopTime;

/// How long one phase may last before the watchdog warns (and again every as long).
pub(super) const WARN_EVERY: Duration = Duration::from_secs(30);
/// How often the watchdog looks.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long `/healthz` answers 503 for a stuck loop before the process exits (a liveness probe
/// that restarts the instance first is the cleaner way out).
pub(super) const EXIT_GRACE: Duration = Duration::from_secs(15);
/// The exit code of a process whose loop was stuck (EX_TEMPFAIL: starting again is the cure).
pub const STUCK_EXIT_CODE: i32 = 75;

/// The call in hand inside a phase (none while transforming or polling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Call {
    None = 0,
    /// The transform's flush and producing its outputs (a topic's size limit may be looked up).
    Flush = 1,
    SendOffsets = 2,
    /// Waiting for every output's delivery report.
    Delivery = 3,
    CommitTransaction = 4,
    AbortTransaction = 5,
    /// Reading the committed offsets to rewind to.
    CommittedOffsets = 6,
}

impl Call {
    fn name(v: u8) -> &'static str {
        match v {
            1 => "transform flush and produce",
            2 => "send_offsets_to_transaction",
            3 => "waiting for delivery reports",
            4 => "commit_transaction",
            5 => "abort_transaction",
            6 => "committed offsets (rewind)",
            _ => "none",
        }
    }
}

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
    /// The [`Call`] in hand (reset by every `enter`).
    call: AtomicU8,
    /// When the librdkafka call attempt in hand started (µs since `origin`; `NO_ATTEMPT` when
    /// none is).
    attempt_us: AtomicU64,
    ended: AtomicBool,
}

/// How many [`Phase`]s there are.
const PHASES: usize = 7;
/// `attempt_us` when no call attempt is in hand.
const NO_ATTEMPT: u64 = u64::MAX;

impl Watch {
    pub(super) fn new() -> Watch {
        Watch {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                phase: AtomicU8::new(Phase::Poll as u8),
                since_us: AtomicU64::new(0),
                spent_us: Default::default(),
                call: AtomicU8::new(Call::None as u8),
                attempt_us: AtomicU64::new(NO_ATTEMPT),
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
        i.call.store(Call::None as u8, Ordering::Relaxed);
    }

    /// The loop makes `call` now (within the phase in hand).
    pub(super) fn calling(&self, call: Call) {
        self.inner.call.store(call as u8, Ordering::Relaxed);
    }

    /// An attempt of a bounded librdkafka call starts (`true`) or returned (`false`).
    pub(super) fn attempt(&self, started: bool) {
        let i = &self.inner;
        let v = if started {
            i.origin.elapsed().as_micros() as u64
        } else {
            NO_ATTEMPT
        };
        i.attempt_us.store(v, Ordering::Relaxed);
    }

    /// How long the call attempt in hand has been running, if one is.
    fn attempt_age(&self) -> Option<Duration> {
        let since = self.inner.attempt_us.load(Ordering::Relaxed);
        (since != NO_ATTEMPT).then(|| {
            let now = self.inner.origin.elapsed().as_micros() as u64;
            Duration::from_micros(now.saturating_sub(since))
        })
    }

    fn call_name(&self) -> &'static str {
        Call::name(self.inner.call.load(Ordering::Relaxed))
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
    /// `overdue_after`: how long one call attempt may run before it counts as ignoring its
    /// timeout.
    pub(super) fn spawn(
        &self,
        stage: &'static str,
        stuck_after: Duration,
        overdue_after: Duration,
    ) -> WatchGuard {
        let watch = self.clone();
        let started = std::thread::Builder::new()
            .name(format!("{stage}-watchdog"))
            .spawn(move || watch.run(stage, stuck_after, overdue_after));
        if let Err(e) = started {
            // Only the diagnostics are missing; the stage itself is fine.
            tracing::warn!(stage, error = %e, "cannot start the loop's watchdog thread");
        }
        WatchGuard {
            inner: self.inner.clone(),
        }
    }

    fn run(&self, stage: &'static str, stuck_after: Duration, overdue_after: Duration) {
        let health = crate::observability::health();
        let stuck_gauge = metrics::gauge!("etl_loop_stuck", "stage" => stage);
        stuck_gauge.set(0.0);
        let mut seen = (Phase::Poll, u64::MAX);
        let mut state = State::default();
        let mut exported = PhaseCounters::new(stage);
        while !self.inner.ended.load(Ordering::Relaxed) {
            std::thread::sleep(CHECK_EVERY);
            exported.report(self.spent());
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
            if let Some(age) = self.attempt_age().filter(|a| *a >= overdue_after) {
                health.set_stuck(true);
                stuck_gauge.set(1.0);
                tracing::error!(
                    stage,
                    phase = phase.name(),
                    call = self.call_name(),
                    attempt_running_for = ?age,
                    code = STUCK_EXIT_CODE,
                    "a librdkafka call has ignored its timeout (librdkafka #5456/#5511: a \
                     coordinator's broker stopped); exiting so that the supervisor starts the \
                     instance again with a fresh client (its transaction is aborted by the \
                     restart; nothing is lost)"
                );
                exit_stuck();
            }
            let (warn, stuck, give_up) = state.step(elapsed, stuck_after);
            if give_up {
                tracing::error!(
                    stage,
                    phase = phase.name(),
                    call = self.call_name(),
                    elapsed = ?elapsed,
                    code = STUCK_EXIT_CODE,
                    "the exactly-once loop is still stuck: exiting so that the supervisor starts \
                     the instance again (its transaction is aborted by the restart; nothing is \
                     lost)"
                );
                exit_stuck();
            }
            if stuck {
                health.set_stuck(true);
                stuck_gauge.set(1.0);
                tracing::error!(
                    stage,
                    phase = phase.name(),
                    call = self.call_name(),
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
                    call = self.call_name(),
                    "the exactly-once loop has been in one phase for long: waiting on a broker \
                     call or a read-back"
                );
            }
        }
        exported.report(self.spent());
    }
}

/// The loop's time per phase as counters ([`crate::observability::names::LOOP_PHASE_MICROSECONDS`]),
/// brought up to date by the watchdog each time it looks: each counter is increased by what its
/// phase gained since the last report.
struct PhaseCounters {
    counters: [metrics::Counter; 4],
    reported: [u64; 4],
}

impl PhaseCounters {
    const PHASES: [&'static str; 4] = ["poll", "process", "commit", "recover"];

    fn new(stage: &'static str) -> PhaseCounters {
        let name = crate::observability::names::LOOP_PHASE_MICROSECONDS;
        PhaseCounters {
            counters: Self::PHASES
                .map(|phase| metrics::counter!(name, "stage" => stage, "phase" => phase)),
            reported: [0; 4],
        }
    }

    fn report(&mut self, t: LoopTime) {
        let now = [t.poll, t.process, t.commit, t.recover].map(|d| d.as_micros() as u64);
        for ((c, was), now) in self.counters.iter().zip(&mut self.reported).zip(now) {
            c.increment(now.saturating_sub(*was));
            *was = (*was).max(now);
        }
    }
}

/// Ends the process with [`STUCK_EXIT_CODE`]. The loop's thread holds the engine: nothing to
/// clean up that a restart does not (dropping the client would wait on the stuck call).
fn exit_stuck() -> ! {
    // Give the log line a moment to reach its writer.
    std::thread::sleep(Duration::from_millis(200));
    std::process::exit(STUCK_EXIT_CODE)
}

/// What the watchdog has said about the phase in hand.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct State {
    warnings: u32,
    stuck: bool,
}

impl State {
    /// The phase has lasted `elapsed`: whether to warn now (once per [`WARN_EVERY`] passed),
    /// whether it just became stuck (once, past `stuck_after`) and whether it is time to give
    /// up (past `stuck_after` + [`EXIT_GRACE`], having been marked stuck first).
    fn step(&mut self, elapsed: Duration, stuck_after: Duration) -> (bool, bool, bool) {
        let due = (elapsed.as_secs() / WARN_EVERY.as_secs().max(1)) as u32;
        let warn = due > self.warnings;
        if warn {
            self.warnings = due;
        }
        let give_up = self.stuck && elapsed >= stuck_after + EXIT_GRACE;
        let stuck = !self.stuck && elapsed >= stuck_after;
        if stuck {
            self.stuck = true;
        }
        (warn, stuck, give_up)
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
    fn warns_every_thirty_seconds_marks_stuck_once_then_gives_up() {
        let stuck_after = Duration::from_secs(120);
        let mut s = State::default();
        let at = |s: &mut State, secs| s.step(Duration::from_secs(secs), stuck_after);
        assert_eq!(at(&mut s, 1), (false, false, false));
        assert_eq!(at(&mut s, 29), (false, false, false));
        assert_eq!(at(&mut s, 30), (true, false, false));
        assert_eq!(at(&mut s, 31), (false, false, false));
        assert_eq!(at(&mut s, 59), (false, false, false));
        assert_eq!(at(&mut s, 61), (true, false, false));
        // A check that came late (a busy machine) warns once, not once per period missed.
        assert_eq!(at(&mut s, 119), (true, false, false));
        // Stuck (logged as such, at error, instead of the warning due at the same time).
        assert_eq!(at(&mut s, 120), (true, true, false));
        assert_eq!(at(&mut s, 125), (false, false, false));
        // /healthz has answered 503 for EXIT_GRACE: time to exit.
        assert_eq!(
            at(&mut s, 120 + EXIT_GRACE.as_secs() - 1),
            (false, false, false)
        );
        assert_eq!(at(&mut s, 120 + EXIT_GRACE.as_secs()), (false, false, true));
        assert_eq!(at(&mut s, 150), (true, false, true));
    }

    #[test]
    fn a_call_attempt_is_timed_from_its_start_until_it_returns() {
        let w = Watch::new();
        assert_eq!(w.attempt_age(), None);
        w.attempt(true);
        std::thread::sleep(Duration::from_millis(20));
        let age = w.attempt_age().expect("an attempt is in hand");
        assert!(age >= Duration::from_millis(20), "{age:?}");
        w.attempt(false);
        assert_eq!(w.attempt_age(), None);
    }

    #[test]
    fn a_check_that_comes_late_marks_stuck_before_it_gives_up() {
        // The first check already past stuck_after + EXIT_GRACE (a machine that stalled the
        // watchdog too): the phase is marked stuck (/healthz 503) first, the exit comes at the
        // next check.
        let mut s = State::default();
        let late = Duration::from_secs(200);
        assert_eq!(s.step(late, Duration::from_secs(120)), (true, true, false));
        assert_eq!(s.step(late, Duration::from_secs(120)), (false, false, true));
    }

    #[test]
    fn the_call_in_hand_is_named_and_entering_a_phase_clears_it() {
        let w = Watch::new();
        w.enter(Phase::Commit);
        assert_eq!(w.call_name(), "none");
        w.calling(Call::SendOffsets);
        assert_eq!(w.call_name(), "send_offsets_to_transaction");
        w.calling(Call::CommitTransaction);
        assert_eq!(w.call_name(), "commit_transaction");
        w.enter(Phase::Poll);
        assert_eq!(w.call_name(), "none");
        for c in 0..=6u8 {
            assert_ne!(Call::name(c), "", "{c}");
        }
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
