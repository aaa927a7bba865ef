//! `sink-mysql`: scored records into typed MySQL / MariaDB rows, exactly once.
//!
//! Each batch (one partition) is one database transaction: lock the partition's row in the
//! offsets table and check it still holds the offset this instance expects (a fence against
//! a second owner of the partition, and the way an ambiguous commit is resolved), multi-row
//! `INSERT ... ON DUPLICATE KEY UPDATE` statements, dead letters for the rows MySQL rejects as
//! data, then the new `next_offset`, then COMMIT. On assignment the consumer starts from the
//! offsets in this table, never from Kafka's committed offsets (those are written after the
//! commit, only so that lag shows in Kafdrop and the lag gauges).
//!
//! Statements go as prepared statements with bound values (`sink.mysql.protocol = "binary"`,
//! `bound.rs`) or as text with escaped literals under the session's own sql_mode (`text`);
//! either way they are cut at `rows_per_statement`, 65 535 / columns rows (the placeholder
//! limit), and `max_allowed_packet`.
//!
//! Files: `bound.rs` rows as bound values, `config.rs` the `[mysql]` connection settings, `server.rs` the pool and what the
//! server is, `types.rs` the type mapping, `json.rs` nested values as JSON text, `layout.rs` the table's columns, `ddl.rs` creating
//! and checking the table, `param.rs` values checked against their columns (and as SQL
//! literals), `sql.rs` statement text and row batches, `errors.rs` error classification,
//! `offsets.rs` the offsets table, `writer.rs` the [`MysqlSink`] that writes batches.
mod bound;
mod config;
mod cutoff;
mod ddl;
mod errors;
mod json;
mod layout;
mod offsets;
mod param;
mod server;
mod sql;
mod types;
mod writer;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{RecordDecoder, SinkConfig, SinkError};
use crate::record::RecordSchema;
use crate::settings::Common;

pub use config::{MysqlConfig, MysqlSslMode};
pub use ddl::ensure_table;
pub use errors::{classify, classify_number, ErrorClass};
pub use layout::{Column, Layout, Source};
pub use offsets::{ensure_offsets_table, store_offsets, stored_offsets};
pub use server::{connect, Flavor};
pub use sql::{ident, render_row, Row, RowBody, RowContext};
pub use types::{accepted_types, sql_type};
pub use writer::{MysqlSink, Prepared};

pub const STAGE: &str = "sink-mysql";

/// `etl-pipe sink-mysql`: runs until `shutdown`, then finishes the batches in hand.
pub async fn run(
    cfg: &Common,
    sink: &SinkConfig,
    db: &MysqlConfig,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    super::run_sink::<MysqlSink>(cfg, sink, db, shutdown).await
}

/// [`run`] with a given schema and decoder.
pub async fn run_with(
    cfg: &Common,
    sink: &SinkConfig,
    db: &MysqlConfig,
    schema: RecordSchema,
    codec: Arc<RecordDecoder>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    super::run_sink_with::<MysqlSink>(cfg, sink, db, schema, codec, shutdown).await
}

#[cfg(test)]
mod tests {
    use crate::record::{FieldSchema, FieldType, RecordSchema};

    /// The schema the unit tests of this folder build their layouts from.
    pub(super) fn schema() -> RecordSchema {
        let f = |name: &str, ty: FieldType, nullable: bool| FieldSchema {
            name: name.into(),
            ty,
            nullable,
            doc: None,
            default: None,
            aliases: Vec::new(),
        };
        RecordSchema {
            name: "etl.league.LeagueEntry".into(),
            aliases: Vec::new(),
            fields: vec![
                f("summoner_id", FieldType::String, false),
                f("wins", FieldType::Int, false),
                f("win_rate", FieldType::Double, true),
                f("fetched_at", FieldType::TimestampMillis, false),
            ],
            source: String::new(),
        }
    }
}
