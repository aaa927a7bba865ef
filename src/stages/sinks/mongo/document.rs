//! A record as a MongoDB document: `_id` from the key, every field of the record as BSON,
//! then the lineage fields; and the [`Upsert`] that carries it, encoded, to the server.
use mongodb::bson::{self, Bson, Document, RawDocumentBuf};

use crate::record::{Record, Value};
use crate::stages::sinks::{lineage, Rejected, SinkMessage};

/// Bytes of statements per command: the 16 MiB BSON limit less room for the command itself.
const MAX_COMMAND_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

/// A record value as BSON: ints stay 32-bit, longs 64-bit, timestamps become BSON dates.
/// A value of a type the sink cannot write yet is an error naming `field`.
pub fn to_bson(field: &str, v: &Value) -> Result<Bson, Rejected> {
    Ok(match v {
        Value::Null => Bson::Null,
        Value::Boolean(b) => Bson::Boolean(*b),
        Value::Int(i) => Bson::Int32(*i),
        Value::Long(i) => Bson::Int64(*i),
        Value::Float(f) => Bson::Double(*f as f64),
        Value::Double(f) => Bson::Double(*f),
        Value::String(s) => Bson::String(s.clone()),
        Value::TimestampMillis(ms) => Bson::DateTime(bson::DateTime::from_millis(*ms)),
        // phase 2 (issue 20): subdocuments, arrays, Decimal128, dates, binary, uuid.
        other => {
            return Err(Rejected {
                index: 0,
                kind: "unsupported_type",
                message: format!(
                    "field `{field}` holds a {} value: the Mongo sink does not write nested \
                     types yet (issue 20, phase 2)",
                    other.kind()
                ),
            })
        }
    })
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
            Some(v) => to_bson(k, v)?,
        },
    };
    let mut d = Document::new();
    d.insert("_id", id.clone());
    for (name, v) in &record.fields {
        d.insert(&**name, to_bson(name, v)?);
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

/// One upsert to send: the message's index in its batch, `_id`, the document and its size.
/// The document is kept as encoded BSON: a `Document` (one heap string and enum per field)
/// takes several times the memory, and a batch holds thousands of them.
pub(super) struct Upsert {
    pub(super) index: usize,
    pub(super) id: Bson,
    pub(super) doc: RawDocumentBuf,
    pub(super) bytes: usize,
    /// The record's `sink.version_field` value as stored in the document (`None`: no
    /// version check).
    pub(super) version: Option<Bson>,
}

/// A version as a number to compare: timestamps as epoch milliseconds, ints as they are.
pub(super) fn version_number(v: &Bson) -> Option<i64> {
    match v {
        Bson::DateTime(d) => Some(d.timestamp_millis()),
        Bson::Int64(i) => Some(*i),
        Bson::Int32(i) => Some(i64::from(*i)),
        _ => None,
    }
}

impl Upsert {
    /// The upsert of one decoded record: its document encoded as BSON.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        key_field: Option<&str>,
        version_field: Option<&str>,
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
            document(key_field, topic, loaded_at, m, &r).map_err(|mut e| {
                e.index = index;
                e
            })
        })?;
        let version = match version_field {
            None => None,
            Some(f) => match doc.get(f) {
                Some(v) if version_number(v).is_some() => Some(v.clone()),
                other => {
                    return Err(Rejected {
                        index,
                        kind: "invalid_record",
                        message: format!("version field `{f}` holds {other:?}, not a version"),
                    })
                }
            },
        };
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
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64, key: &[u8]) -> SinkMessage {
        SinkMessage {
            partition,
            offset,
            key: Some(key.to_vec()),
            payload: None,
            headers: None,
        }
    }

    #[test]
    fn documents_carry_every_field_and_lineage() {
        let msg = message(1, 9, b"k1");
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

    #[test]
    fn a_nested_value_is_rejected_naming_the_field() {
        // phase 2 (issue 20) writes it as a subdocument; until then the record is rejected.
        let msg = message(0, 1, b"k");
        let mut r = Record::new();
        r.set("wins", Value::Int(3));
        r.set("tags", Value::Array(vec![Value::String("a".into())]));
        let e = document(None, "t", bson::DateTime::from_millis(0), &msg, &r).unwrap_err();
        assert_eq!(e.kind, "unsupported_type");
        assert!(
            e.message.contains("`tags`") && e.message.contains("array"),
            "{}",
            e.message
        );
    }
}
