//! `etl-pipe score`: cleaned records (`etl-pipe.cleaned`) → scored records (`etl-pipe.scored`) or
//! quarantine (`etl-pipe.quarantine`), with one quality report per block of offsets
//! (`etl-pipe.quality`), exactly once. It owns the quality gate (through [`crate::quality`]) and
//! the routing; the Kafka transactions are the shared loop in [`crate::kafka::eos`].
//!
//! **The gate** (`lane`). Each record is judged on the trailing window of the last
//! `score.window_records` (N) decoded records of its partition, itself included: missing and
//! type-error ratios and PSI of that window (integer counts, updated record by record), plus
//! the VIF of the window as it stood at the start of the record's block (blocks are the
//! offset ranges `[k·N, (k+1)·N)`), and on the short trailing window of its last
//! `score.min_window_records` (M) records, where a shift shows sooner. A partition's first
//! M − 1 records wait for M and are judged then; no record is judged on fewer than M. The
//! verdict depends on the partition's records in order only — not on speed, batches or
//! restarts — and a record goes out in the transaction that reads it (after its partition's
//! first M − 1).
//! - PASS / WARN → `scored` (the output schema: the same fields plus `quality_window` = the
//!   window id `<topic>/<partition>/<first offset>-<last offset>`, `quality_decision`,
//!   `quality_reasons`);
//! - FAIL → by `score.policy` ([`Policy`]): `quarantine` (original key, bytes and headers
//!   plus the envelope, `etl.error.kind = quality_fail`), `flag` (to scored, marked FAIL), or
//!   `halt` (a fatal error naming the window and reasons; nothing from the record on
//!   commits);
//! - undecodable → `dead-letter` (`etl.error.kind` from [`CodecError::kind`]);
//! - when a record starts a new block, the report of the block before (its decisions, the
//!   worst verdict's reasons, the full figures of the trailing window at its end) → `quality`.
//!
//! **Offsets and restarts** (`history`). Every transaction commits, per partition, the first
//! offset not emitted yet ([`Transform::held_from`]): only a partition's first records wait.
//! An instance that takes a partition over (start, restart, rebalance, rewind after an abort)
//! rebuilds the gate by reading the records before the committed offset again, as many as
//! the window and the current block's VIF need: the state is recomputed from the input
//! offsets, nothing else is stored.
//!
//! The baseline is described in [`baseline`]; while it is being built from the first
//! records, every record waits.
//!
//! Files: `transform` (the gates on the loop), `lane` (one partition's gate), `history`
//! (reading back), `route` (outputs and reports), `window` (a held message), `run`
//! (set-up), [`config`] (`[score]`).
//!
//! [`Transform::held_from`]: crate::kafka::eos::Transform::held_from
pub mod baseline;
pub mod config;
mod history;
mod lane;
mod route;
mod run;
mod transform;
mod window;

pub use config::{Policy, ScoreConfig};
pub use lane::OfflineGate;
pub use run::{run, run_with_stats};
pub use transform::{Parts, ScoreTransform};

use crate::codec::CodecError;
use crate::kafka::eos::EosError;
use crate::kafka::headers as h;
use crate::settings::ConfigError;

/// The stage name: consumer group `<pipeline>.score`, metric label, `etl.error.stage`.
pub const STAGE: &str = "score";
/// Header naming the window a scored or quarantined record was evaluated in.
pub const WINDOW_HEADER: &str = "etl.quality.window";
/// Header with the decision of a scored record (`PASS`, `WARN`, or `FAIL` under `flag`).
pub const DECISION_HEADER: &str = "etl.quality.decision";
/// Header with the reasons of a WARN or FAIL, `; `-separated.
pub const REASONS_HEADER: &str = "etl.quality.reasons";
/// `etl.error.kind` of a quarantined record.
pub const QUALITY_FAIL: &str = "quality_fail";

/// Headers carried from a cleaned message to its scored record.
const KEEP_HEADERS: [&str; 3] = [h::TRACEPARENT, h::SOURCE, h::FETCHED_AT];
/// Every log line of the stage (its submodules included) goes under this one target.
const LOG_TARGET: &str = "etl_pipe::score";

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("baseline: {0}")]
    Baseline(String),
    #[error(transparent)]
    Eos(#[from] EosError),
}
