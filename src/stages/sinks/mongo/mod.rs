//! `sink-mongo`: scored records as whole MongoDB documents, effectively once.
//!
//! Each batch is one unordered `update` command (cut under 100 000 statements and 16 MiB),
//! one replacement upsert per record, `_id` from the record key: writing a batch again writes
//! the same documents. Per-document `writeErrors` go to the dead-letter topic; the Kafka
//! offsets are committed only after the command answered and the dead letters were
//! acknowledged. The MongoDB 8 `bulkWrite` command is not used: FerretDB does not
//! have it.
//!
//! Unordered statements may be applied in any order, so a batch keeps only the last record of
//! each key (the one an ordered replay would leave in place).
//!
//! Files: `config.rs` the `[mongo]` connection settings, `document.rs` records as documents,
//! `errors.rs` error classification, `commands.rs` the write commands and their replies,
//! `writer.rs` the [`MongoSink`] that writes batches.
mod commands;
mod config;
mod document;
mod errors;
mod writer;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{RecordDecoder, SinkConfig, SinkError};
use crate::record::RecordSchema;
use crate::settings::Common;

pub use config::MongoConfig;
pub use document::{document, to_bson, Target};
pub use writer::MongoSink;

pub const STAGE: &str = "sink-mongo";

/// `etl-pipe sink-mongo`: runs until `shutdown`, then finishes the batches in hand.
pub async fn run(
    cfg: &Common,
    sink: &SinkConfig,
    db: &MongoConfig,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    super::run_sink::<MongoSink>(cfg, sink, db, shutdown).await
}

/// [`run`] with a given schema and decoder.
pub async fn run_with(
    cfg: &Common,
    sink: &SinkConfig,
    db: &MongoConfig,
    schema: RecordSchema,
    codec: Arc<RecordDecoder>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    super::run_sink_with::<MongoSink>(cfg, sink, db, schema, codec, shutdown).await
}
