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
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{self, doc, Bson, Document, RawArrayBuf, RawDocumentBuf};
use mongodb::options::{ClientOptions, Credential};
use tokio_util::sync::CancellationToken;

use super::batch::{self, Batch, BatchWriter, Outcome};
use super::{lineage, DeadLetters, MongoConfig, Rejected, SinkConfig, SinkError, SinkMessage};
use crate::record::{Record, RecordSchema, Value};
use crate::settings::Common;

pub const STAGE: &str = "sink-mongo";

/// Statements per `update` command at most (MongoDB's `maxWriteBatchSize`).
const MAX_STATEMENTS: usize = 100_000;
/// Bytes of statements per command: the 16 MiB BSON limit less room for the command itself.
const MAX_COMMAND_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;
/// Bytes of documents per command as sent: a command is copied a few times on its way out
/// (array, command, wire message), so 16 MiB commands cost ~50 MiB per partition in flight.
/// 1 MiB (~1 500 league documents) keeps that small; a bigger document still goes alone.
const CHUNK_BYTES: usize = 1024 * 1024;

/// Server error codes that say "try again" rather than "this document is bad".
fn transient_code(code: i32) -> bool {
    matches!(
        code,
        6 | 7 | 89 | 91 | 112 | 189 | 262 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436 | 50
    )
}

fn classify(e: &mongodb::error::Error, what: &'static str) -> SinkError {
    use mongodb::error::ErrorKind;
    let message = e.to_string();
    let retriable = e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
        || e.contains_label(mongodb::error::RETRYABLE_ERROR)
        || match e.kind.as_ref() {
            ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::DnsResolve { .. } => true,
            ErrorKind::Command(c) => transient_code(c.code),
            _ => false,
        };
    if retriable {
        SinkError::Retriable { what, message }
    } else {
        SinkError::Fatal { what, message }
    }
}

/// A record value as BSON: ints stay 32-bit, longs 64-bit, timestamps become BSON dates.
pub fn to_bson(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Boolean(b) => Bson::Boolean(*b),
        Value::Int(i) => Bson::Int32(*i),
        Value::Long(i) => Bson::Int64(*i),
        Value::Float(f) => Bson::Double(*f as f64),
        Value::Double(f) => Bson::Double(*f),
        Value::String(s) => Bson::String(s.clone()),
        Value::TimestampMillis(ms) => Bson::DateTime(bson::DateTime::from_millis(*ms)),
    }
}

/// The document of a record: `_id`, every field of the record, then the lineage fields.
pub fn document(
    key_field: Option<&str>,
    topic: &str,
    loaded_at: bson::DateTime,
    msg: &SinkMessage,
    record: &Record,
) -> Result<(Bson, Document), Rejected> {
    let id = match key_field {
        None => Bson::String(
            msg.key_str()
                .map_err(|e| Rejected {
                    index: 0,
                    kind: "missing_key",
                    message: e.to_string(),
                })?
                .to_string(),
        ),
        Some(k) => match record.get(k) {
            None | Some(Value::Null) => {
                return Err(Rejected {
                    index: 0,
                    kind: "missing_key",
                    message: format!("key field `{k}` is null or missing"),
                })
            }
            Some(v) => to_bson(v),
        },
    };
    let mut d = Document::new();
    d.insert("_id", id.clone());
    for (name, v) in &record.fields {
        d.insert(name.clone(), to_bson(v));
    }
    d.insert(
        lineage::TRACE_ID,
        msg.trace_id(Some(record))
            .map(Bson::String)
            .unwrap_or(Bson::Null),
    );
    d.insert(lineage::SOURCE_TOPIC, topic);
    d.insert(lineage::SOURCE_PARTITION, msg.partition);
    d.insert(lineage::SOURCE_OFFSET, msg.offset);
    d.insert(lineage::LOADED_AT, loaded_at);
    Ok((id, d))
}

/// A connected Mongo sink.
pub struct MongoSink {
    db: mongodb::Database,
    collection: String,
    key_field: Option<String>,
    codec: Arc<super::RecordDecoder>,
    dead_letters: Option<DeadLetters>,
    sink: SinkConfig,
    /// `sink.mongo.write_concurrency` permits: a batch is decoded and written holding one.
    writes: tokio::sync::Semaphore,
}

