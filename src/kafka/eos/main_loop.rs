//! The main loop: one iteration per poll, in order — stop on a fatal error, commit and leave on
//! shutdown, recover from a failed transaction (abort, rewind, back off), commit a full or old
//! batch, let an idle stateful transform emit what is due, then poll and process one message.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

use super::engine::{lock, Engine, Txn};
use super::rebalance::Ctx;
use super::watchdog::Phase;
use super::{EosError, Settings, Transform, MAX_POLL};
use crate::kafka;
use crate::retry::Backoff;

pub(super) fn main_loop<T: Transform>(
    consumer: &BaseConsumer<Ctx<T>>,
    engine: &Arc<Mutex<Engine<T>>>,
    settings: &Settings,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), EosError> {
    let stage = settings.stage;
    let mut last_tick = Instant::now();
    // Since when polls have returned nothing (caught up).
    let mut idle_since: Option<Instant> = None;
    // When the loop may next try to recover (abort / rewind) after a failure.
    let mut retry_at: Option<Instant> = None;
    let watch = lock(engine).watch.clone();
    loop {
        let mut eng = lock(engine);
        if let Some(m) = &eng.fatal {
            tracing::error!(stage, error = %m, "stopping: fatal error");
            return Err(EosError::Fatal(m.clone()));
        }
        if shutdown.is_cancelled() {
            watch.enter(Phase::Shutdown);
            return commit_on_shutdown(&mut eng, consumer);
        }

        // Recovering from a failed transaction: abort, then rewind, with backoff in between.
        if eng.txn == Txn::NeedsAbort || eng.rewind_pending {
            watch.enter(Phase::Recover);
            let rewound = recover(&mut eng, consumer, &mut retry_at, backoff);
            drop(eng);
            match rewound {
                // Back off once before reading again, without discarding anything.
                Some(wait) => sleep_polling_nothing(wait, shutdown),
                // Keep polling (group membership, callbacks) and discard: the rewind reads it again.
                None => {
                    let _ = consumer.poll(MAX_POLL);
                }
            }
            continue;
        }

        // Commit when the batch is full or old enough.
        if batch_due(&mut eng, consumer, settings, idle_since.is_some()) {
            watch.enter(Phase::Commit);
            match eng.commit(consumer) {
                Ok(()) => backoff.reset(),
                Err(f) => {
                    eng.fail(f);
                    continue;
                }
            }
        }

        // Idle tick: let a stateful transform emit what is due.
        if eng.txn == Txn::Idle && last_tick.elapsed() >= settings.batch_max_age {
            last_tick = Instant::now();
            watch.enter(Phase::Idle);
            if let Err(f) = eng.flush_idle(consumer) {
                eng.fail(f);
                continue;
            }
            // Caught up for a while: commit past the transaction markers (lag reads 0).
            if idle_since.is_some_and(|t| t.elapsed() >= settings.batch_max_age) {
                if let Err(f) = eng.commit_positions(consumer) {
                    eng.fail(f);
                    continue;
                }
            }
        }

        let timeout = poll_timeout(&eng, settings);
        drop(eng);

        crate::observability::server::report_consumer(consumer);
        // The rebalance callback may run inside poll; it takes the engine lock itself.
        watch.enter(Phase::Poll);
        let Some(polled) = consumer.poll(timeout) else {
            idle_since.get_or_insert_with(Instant::now);
            continue;
        };
        idle_since = None;
        watch.enter(Phase::Process);
        handle(&mut lock(engine), polled, stage);
    }
}

/// Shutdown: commits the batch in hand, then the loop ends.
fn commit_on_shutdown<T: Transform>(
    eng: &mut Engine<T>,
    consumer: &BaseConsumer<Ctx<T>>,
) -> Result<(), EosError> {
    if eng.txn == Txn::Open {
        if let Err(f) = eng.commit(consumer) {
            eng.fail(f);
        }
    }
    if let Some(m) = &eng.fatal {
        return Err(EosError::Fatal(m.clone()));
    }
    tracing::info!(
        stage = eng.stage,
        records = eng.stats.records_in,
        "shutdown: batch in hand committed"
    );
    Ok(())
}

