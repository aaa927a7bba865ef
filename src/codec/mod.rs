//! Avro encoding of cleaned and scored records: the binary datum, the framing on Kafka, and
//! resolution of data written with an older schema. It owns the bytes of `etl-pipe.cleaned` and
//! `etl-pipe.scored` messages.
//!
//! **Framing**: without a schema registry a message is Avro single-object encoded, `C3 01` +
//! the schema's CRC-64-AVRO fingerprint (8 bytes, little endian) + datum. With
//! `kafka.schema_registry_url` set it is the Confluent wire format, `00` + schema id (4 bytes,
//! big endian) + datum, the schema registered under the subject `<topic>-value`. Decoders
//! accept both framings whichever is configured.
//!
//! **Writers and readers**: [`Codec::writer`] is the codec of a stage that writes a topic:
//! it registers its schema under the topic's subject (a registry refusing it as incompatible
//! stops the stage, naming the subject and the field). [`Codec::reader`] is the codec of a
//! stage that reads one: it never registers, it looks writer schemas up by the id in each
//! message.
//!
//! **Writer schemas**: a decoder knows its own schema, any schema added with
//! [`Codec::add_writer_schema`] (e.g. `schemas/history/*.avsc`, by fingerprint) or
//! [`Codec::add_schema_id`], and with a registry every id it has fetched. Data written with
//! a known older schema is resolved into the reader schema: fields by name, added fields
//! take their default, removed fields are skipped, numbers promoted. Decoded records list
//! the reader schema's fields in order; `timestamp-millis` fields decode to
//! [`Value::TimestampMillis`](crate::record::Value::TimestampMillis). An id the registry
//! answers 404 for is poison, but only for [`NOT_FOUND_RETRY`]: after that the next message
//! with it asks again (a registry restored from backup, or a replica catching up).
//!
//! ```no_run
//! # async fn demo(kafka: &etl_pipe::settings::KafkaConfig) -> Result<(), etl_pipe::codec::CodecError> {
//! use etl_pipe::codec::{load_schema, Codec};
//! let schema = load_schema("schemas/league_entry.cleaned.avsc")?;
//! // Registers `etl.cleaned-value` when a registry is configured.
//! let writer = Codec::writer(kafka, schema.clone(), "etl.cleaned").await?;
//! # let record = etl_pipe::record::Record::new();
//! let bytes = writer.encode(&record)?;
//! // Registers nothing; fetches unknown registry ids when decoding.
//! let reader = Codec::reader(kafka, schema)?;
//! let back = reader.decode_async(&bytes).await?;
//! # Ok(()) }
//! ```
//!
//! **Errors** are sorted once ([`CodecError::is_retriable`]): a record that cannot be
//! encoded or decoded (garbage, truncated, unknown fingerprint or id, incompatible writer
//! schema) is **poison**: dead-letter it. A registry that cannot be reached or answers 5xx
//! is **retriable**: back off, the record is fine. Nothing here panics on input.
//!
//! The binary datum is written and read by this module over [`RecordSchema`] (see
//! `docs/notes/codec.md` for the measurement that chose it over apache-avro and
//! serde_avro_fast); tests check it byte for byte against apache-avro. Every Avro 1.12 type
//! is carried: flat records take the measured fast path (`binary`), others the general one
//! (`nested`, following the resolution plan of `resolve`). apache-avro parses schemas and
//! computes their canonical form and fingerprint.
mod binary;
mod nested;
mod partial;
mod registry;
mod resolve;
mod schema;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_nested;
#[cfg(test)]
mod tests_projection;
#[cfg(test)]
mod tests_resolve;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::record::{Record, RecordSchema};
use crate::settings::KafkaConfig;

pub use partial::{Extension, Projection};
pub use schema::{check_can_read, load_schema, load_schema_dir};

/// How long a registry id answered with 404 stays poison before a message with it asks the
/// registry again.
pub const NOT_FOUND_RETRY: Duration = Duration::from_secs(30);

/// First two bytes of Avro single-object encoding.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// First byte of the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0x00;