/// One upsert to send: the message's index in its batch, `_id`, the document and its size.
/// The document is kept as encoded BSON: a `Document` (one heap string and enum per field)
/// takes several times the memory, and a batch holds thousands of them.
struct Upsert {
    index: usize,
    id: Bson,
    doc: RawDocumentBuf,
    bytes: usize,
}

impl MongoSink {
    pub async fn new(
        sink: &SinkConfig,
        db: &MongoConfig,
        schema: &RecordSchema,
        codec: Arc<super::RecordDecoder>,
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
            let mut cred = Credential::default();
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
        let collection = sink
            .mongo
            .collection
            .clone()
            .unwrap_or_else(|| super::default_target_name(schema));
        tracing::info!(database = %db.database, %collection, "mongo sink ready");
        Ok(MongoSink {
            db: database,
            collection,
            key_field: sink.key_field.clone(),
            codec,
            dead_letters,
            sink: sink.clone(),
            writes: tokio::sync::Semaphore::new(sink.mongo.write_concurrency),
        })
    }

    pub fn collection(&self) -> mongodb::Collection<Document> {
        self.db.collection(&self.collection)
    }

    /// The upsert of one decoded record: its document encoded as BSON.
    fn upsert(
        &self,
        topic: &str,
        loaded_at: bson::DateTime,
        index: usize,
        m: &SinkMessage,
        decoded: Result<Record, Rejected>,
    ) -> Result<Upsert, Rejected> {
        let reject = |message: String| Rejected {
            index,
            kind: "mongo_write",
            message,
        };
        let (id, doc) = decoded.and_then(|r| {
            document(self.key_field.as_deref(), topic, loaded_at, m, &r).map_err(|mut e| {
                e.index = index;
                e
            })
        })?;
        let doc = RawDocumentBuf::from_document(&doc)
            .map_err(|e| reject(format!("the document cannot be encoded as BSON: {e}")))?;
        let bytes = doc.as_bytes().len();
        if bytes > MAX_COMMAND_BYTES {
            return Err(reject(format!(
                "the document is {bytes} bytes, above the 16 MiB limit"
            )));
        }
        Ok(Upsert {
            index,
            id,
            doc,
            bytes,
        })
    }

