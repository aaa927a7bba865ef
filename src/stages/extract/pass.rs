//! One pass: where each stream starts (a new pass, or resuming an unfinished one from its
//! checkpoints), and running the streams `concurrency` at a time into the sink until every
//! stream is done, a request fails, the credential is rejected, or shutdown.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{PassState, State};
use super::config::{ExtractConfig, PaginationMode};
use super::sink::{Msg, Sink};
use super::source::{Position, Stream};
use super::stream::{run_stream, Ctx, StreamEnd};
use super::{ExtractError, FailedRequest};

/// Where each stream starts in this pass, and the pass record.
pub(super) struct Plan {
    pub(super) pass: PassState,
    pub(super) new_pass: bool,
    pub(super) starts: Vec<(usize, Position, u64)>,
    pub(super) skipped: usize,
}

pub(super) fn plan(state: &State, streams: &[Stream], cfg: &ExtractConfig, fresh: bool) -> Plan {
    let resumable = state
        .pass
        .as_ref()
        .filter(|p| p.completed_at.is_none() && cfg.resume && !fresh);
    match resumable {
        Some(p) => {
            let mut starts = Vec::new();
            let mut skipped = 0;
            for (i, s) in streams.iter().enumerate() {
                match state.streams.get(&s.id).filter(|c| c.pass_id == p.pass_id) {
                    Some(c) if c.position == Position::Done => skipped += 1,
                    Some(c) => {
                        let compatible = matches!(
                            (&c.position, cfg.pagination.mode),
                            (Position::Page(_), PaginationMode::Page)
                                | (Position::Url(_), PaginationMode::NextLink)
                        );
                        if compatible {
                            starts.push((i, c.position.clone(), c.pages));
                        } else {
                            tracing::warn!(stream = %s.id, "checkpoint does not fit extract.pagination; stream starts over");
                            starts.push((i, Position::start(cfg, s), 0));
                        }
                    }
                    None => starts.push((i, Position::start(cfg, s), 0)),
                }
            }
            Plan {
                pass: p.clone(),
                new_pass: false,
                starts,
                skipped,
            }
        }
        None => Plan {
            pass: PassState {
                pass_id: uuid::Uuid::new_v4().to_string(),
                started_at: Utc::now(),
                completed_at: None,
                streams: streams.len(),
            },
            new_pass: true,
            starts: streams
                .iter()
                .enumerate()
                .map(|(i, s)| (i, Position::start(cfg, s), 0))
                .collect(),
            skipped: 0,
        },
    }
}

pub(super) struct PassOutcome {
    pub(super) result: Result<(), ExtractError>,
    pub(super) completed: bool,
    pub(super) cancelled: bool,
    pub(super) failed: Vec<FailedRequest>,
    pub(super) rejected: Option<(u16, String)>,
}

/// What the stream workers of one pass share.
#[derive(Clone)]
struct Shared {
    ctx: Arc<Ctx>,
    queue: Arc<Mutex<VecDeque<(usize, Position, u64)>>>,
    failed: Arc<Mutex<Vec<FailedRequest>>>,
    rejected: Arc<Mutex<Option<(u16, String)>>>,
    streams: Arc<Vec<Stream>>,
    cancel: CancellationToken,
}

pub(super) async fn run_pass(
    ctx: &Arc<Ctx>,
    sink: &mut Sink,
    streams: &[Stream],
    plan: Plan,
    cfg: &ExtractConfig,
    shutdown: &CancellationToken,
) -> PassOutcome {
    // Enough pages in flight to fill a transaction while the previous one commits, and no
    // more: each queued page holds its whole response body (docs/notes/bench-e2e.md, memory).
    let (tx, rx) = mpsc::channel::<Msg>((cfg.concurrency * 4).max(16));
    if plan.new_pass && tx.send(Msg::PassStart(plan.pass.clone())).await.is_err() {
        return PassOutcome {
            result: Err(ExtractError::Kafka("sink is gone".into())),
            completed: false,
            cancelled: false,
            failed: vec![],
            rejected: None,
        };
    }
    let shared = Shared {
        ctx: ctx.clone(),
        queue: Arc::new(Mutex::new(VecDeque::from(plan.starts))),
        failed: Arc::new(Mutex::new(Vec::new())),
        rejected: Arc::new(Mutex::new(None)),
        streams: Arc::new(streams.to_vec()),
        cancel: shutdown.child_token(),
    };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.concurrency.min(streams.len()).max(1) {
        workers.spawn(worker(shared.clone(), tx.clone()));
    }
    let sink_fut = sink.run(rx, cfg.commit_records, cfg.commit_interval);
    let workers_fut = async {
        let mut all_done = true;
        while let Some(r) = workers.join_next().await {
            all_done &= r.unwrap_or(false);
        }
        let leftover = shared.queue.lock().map(|q| q.len()).unwrap_or(1);
        let completed = all_done && leftover == 0 && !shared.cancel.is_cancelled();
        if completed {
            let mut p = plan.pass.clone();
            p.completed_at = Some(Utc::now());
            let _ = tx.send(Msg::PassDone(p)).await;
        }
        drop(tx);
        completed
    };
    let (sink_result, completed) = tokio::join!(sink_fut, workers_fut);
    if sink_result.is_err() {
        shared.cancel.cancel();
    }
    let failed = shared.failed.lock().map(|v| v.clone()).unwrap_or_default();
    let rejected = shared.rejected.lock().ok().and_then(|r| r.clone());
    PassOutcome {
        completed: completed && sink_result.is_ok(),
        cancelled: shutdown.is_cancelled(),
        result: sink_result,
        failed,
        rejected,
    }
}

/// Takes streams off the queue and runs them until the queue is empty or the pass is
/// cancelled. `true` when every stream it took ran to its end.
async fn worker(s: Shared, tx: mpsc::Sender<Msg>) -> bool {
    let mut all_done = true;
    loop {
        let next = s.queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some((i, pos, pages)) = next else { break };
        if s.cancel.is_cancelled() {
            all_done = false;
            break;
        }
        match run_stream(&s.ctx, &s.streams[i], pos, pages, &tx, &s.cancel).await {
            StreamEnd::Done => {}
            StreamEnd::Failed(f) => {
                all_done = false;
                if let Ok(mut v) = s.failed.lock() {
                    v.push(f);
                }
            }
            StreamEnd::Rejected { status, url } => {
                all_done = false;
                if let Ok(mut r) = s.rejected.lock() {
                    *r = Some((status, url));
                }
                // The credential is gone for every stream: stop the pass.
                s.cancel.cancel();
            }
            StreamEnd::Cancelled => {
                all_done = false;
                break;
            }
        }
    }
    all_done
}