/// Everything that can go wrong in the codec. See [`CodecError::is_retriable`].
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The schema text is not a schema this codec supports.
    #[error("schema{}: {message}", field.as_ref().map(|f| format!(" field `{f}`")).unwrap_or_default())]
    Schema {
        field: Option<String>,
        message: String,
    },
    /// A schema file could not be read or parsed.
    #[error("schema file {path}: {message}")]
    SchemaFile { path: String, message: String },
    /// The record does not fit the schema (poison).
    #[error("cannot encode field `{field}`: {message}")]
    Encode { field: String, message: String },
    /// The bytes are not a datum of the writer schema: garbage, truncated, wrong framing (poison).
    #[error("malformed Avro message: {message}")]
    Malformed { message: String },
    /// Single-object data whose writer schema fingerprint is not known (poison).
    #[error(
        "unknown writer schema: fingerprint {fingerprint:#018x} is not one of the known schemas \
         (reader {reader}); add the writer schema to schemas/history/"
    )]
    UnknownFingerprint { fingerprint: u64, reader: String },
    /// Confluent-framed data whose schema id cannot be had (poison).
    #[error("unknown writer schema id {id}: {reason}")]
    UnknownSchemaId { id: u32, reason: String },
    /// The writer schema is known but cannot be resolved into the reader schema (poison).
    #[error(
        "writer schema {writer} (fingerprint {writer_fingerprint:#018x}) cannot be read as {reader}: {reason}"
    )]
    Incompatible {
        writer: String,
        writer_fingerprint: u64,
        reader: String,
        reason: String,
    },
    /// [`Codec::decode`] met a registry id it has not fetched yet; [`Codec::decode_async`]
    /// fetches it (retriable: the record is fine).
    #[error(
        "writer schema id {id} is not cached yet; decode with Codec::decode_async, which fetches it from the registry"
    )]
    SchemaNotCached { id: u32 },
    /// The registry refuses the writer's schema as incompatible with the subject's registered
    /// versions (HTTP 409): a person must change the schema or the subject's level.
    #[error(
        "schema registry {registry} refuses our schema for subject `{subject}` (compatibility \
         {level}): {details}"
    )]
    RegistryIncompatible {
        registry: String,
        subject: String,
        level: String,
        details: String,
    },
    /// The schema registry failed or refused a request.
    #[error("schema registry {operation}: {message}")]
    Registry {
        operation: String,
        status: Option<u16>,
        message: String,
        retriable: bool,
    },
}

impl CodecError {
    /// `true` when retrying later can succeed (registry unreachable, 5xx, auth refused):
    /// back off and keep the record. `false` when the record or the schema is at fault:
    /// for a decode or encode that means **poison**, dead-letter the record with
    /// [`kind`](Self::kind) and the message; at start-up it means stop with the message.
    pub fn is_retriable(&self) -> bool {
        match self {
            CodecError::SchemaNotCached { .. } => true,
            CodecError::Registry { retriable, .. } => *retriable,
            CodecError::Schema { .. }
            | CodecError::SchemaFile { .. }
            | CodecError::Encode { .. }
            | CodecError::Malformed { .. }
            | CodecError::UnknownFingerprint { .. }
            | CodecError::UnknownSchemaId { .. }
            | CodecError::Incompatible { .. }
            | CodecError::RegistryIncompatible { .. } => false,
        }
    }

    /// `true` for what a person must fix, although it may pass by itself mid-run (a rotated
    /// password, a renewed certificate): the registry refused the credentials (401/403) or
    /// its TLS certificate. At start-up a stage stops with it rather than retry for ever;
    /// mid-run it stays retriable (readiness reports the registry).
    pub fn is_refusal(&self) -> bool {
        match self {
            CodecError::Registry {
                status, message, ..
            } => matches!(status, Some(401 | 403)) || message.starts_with(registry::TLS_REFUSED),
            _ => false,
        }
    }