/// One recovery step, when `retry_at` has come: abort, then rewind. `Some(wait)`: rewound, back
/// off `wait` before reading again; `None`: not yet (`retry_at` is set for the next try).
fn recover<T: Transform>(
    eng: &mut Engine<T>,
    consumer: &BaseConsumer<Ctx<T>>,
    retry_at: &mut Option<Instant>,
    backoff: &mut Backoff,
) -> Option<Duration> {
    if retry_at.is_none_or(|t| Instant::now() >= t) {
        eng.try_abort();
        if eng.txn == Txn::Idle {
            match eng.rewind(consumer) {
                Ok(()) => {
                    *retry_at = None;
                    return Some(backoff.next_delay());
                }
                Err(m) => {
                    tracing::warn!(stage = eng.stage, error = %m, "rewind failed; will retry")
                }
            }
        }
        *retry_at = Some(Instant::now() + backoff.next_delay());
    }
    None
}

/// Whether the open transaction should commit now: full (`batch_size`), or old enough.
/// - Caught up (the last poll returned nothing): at `batch_max_age`.
/// - Under a backlog: at least as long as the previous commit took (at most [`STRETCH_MAX`]),
///   so that commits take at most half of the loop's time: on a replicated cluster a commit
///   takes 100-350 ms, and transactions closed every 50 ms spent most of the run committing.
/// - And if, when it reaches that age, the input already holds the rest of a full batch
///   (librdkafka's cached high watermarks minus the positions read), it fills up to
///   `batch_size`, for at most [`STRETCH_MAX`] and only while polls keep returning records.
///   Those records wait in any case; closing early only made a slower stage pay more commits
///   per record than a fast one (clean: 82 transactions for 300 000 records against 35 for
///   the pass-through with the same settings).
fn batch_due<T: Transform, C: ConsumerContext>(
    eng: &mut Engine<T>,
    consumer: &BaseConsumer<C>,
    settings: &Settings,
    caught_up: bool,
) -> bool {
    if eng.txn != Txn::Open {
        return false;
    }
    if eng.batch_in >= settings.batch_size as u64 {
        return true;
    }
    let rest = settings.batch_size as u64 - eng.batch_in;
    let positions = &eng.positions;
    due_by_age(
        eng.batch_started.elapsed(),
        max_age(settings.batch_max_age, eng.last_commit, caught_up),
        caught_up,
        &mut eng.fill,
        || backlog(consumer, positions) >= rest,
    )
}

/// A batch that is not full: due once `age` reaches `max_age` — unless the consumer is not
/// caught up and the input holds the rest of a full batch (`holds_rest`, asked once per
/// transaction, the answer kept in `fill`), then at [`STRETCH_MAX`].
fn due_by_age(
    age: Duration,
    max_age: Duration,
    caught_up: bool,
    fill: &mut Option<bool>,
    holds_rest: impl FnOnce() -> bool,
) -> bool {
    if age < max_age {
        return false;
    }
    if caught_up || age >= STRETCH_MAX {
        return true;
    }
    !*fill.get_or_insert_with(holds_rest)
}

/// Records waiting in the partitions read so far: each one's cached high watermark minus the
/// next offset to read (for a read_committed consumer an upper bound: it counts open
/// transactions' records and markers too, which is why a fill also ends at the first empty
/// poll).
fn backlog<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    positions: &[(String, i32, i64)],
) -> u64 {
    positions
        .iter()
        .filter_map(|(t, p, next)| {
            kafka::cached_watermarks(consumer.client(), t, *p)
                .map(|(_, high)| (high - next).max(0) as u64)
        })
        .sum()
}

/// The longest a batch collects under a backlog, however slow the commits.
const STRETCH_MAX: Duration = Duration::from_secs(1);