    /// Decodes a batch into upserts (the last record per key), and the rejected records.
    async fn prepare(
        &self,
        topic: &str,
        msgs: &[SinkMessage],
    ) -> Result<(Vec<Upsert>, Vec<Rejected>), SinkError> {
        let loaded_at = bson::DateTime::now();
        let mut rejected = Vec::new();
        let mut upserts: Vec<Upsert> = Vec::with_capacity(msgs.len());
        let mut by_key: HashMap<String, usize> = HashMap::with_capacity(msgs.len());
        super::decode_each(&*self.codec, msgs, |index, m, d| {
            match self.upsert(topic, loaded_at, index, m, d) {
                Ok(u) => match by_key.get(&u.id.to_string()) {
                    Some(&at) => upserts[at] = u,
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

    /// Sends the upserts; returns the documents MongoDB rejected. Transient per-document
    /// errors fail the call (the caller retries the whole batch: upserts are idempotent).
    async fn upsert_all(&self, upserts: &[Upsert]) -> Result<Vec<Rejected>, SinkError> {
        let mut rejected = Vec::new();
        let mut start = 0;
        while start < upserts.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < upserts.len()
                && end - start < MAX_STATEMENTS
                && (end == start || bytes + upserts[end].bytes + 64 <= CHUNK_BYTES)
            {
                bytes += upserts[end].bytes + 64;
                end += 1;
            }
            // Statements still to send, the next on top (order does not matter: one per key).
            // MongoDB answers an unordered update with `n` and the failed statements by index.
            // FerretDB stops at the first failing statement, omits `n` and reports a wrong
            // index: a reply that does not account for every statement is not trusted, the
            // part is split in halves and sent again (upserts: sending an applied statement
            // again is harmless) until each failure is one statement on its own.
            // Append first: one unordered `insert` lands every new document cheaply (FerretDB
            // runs each upsert statement as a lookup plus a write, ~100× slower). Documents
            // that already exist (a replay, a restart) or fail for any other reason go on
            // to the upserts below, which replace or reject them.
            let chunk: Vec<&Upsert> = upserts[start..end].iter().collect();
            let remaining = self.insert_new(&chunk).await?;
            let mut stack: Vec<Vec<&Upsert>> = if remaining.is_empty() {
                vec![]
            } else {
                vec![remaining]
            };
            while let Some(part) = stack.pop() {
                let (applied, failed) = self.update_command(&part).await?;
                let in_range = failed.iter().all(|(i, _)| *i < part.len());
                let reject = |u: &Upsert, message: String| Rejected {
                    index: u.index,
                    kind: "mongo_write",
                    message,
                };
                match applied {
                    Some(n) if failed.is_empty() && n >= part.len() => {}
                    Some(n) if in_range && n + failed.len() == part.len() => {
                        rejected.extend(failed.into_iter().map(|(i, m)| reject(part[i], m)))
                    }
                    _ if part.len() == 1 => match failed.into_iter().next() {
                        Some((_, m)) => rejected.push(reject(part[0], m)),
                        None => {
                            return Err(SinkError::Retriable {
                                what: "the update command",
                                message: "a statement was neither applied nor rejected".into(),
                            })
                        }
                    },
                    _ => {
                        let mut left = part;
                        let right = left.split_off(left.len() / 2);
                        stack.push(right);
                        stack.push(left);
                    }
                }
            }
            start = end;
        }
        Ok(rejected)
    }

    /// One unordered `insert` of the documents; returns those not inserted (every one when
    /// the reply does not account for each document).
    async fn insert_new<'a>(&self, todo: &[&'a Upsert]) -> Result<Vec<&'a Upsert>, SinkError> {
        // `document` puts `_id` first.
        let mut docs = RawArrayBuf::new();
        for u in todo {
            docs.push(u.doc.clone());
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append("insert", self.collection.as_str());
        cmd.append("ordered", false);
        cmd.append("documents", docs);
        let reply = self
            .db
            .run_raw_command(cmd)
            .await
            .map_err(|e| classify(&e, "the insert command"))?;
        if reply.get_document("writeConcernError").is_ok() {
            return Ok(todo.to_vec());
        }
        let inserted = match reply.get("n") {
            Some(Bson::Int32(n)) => *n as usize,
            Some(Bson::Int64(n)) => *n as usize,
            Some(Bson::Double(n)) => *n as usize,
            _ => return Ok(todo.to_vec()),
        };
        let mut failed = std::collections::BTreeSet::new();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors {
                match e.as_document().and_then(|d| d.get("index")) {
                    Some(Bson::Int32(i)) => {
                        failed.insert(*i as usize);
                    }
                    Some(Bson::Int64(i)) => {
                        failed.insert(*i as usize);
                    }
                    _ => return Ok(todo.to_vec()),
                }
            }
        }
        if inserted + failed.len() != todo.len() || failed.iter().any(|i| *i >= todo.len()) {
            return Ok(todo.to_vec());
        }
        Ok(failed.into_iter().map(|i| todo[i]).collect())
    }

    /// One `update` command: the number of statements applied (`n`, if the reply has it) and
    /// the rejected ones (by position in `todo`, as the server reports it).
    async fn update_command(
        &self,
        todo: &[&Upsert],
    ) -> Result<(Option<usize>, Vec<(usize, String)>), SinkError> {
        let mut updates = RawArrayBuf::new();
        for u in todo {
            let mut q = RawDocumentBuf::new();
            if let Ok(Some(id)) = u.doc.get("_id") {
                q.append_ref("_id", id);
            }
            let mut st = RawDocumentBuf::new();
            st.append("q", q);
            st.append("u", u.doc.clone());
            st.append("upsert", true);
            st.append("multi", false);
            updates.push(st);
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append("update", self.collection.as_str());
        cmd.append("ordered", false);
        cmd.append("updates", updates);
        let reply = self
            .db
            .run_raw_command(cmd)
            .await
            .map_err(|e| classify(&e, "the update command"))?;
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(SinkError::Retriable {
                what: "the update command",
                message: format!("write concern error: {wce}"),
            });
        }
        let applied = match reply.get("n") {
            Some(Bson::Int32(n)) => Some(*n as usize),
            Some(Bson::Int64(n)) => Some(*n as usize),
            Some(Bson::Double(n)) => Some(*n as usize),
            _ => None,
        };
        let mut failed = Vec::new();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors {
                let Some(e) = e.as_document() else { continue };
                let index = match e.get("index") {
                    Some(Bson::Int32(i)) => *i as usize,
                    Some(Bson::Int64(i)) => *i as usize,
                    _ => continue,
                };
                let code = match e.get("code") {
                    Some(Bson::Int32(c)) => *c,
                    Some(Bson::Int64(c)) => *c as i32,
                    _ => 0,
                };
                let msg = e.get_str("errmsg").unwrap_or("(no message)");
                if transient_code(code) {
                    return Err(SinkError::Retriable {
                        what: "the update command",
                        message: format!("MongoDB error {code}: {msg}"),
                    });
                }
                failed.push((index, format!("MongoDB error {code}: {msg}")));
            }
        }
        Ok((applied, failed))
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
        let _permit = self.writes.acquire().await.map_err(|e| SinkError::Fatal {
            what: "the write permit",
            message: e.to_string(),
        })?;
        let (upserts, mut rejected) = super::retry(
            "decoding a batch",
            self.sink.retry_max_backoff,
            &stop,
            || self.prepare(&batch.topic, &batch.messages),
        )
        .await?;
        let failed = super::retry(
            "writing a batch to MongoDB",
            self.sink.retry_max_backoff,
            &stop,
            || self.upsert_all(&upserts),
        )
        .await?;
        rejected.extend(failed);
        if !rejected.is_empty() {
            rejected.sort_by_key(|r| r.index);
            let dl = self.dead_letters.as_ref().ok_or(SinkError::Fatal {
                what: "dead-lettering",
                message: "no dead-letter producer".into(),
            })?;
            super::retry(
                "sending dead letters",
                self.sink.retry_max_backoff,
                &stop,
                || dl.send(&batch.topic, &batch.messages, &rejected),
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

/// `etl-pipe sink-mongo`: runs until `shutdown`, then finishes the batches in hand.
pub async fn run(
    cfg: &Common,
    sink: &SinkConfig,
    db: &MongoConfig,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let (schema, codec) = super::load_codec(cfg, sink).await?;
    run_with(cfg, sink, db, schema, codec, shutdown).await
}

/// [`run`] with a given schema and decoder.
pub async fn run_with(
    cfg: &Common,
    sink: &SinkConfig,
    db: &MongoConfig,
    schema: RecordSchema,
    codec: Arc<super::RecordDecoder>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    batch::connect_and_drive(cfg, sink, "connecting to MongoDB", shutdown, |dl| {
        MongoSink::new(sink, db, &schema, codec.clone(), Some(dl))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_every_field_and_lineage() {
        let msg = SinkMessage {
            partition: 1,
            offset: 9,
            key: Some(b"k1".to_vec()),
            payload: None,
            headers: None,
        };
        let mut r = Record::new();
        r.set("wins", Value::Int(3));
        r.set("fetched_at", Value::TimestampMillis(5));
        r.set("summoner_name", Value::Null);
        let (id, d) = document(None, "t", bson::DateTime::from_millis(0), &msg, &r).unwrap();
        assert_eq!(id, Bson::String("k1".into()));
        assert_eq!(d.get_i32("wins").unwrap(), 3);
        assert_eq!(d.get_datetime("fetched_at").unwrap().timestamp_millis(), 5);
        assert!(d.get("summoner_name").unwrap().as_null().is_some());
        assert_eq!(d.get_i64(lineage::SOURCE_OFFSET).unwrap(), 9);
        assert_eq!(d.get_i32(lineage::SOURCE_PARTITION).unwrap(), 1);
        assert_eq!(d.keys().next().unwrap(), "_id");
        let e = document(Some("nope"), "t", bson::DateTime::now(), &msg, &r).unwrap_err();
        assert_eq!(e.kind, "missing_key");
    }
}
