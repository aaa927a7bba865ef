//! [`MongoSink`], the writer: connects, turns a batch into encoded upserts off the poll
//! thread (the last record per key), writes them, and dead-letters the documents MongoDB
//! rejects before the batch counts as written.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{self, doc, Document};
use mongodb::options::{ClientOptions, Credential};
use tokio_util::sync::CancellationToken;

use super::document::{version_number, Upsert};
use super::errors::classify;
use super::{MongoConfig, STAGE};
use crate::record::RecordSchema;
use crate::settings::Common;
use crate::stages::sinks::batch::{Batch, BatchWriter, Outcome};
use crate::stages::sinks::{
    check_rejected_share, decode_each, default_target_name, report_db, retry, version_field,
    Connect, DeadLetters, Phases, RecordDecoder, Rejected, SentDeadLetters, SinkConfig, SinkError,
    SinkMessage,
};

/// A connected Mongo sink.
pub struct MongoSink {
    pub(super) db: mongodb::Database,
    pub(super) collection: String,
    key_field: Option<String>,
    /// `sink.version_field`: a document is only replaced by the same or a newer version.
    pub(super) version_field: Option<String>,
    codec: Arc<RecordDecoder>,
    dead_letters: Option<DeadLetters>,
    sink: SinkConfig,
    /// `sink.mongo.write_concurrency` permits: a batch is decoded and written holding one.
    writes: tokio::sync::Semaphore,
    /// Most statements in one `update` command (see [`update_statements`]).
    pub(super) update_statements: usize,
}

/// Statements per `update` command on FerretDB: FerretDB 1.24 holds one backend connection
/// per statement until the command ends (its PostgreSQL pool has 50; SQLite's is smaller), so
/// a command with more statements than the pool has connections waits for ever for one it
/// holds itself, and every other client waits behind it. 8 was also the fastest size measured
/// there (≈ 700 updates/s, against 530 for 1 and 360 for 32).
pub const FERRETDB_UPDATE_STATEMENTS: usize = 8;

/// How many statements one `update` command may carry on this server: MongoDB takes up to
/// its `maxWriteBatchSize`; FerretDB (its `buildInfo` carries `ferretdbVersion`) only
/// [`FERRETDB_UPDATE_STATEMENTS`].
async fn update_statements(db: &mongodb::Database) -> Result<(usize, String), SinkError> {
    let info = db
        .run_command(doc! {"buildInfo": 1})
        .await
        .map_err(|e| classify(&e, "reading the server's buildInfo"))?;
    let version = info.get_str("version").unwrap_or("?").to_string();
    Ok(match info.get_str("ferretdbVersion") {
        Ok(f) => (
            FERRETDB_UPDATE_STATEMENTS,
            format!("FerretDB {f} (MongoDB {version})"),
        ),
        Err(_) => (
            super::commands::MAX_STATEMENTS,
            format!("MongoDB {version}"),
        ),
    })
}

impl MongoSink {
    /// Checks the key field against the schema, connects and reaches the database.
    pub async fn new(
        sink: &SinkConfig,
        db: &MongoConfig,
        schema: &RecordSchema,
        codec: Arc<RecordDecoder>,
        dead_letters: Option<DeadLetters>,
    ) -> Result<MongoSink, SinkError> {
        if let Some(k) = &sink.key_field {
            match schema.field(k) {
                Some(f) if !f.nullable => {}
                Some(_) => {
                    return Err(crate::settings::ConfigError::key(
                        "sink.key_field",
                        format!("`{k}` is nullable; a key field must not be"),
                    )
                    .into())
                }
                None => {
                    return Err(crate::settings::ConfigError::key(
                        "sink.key_field",
                        format!("`{k}` is not a field of schema {}", schema.name),
                    )
                    .into())
                }
            }
        }
        let mut opts = ClientOptions::parse(&db.uri)
            .await
            .map_err(|e| classify(&e, "parsing mongo.uri"))?;
        opts.app_name = Some(format!("etl-pipe {STAGE}"));
        opts.server_selection_timeout = Some(Duration::from_secs(10));
        if let Some(user) = &db.user {
            // An `authSource` / `authMechanism` from mongo.uri stays.
            let mut cred = opts.credential.take().unwrap_or_else(Credential::default);
            cred.username = Some(user.clone());
            if let Some(p) = &db.password {
                cred.password = Some(p.resolve("mongo.password")?.expose().to_string());
            }
            opts.credential = Some(cred);
        }
        let client =
            mongodb::Client::with_options(opts).map_err(|e| classify(&e, "creating the client"))?;
        let database = client.database(&db.database);
        database
            .run_command(doc! {"ping": 1})
            .await
            .map_err(|e| classify(&e, "reaching MongoDB"))?;
        let (update_statements, server) = update_statements(&database).await?;
        let ferretdb = update_statements == FERRETDB_UPDATE_STATEMENTS;
        super::document::check_schema(schema, !ferretdb, sink.mongo.decimals)
            .map_err(SinkError::Schema)?;
        let version_field = version_field(schema, sink)?;
        let collection = sink
            .mongo
            .collection
            .clone()
            .unwrap_or_else(|| default_target_name(schema));
        tracing::info!(database = %db.database, %collection, %server, update_statements, "mongo sink ready");
        Ok(MongoSink {
            db: database,
            collection,
            key_field: sink.key_field.clone(),
            version_field,
            codec,
            dead_letters,
            sink: sink.clone(),
            writes: tokio::sync::Semaphore::new(sink.mongo.write_concurrency),
            update_statements,
        })
    }