fn max_age(batch_max_age: Duration, last_commit: Duration, caught_up: bool) -> Duration {
    if caught_up {
        batch_max_age
    } else {
        batch_max_age.max(last_commit.min(STRETCH_MAX))
    }
}

/// Polls no longer than the open transaction may still collect messages; a filling one waits
/// up to `batch_max_age` for the records it expects (nothing by then: caught up, it commits).
fn poll_timeout<T: Transform>(eng: &Engine<T>, settings: &Settings) -> Duration {
    if eng.txn == Txn::Open && eng.fill == Some(true) {
        STRETCH_MAX
            .saturating_sub(eng.batch_started.elapsed())
            .min(settings.batch_max_age)
            .min(MAX_POLL)
    } else if eng.txn == Txn::Open {
        settings
            .batch_max_age
            .saturating_sub(eng.batch_started.elapsed())
            .min(MAX_POLL)
    } else {
        MAX_POLL
    }
}

/// What a poll returned: a message to process, or a consumer error to report.
fn handle<T: Transform>(
    eng: &mut Engine<T>,
    polled: KafkaResult<BorrowedMessage<'_>>,
    stage: &'static str,
) {
    match polled {
        Err(e) => {
            // Consumer errors are reports (broker down, partition EOF...): librdkafka
            // recovers by itself; positions did not move.
            tracing::warn!(stage, error = %e, "consumer error");
        }
        Ok(msg) => {
            if eng.rewind_pending || eng.txn == Txn::NeedsAbort {
                return; // a revoke callback failed the transaction: read again after the rewind
            }
            if let Err(f) = eng.process(&msg) {
                eng.fail(f);
            }
        }
    }
}

/// Sleeps `wait` in short steps, returning early on shutdown.
fn sleep_polling_nothing(wait: Duration, shutdown: &CancellationToken) {
    let until = Instant::now() + wait;
    while Instant::now() < until && !shutdown.is_cancelled() {
        std::thread::sleep(MAX_POLL.min(until.saturating_duration_since(Instant::now())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_fills_past_its_age_only_under_a_backlog_holding_the_rest_of_it() {
        let ms = Duration::from_millis;
        let asked = std::cell::Cell::new(0);
        let due = |age, caught_up, fill: &mut Option<bool>, holds: bool| {
            due_by_age(ms(age), ms(50), caught_up, fill, || {
                asked.set(asked.get() + 1);
                holds
            })
        };
        // Younger than its age: not due, and the backlog is not looked at.
        let mut fill = None;
        assert!(!due(10, false, &mut fill, true));
        assert_eq!((fill, asked.get()), (None, 0));
        // Of age with the rest of a full batch waiting: it fills, asked once per transaction.
        assert!(!due(50, false, &mut fill, true));
        assert!(!due(400, false, &mut fill, false));
        assert_eq!((fill, asked.get()), (Some(true), 1));
        // ...until a poll comes back empty, or for at most STRETCH_MAX.
        assert!(due(400, true, &mut fill, true));
        assert!(due(1_000, false, &mut fill, true));
        // Of age without such a backlog: due at once.
        let mut fill = None;
        assert!(due(50, false, &mut fill, false));
        // Caught up: due at its age, the backlog not asked.
        let mut fill = None;
        assert!(due(50, true, &mut fill, true));
        assert_eq!((fill, asked.get()), (None, 2));
    }

    #[test]
    fn a_batch_collects_as_long_as_the_last_commit_took_only_under_a_backlog() {
        let ms = Duration::from_millis;
        // Commits faster than the batch age (one broker): the age is the setting.
        assert_eq!(max_age(ms(50), ms(8), false), ms(50));
        // Slow commits (a replicated cluster) under a backlog: at least the commit's time...
        assert_eq!(max_age(ms(50), ms(180), false), ms(180));
        // ...at most STRETCH_MAX...
        assert_eq!(max_age(ms(50), ms(5_000), false), STRETCH_MAX);
        // ...and never when caught up: a trickle commits at batch_max_age.
        assert_eq!(max_age(ms(50), ms(180), true), ms(50));
    }
}