    /// A short stable name of the error, for the dead-letter header `etl.error.kind` and
    /// metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::Schema { .. } | CodecError::SchemaFile { .. } => "avro-schema",
            CodecError::Encode { .. } => "avro-encode",
            CodecError::Malformed { .. } => "avro-malformed",
            CodecError::UnknownFingerprint { .. } | CodecError::UnknownSchemaId { .. } => {
                "avro-unknown-schema"
            }
            CodecError::Incompatible { .. } => "avro-incompatible-schema",
            CodecError::SchemaNotCached { .. }
            | CodecError::Registry { .. }
            | CodecError::RegistryIncompatible { .. } => "schema-registry",
        }
    }

    pub(crate) fn schema(field: Option<&str>, message: impl Into<String>) -> Self {
        CodecError::Schema {
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    pub(crate) fn encode(field: &str, message: impl Into<String>) -> Self {
        CodecError::Encode {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// How [`Codec::encode`] frames a datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Avro single-object encoding: `C3 01` + fingerprint (LE) + datum.
    SingleObject,
    /// Confluent wire format: `00` + schema id (BE) + datum; the id of the codec's schema.
    Confluent { schema_id: u32 },
}

/// Encoder and decoder of one record schema (the reader and writer schema of a stage).
/// Cheap to share behind an `Arc`; the caches take a lock only to look up a writer schema.
#[derive(Debug)]
pub struct Codec {
    schema: Arc<RecordSchema>,
    fingerprint: u64,
    framing: Framing,
    /// Framing header of encoded messages.
    header: Vec<u8>,
    by_fingerprint: RwLock<HashMap<u64, Arc<binary::ReadPlan>>>,
    /// Registry ids: a plan, or why the id cannot be decoded (cached so that poison records
    /// do not hit the registry again; a 404 only for `not_found_retry`).
    by_id: RwLock<HashMap<u32, IdEntry>>,
    registry: Option<registry::Registry>,
    not_found_retry: Duration,
}

#[derive(Debug)]
enum IdEntry {
    Plan(Arc<binary::ReadPlan>),
    /// Not decodable: an id the registry did not know (asked again after `retry_at`), or a
    /// schema that can never be read as ours (`retry_at` `None`).
    Unusable {
        reason: String,
        retry_at: Option<Instant>,
    },
}

impl Codec {
    /// A codec without a registry. With `Framing::Confluent { schema_id }` it writes that id
    /// and decodes it as `schema`; other ids need [`add_schema_id`](Self::add_schema_id).
    pub fn new(schema: RecordSchema, framing: Framing) -> Codec {
        let schema = Arc::new(schema);
        let fingerprint = schema.fingerprint();
        let header = match framing {
            Framing::SingleObject => {
                let mut h = SINGLE_OBJECT_MAGIC.to_vec();
                h.extend_from_slice(&fingerprint.to_le_bytes());
                h
            }
            Framing::Confluent { schema_id } => {
                let mut h = vec![CONFLUENT_MAGIC];
                h.extend_from_slice(&schema_id.to_be_bytes());
                h
            }
        };
        let own = Arc::new(binary::ReadPlan::identity(schema.clone()));
        let mut by_id = HashMap::new();
        if let Framing::Confluent { schema_id } = framing {
            by_id.insert(schema_id, IdEntry::Plan(own.clone()));
        }
        Codec {
            fingerprint,
            framing,
            header,
            by_fingerprint: RwLock::new(HashMap::from([(fingerprint, own)])),
            by_id: RwLock::new(by_id),
            registry: None,
            not_found_retry: NOT_FOUND_RETRY,
            schema,
        }
    }

    /// The codec of a stage writing `topic`: Confluent framing with the schema registered
    /// under `<topic>-value` when `kafka.schema_registry_url` is set (so this call needs the
    /// registry up: retriable error otherwise), single-object encoding otherwise. A registry
    /// that refuses the schema as incompatible gives [`CodecError::RegistryIncompatible`],
    /// naming the subject and what differs from its latest registered version.
    pub async fn writer(
        kafka: &KafkaConfig,
        schema: RecordSchema,
        topic: &str,
    ) -> Result<Codec, CodecError> {
        let Some(registry) = registry::Registry::from_config(kafka)? else {
            return Ok(Codec::new(schema, Framing::SingleObject));
        };
        let subject = format!("{topic}-value");
        let id = match registry.register(&subject, &schema.source).await {
            Ok(id) => id,
            Err(CodecError::Registry {
                status: Some(409),
                message,
                ..
            }) => return Err(incompatible(&registry, &subject, &schema, &message).await),
            Err(e) => return Err(e),
        };
        let mut codec = Codec::new(schema, Framing::Confluent { schema_id: id });
        codec.registry = Some(registry);
        Ok(codec)
    }

    /// The codec of a stage reading Avro topics: it registers nothing. With
    /// `kafka.schema_registry_url` set it looks the writer schema of each Confluent-framed
    /// message up by id ([`decode_async`](Self::decode_async)); without, it reads
    /// single-object data of known fingerprints. It encodes single-object (it has no id of its
    /// own): stages write with a [`writer`](Self::writer).
    pub fn reader(kafka: &KafkaConfig, schema: RecordSchema) -> Result<Codec, CodecError> {
        let mut codec = Codec::new(schema, Framing::SingleObject);
        codec.registry = registry::Registry::from_config(kafka)?;
        Ok(codec)
    }

    /// How long a registry id answered with 404 stays poison before it is asked again
    /// (default [`NOT_FOUND_RETRY`]).
    pub fn with_not_found_retry(mut self, after: Duration) -> Codec {
        self.not_found_retry = after;
        self
    }

    /// The reader/writer schema.
    pub fn schema(&self) -> &RecordSchema {
        &self.schema
    }

    /// How this codec frames what it encodes.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// CRC-64-AVRO fingerprint of the schema (the single-object header).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Lets the decoder read single-object data written with `writer` (an older version of
    /// the schema, e.g. from `schemas/history/`). Fails when `writer` cannot be resolved into
    /// this codec's schema.
    pub fn add_writer_schema(&self, writer: RecordSchema) -> Result<(), CodecError> {
        let fp = writer.fingerprint();
        let plan = Arc::new(binary::ReadPlan::new(
            Arc::new(writer),
            self.schema.clone(),
        )?);
        write_lock(&self.by_fingerprint).insert(fp, plan);
        Ok(())
    }

    /// Lets the decoder read data written with the older versions of its schema kept in
    /// `history/` beside `schema_path` (the schema's `.avsc` file): every `*.avsc` there with
    /// the same record name is added with [`add_writer_schema`](Self::add_writer_schema). A
    /// history schema that cannot be read as this one is skipped (logged); an unreadable
    /// file is an error. Returns how many were added. Every reader of Avro records calls
    /// this, so that a schema change never turns the previous version's records into poison.
    pub fn add_history(&self, schema_path: &std::path::Path) -> Result<usize, CodecError> {
        let Some(history) = schema_path.parent().map(|d| d.join("history")) else {
            return Ok(0);
        };
        if !history.is_dir() {
            return Ok(0);
        }
        let mut added = 0;
        for (file, writer) in load_schema_dir(&history)? {
            if writer.name != self.schema.name || writer.fingerprint() == self.fingerprint {
                continue;
            }
            match self.add_writer_schema(writer) {
                Ok(()) => added += 1,
                Err(e) => {
                    tracing::debug!(%file, error = %e, "older schema not readable as the current one")
                }
            }
        }
        Ok(added)
    }

    /// Lets the decoder read Confluent-framed data with registry id `id`, written with
    /// `writer`, without asking the registry.
    pub fn add_schema_id(&self, id: u32, writer: RecordSchema) -> Result<(), CodecError> {
        let plan = Arc::new(binary::ReadPlan::new(
            Arc::new(writer),
            self.schema.clone(),
        )?);
        write_lock(&self.by_id).insert(id, IdEntry::Plan(plan));
        Ok(())
    }

    /// Encodes `record` into a framed message.
    pub fn encode(&self, record: &Record) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(self.header.len() + 16 * self.schema.fields.len());
        self.encode_into(record, &mut out)?;
        Ok(out)
    }

    /// Appends the framed message of `record` to `out` (reuse one buffer in hot loops).
    /// On error `out` is left as it was.
    pub fn encode_into(&self, record: &Record, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = out.len();
        out.extend_from_slice(&self.header);
        binary::encode_datum(&self.schema, record, out).inspect_err(|_| out.truncate(start))
    }

    /// Decodes a message of either framing, without I/O. A registry id that is not cached
    /// yet gives the retriable [`CodecError::SchemaNotCached`]: with a registry, call
    /// [`decode_async`](Self::decode_async) instead.
    pub fn decode(&self, bytes: &[u8]) -> Result<Record, CodecError> {
        match bytes {
            [0xC3, 0x01, rest @ ..] => {
                let (fp, datum) = split_header::<8>(rest, "single-object fingerprint")?;
                let fp = u64::from_le_bytes(fp);
                // Readers share the lock; it is held only while decoding.
                match read_lock(&self.by_fingerprint).get(&fp) {
                    Some(plan) => plan.decode(datum),
                    None => Err(CodecError::UnknownFingerprint {
                        fingerprint: fp,
                        reader: self.schema.name.clone(),
                    }),
                }
            }
            [CONFLUENT_MAGIC, rest @ ..] => {
                let (id, datum) = split_header::<4>(rest, "Confluent schema id")?;
                let id = u32::from_be_bytes(id);
                match read_lock(&self.by_id).get(&id) {
                    Some(IdEntry::Plan(plan)) => plan.decode(datum),
                    Some(IdEntry::Unusable {
                        retry_at: Some(at), ..
                    }) if self.registry.is_some() && Instant::now() >= *at => {
                        Err(CodecError::SchemaNotCached { id })
                    }
                    Some(IdEntry::Unusable { reason, .. }) => Err(CodecError::UnknownSchemaId {
                        id,
                        reason: reason.clone(),
                    }),
                    None if self.registry.is_some() => Err(CodecError::SchemaNotCached { id }),
                    None => Err(CodecError::UnknownSchemaId {
                        id,
                        reason: "no schema registry is configured (kafka.schema_registry_url) \
                                 and the id was not added to the codec"
                            .into(),
                    }),
                }
            }
            [] => Err(CodecError::Malformed {
                message: "empty message".into(),
            }),
            [0xC3] => Err(CodecError::Malformed {
                message: "truncated: the message ends inside the single-object marker".into(),
            }),
            [b, ..] => Err(CodecError::Malformed {
                message: format!(
                    "first byte {b:#04x} is neither Avro single-object (C3 01) nor Confluent (00) framing"
                ),
            }),
        }
    }

    /// Decodes a message of either framing, fetching an unknown registry id first (the
    /// call stages make). Registry failures are retriable; an id the registry does not
    /// know, or whose schema cannot be read as ours, is poison and remembered.
    pub async fn decode_async(&self, bytes: &[u8]) -> Result<Record, CodecError> {
        match self.decode(bytes) {
            Err(CodecError::SchemaNotCached { id }) => {
                self.fetch_id(id).await?;
                self.decode(bytes)
            }
            other => other,
        }
    }

    async fn fetch_id(&self, id: u32) -> Result<(), CodecError> {
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        let unusable = |reason: String| IdEntry::Unusable {
            reason,
            retry_at: None,
        };
        let entry = match registry.fetch(id).await? {
            registry::Fetched::NotFound(reason) => IdEntry::Unusable {
                reason,
                retry_at: Some(Instant::now() + self.not_found_retry),
            },
            registry::Fetched::NotUsable(reason) => unusable(reason),
            registry::Fetched::Schema(text) => match RecordSchema::parse(&text) {
                Err(e) => unusable(format!("its schema is not supported here: {e}")),
                Ok(writer) => match binary::ReadPlan::new(Arc::new(writer), self.schema.clone()) {
                    Ok(plan) => IdEntry::Plan(Arc::new(plan)),
                    Err(e) => unusable(e.to_string()),
                },
            },
        };
        write_lock(&self.by_id).insert(id, entry);
        Ok(())
    }
}

/// Sets `kafka.schema_registry_compatibility` on the subject (`<topic>-value`) of each of
/// `topics`; returns the subjects set. Nothing without a registry.
pub async fn set_compatibility(
    kafka: &KafkaConfig,
    topics: &[String],
) -> Result<Vec<String>, CodecError> {
    let Some(registry) = registry::Registry::from_config(kafka)? else {
        return Ok(Vec::new());
    };
    let level = kafka.schema_registry_compatibility.as_str();
    let mut done = Vec::new();
    for topic in topics {
        let subject = format!("{topic}-value");
        registry.set_compatibility(&subject, level).await?;
        done.push(subject);
    }
    Ok(done)
}

/// The error of a 409 at registration: the registry's message rarely names the field
/// (Apicurio: "[c at /fields/2]"), so compare our schema with the latest registered version
/// under the subject's level and say which field and what is wrong.
async fn incompatible(
    registry: &registry::Registry,
    subject: &str,
    ours: &RecordSchema,
    registry_message: &str,
) -> CodecError {
    let level = registry
        .compatibility(subject)
        .await
        .unwrap_or_else(|_| "unknown".into());
    let details = match registry.latest(subject).await {
        Ok(Some(text)) => match RecordSchema::parse(&text) {
            Ok(latest) => {
                let problems = schema::incompatibilities(&latest, ours, &level);
                if problems.is_empty() {
                    format!("no field-level difference found against the latest registered version; the registry says: {registry_message}")
                } else {
                    format!(
                        "{} (against the latest registered version)",
                        problems.join("; ")
                    )
                }
            }
            Err(e) => format!(
                "the latest registered version is not a schema this codec reads ({e}); the registry says: {registry_message}"
            ),
        },
        _ => format!("the registry says: {registry_message}"),
    };
    CodecError::RegistryIncompatible {
        registry: registry.display().to_string(),
        subject: subject.to_string(),
        level,
        details,
    }
}

fn split_header<'a, const N: usize>(
    rest: &'a [u8],
    what: &str,
) -> Result<([u8; N], &'a [u8]), CodecError> {
    match rest.split_first_chunk::<N>() {
        Some((h, datum)) => Ok((*h, datum)),
        None => Err(CodecError::Malformed {
            message: format!("truncated: the message ends inside the {what}"),
        }),
    }
}

// A poisoned lock only means another thread panicked mid-insert of a complete entry;
// the map is still consistent.
fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