    pub fn collection(&self) -> mongodb::Collection<Document> {
        self.db.collection(&self.collection)
    }

    /// Decodes a batch into upserts (per key the newest version, the last of equal ones), and
    /// the rejected records. Unordered statements may apply in any order, so one per key.
    async fn prepare(
        &self,
        topic: &str,
        msgs: &[SinkMessage],
    ) -> Result<(Vec<Upsert>, Vec<Rejected>), SinkError> {
        let loaded_at = bson::DateTime::now();
        let mut rejected = Vec::new();
        let mut upserts: Vec<Upsert> = Vec::with_capacity(msgs.len());
        let mut by_key: HashMap<String, usize> = HashMap::with_capacity(msgs.len());
        let decimals = self.sink.mongo.decimals;
        decode_each(&*self.codec, msgs, |index, m, d| {
            let (key, version) = (self.key_field.as_deref(), self.version_field.as_deref());
            match Upsert::new(key, version, decimals, topic, loaded_at, index, m, d) {
                Ok(u) => match by_key.get(&u.id.to_string()) {
                    Some(&at) => {
                        let n = |u: &Upsert| u.version.as_ref().and_then(version_number);
                        if n(&u) >= n(&upserts[at]) {
                            upserts[at] = u;
                        }
                    }
                    None => {
                        by_key.insert(u.id.to_string(), upserts.len());
                        upserts.push(u);
                    }
                },
                Err(r) => rejected.push(r),
            }
        })
        .await?;
        Ok((upserts, rejected))
    }
}

impl BatchWriter for MongoSink {
    const STAGE: &'static str = STAGE;
    const OFFSETS_IN_KAFKA: bool = true;

    async fn start_offsets(
        &self,
        _topic: &str,
        _partitions: &[i32],
    ) -> Result<Option<HashMap<i32, i64>>, SinkError> {
        Ok(None)
    }

    async fn write(&self, batch: Batch, stop: CancellationToken) -> Result<Outcome, SinkError> {
        let Some(last) = batch.messages.last() else {
            return Ok(Outcome::Written {
                next_offset: 0,
                rows: 0,
                dead_letters: 0,
            });
        };
        let next_offset = last.offset + 1;
        // Never closed, so acquiring only waits.
        let mut phase = Phases::new();
        let _permit = self.writes.acquire().await.map_err(|e| SinkError::Fatal {
            what: "the write permit",
            message: e.to_string(),
        })?;
        phase.end("acquire");
        let (upserts, mut rejected) = retry(
            "decoding a batch",
            self.sink.retry_max_backoff,
            &stop,
            || self.prepare(&batch.topic, &batch.messages),
        )
        .await?;
        phase.end("prepare");
        let failed = retry(
            "writing a batch to MongoDB",
            self.sink.retry_max_backoff,
            &stop,
            || async {
                let limit = self.sink.mongo.write_timeout;
                let r = match tokio::time::timeout(limit, self.upsert_all(&upserts)).await {
                    Ok(r) => r,
                    Err(_) => Err(SinkError::Retriable {
                        what: "writing a batch to MongoDB",
                        message: format!("no answer within {limit:?} (sink.mongo.write_timeout)"),
                    }),
                };
                report_db(&r);
                r
            },
        )
        .await?;
        phase.end("insert");
        rejected.extend(failed);
        if !rejected.is_empty() {
            rejected.sort_by_key(|r| r.index);
            // Stops before any dead letter is sent or offset committed.
            check_rejected_share(&self.sink, &rejected, batch.messages.len())?;
            let dl = self.dead_letters.as_ref().ok_or(SinkError::Fatal {
                what: "dead-lettering",
                message: "no dead-letter producer".into(),
            })?;
            let sent = SentDeadLetters::default();
            retry(
                "sending dead letters",
                self.sink.retry_max_backoff,
                &stop,
                || dl.send(&batch.topic, &batch.messages, &rejected, &sent),
            )
            .await?;
        }
        Ok(Outcome::Written {
            next_offset,
            rows: batch.messages.len() - rejected.len(),
            dead_letters: rejected.len(),
        })
    }
}

impl Connect for MongoSink {
    type Db = MongoConfig;
    const CONNECTING: &'static str = "connecting to MongoDB";

    async fn connect(
        _cfg: &Common,
        sink: &SinkConfig,
        db: &MongoConfig,
        schema: &RecordSchema,
        codec: Arc<RecordDecoder>,
        dead_letters: DeadLetters,
    ) -> Result<MongoSink, SinkError> {
        MongoSink::new(sink, db, schema, codec, Some(dead_letters)).await
    }
}
