//! `etl-pipe score`: cleaned records (`etl-pipe.cleaned`) → scored records (`etl-pipe.scored`) or
//! quarantine (`etl-pipe.quarantine`), with one quality report per window (`etl-pipe.quality`), exactly
//! once. It owns the windows, their evaluation (through [`crate::quality`]) and the routing;
//! the Kafka transactions are the shared loop in [`crate::kafka::eos`].
//!
//! **Windows.** One open window per input partition. A decoded record (or the dead letter of
//! an undecodable one) is *held* in its partition's window; nothing is produced for it yet.
//! The window closes when it holds `score.window_records` messages or has been open
//! `score.window_max_age`. At close the stage computes the [`QualityReport`] of its records
//! (missing ratios, PSI against the baseline, VIF) and, in the transaction that follows:
//! - PASS / WARN: every record to `scored` (the output schema: the same fields plus
//!   `quality_window` = the window id `<topic>/<partition>/<first offset>-<last offset>` and
//!   `quality_decision`);
//! - FAIL: every record to `quarantine`, original key, bytes and headers unchanged, plus the
//!   envelope (`etl.error.kind = quality_fail`, the reasons as the message, source
//!   topic/partition/offset, attempts) and `etl.quality.window`;
//! - the window's dead letters (`etl.error.kind` from [`CodecError::kind`]) to `dead-letter`;
//! - the report JSON to `quality`, key = the window id;
//! - the input offset after the window's last message.
//!
//! **Offsets.** Every transaction of the loop commits, per partition, the first offset of
//! the window still open there ([`Transform::held_from`]), never past a record not yet
//! emitted. A crash or an aborted transaction therefore re-reads the open windows' records
//! from Kafka (and the windows restart at the same offsets), and a record is emitted only
//! in the transaction that also moves the offset past it: each input message ends up in
//! exactly one of scored ∪ quarantine ∪ dead-letter, once.
//!
//! **Small windows.** A window closed by age may hold few rows; below
//! `score.drift_min_rows` its PSI and VIF are reported but not judged (their sampling noise
//! alone reaches the lines); missing and type-error ratios are judged in every window.
//!
//! The baseline is described in [`baseline`].
//!
//! Files: `transform` (the windows on the loop), `window` and `close` (a window and its
//! closing), `run` (set-up), [`config`] (`[score]`).
//!
//! [`QualityReport`]: crate::quality::QualityReport
//! [`Transform::held_from`]: crate::kafka::eos::Transform::held_from
pub mod baseline;
mod close;
pub mod config;
mod run;
mod transform;
mod window;

pub use config::ScoreConfig;
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
