//! Turning a message's bytes into a record of the sink's schema: the [`Decode`] seam (the
//! Avro codec in production, a stand-in in tests), loading the sink's schema and codec, and
//! decoding a batch one record at a time with poison and retriable failures told apart.
use std::future::Future;
use std::pin::Pin;

use super::{Rejected, SinkConfig, SinkError, SinkMessage};
use crate::codec::{Codec, CodecError};
use crate::record::{Record, RecordSchema};
use crate::settings::{Common, ConfigError};

/// Why a message could not be decoded.
#[derive(Debug, Clone)]
pub struct DecodeFailure {
    /// True when the bytes may be fine and only a lookup failed (schema registry away).
    pub retriable: bool,
    pub message: String,
}

/// Turns a message's bytes into a record of the sink's schema (the Avro codec in production;
/// tests may plug in their own).
pub trait Decode: Send + Sync {
    /// Decodes without I/O.
    fn decode(&self, bytes: &[u8]) -> Result<Record, DecodeFailure>;

    /// Decodes, doing I/O first if needed (the codec fetches an unknown schema-registry id);
    /// called when [`decode`](Self::decode) failed as retriable.
    fn decode_slow<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<Record, DecodeFailure>> + Send + 'a>> {
        Box::pin(std::future::ready(self.decode(bytes)))
    }
}

fn codec_failure(e: CodecError) -> DecodeFailure {
    DecodeFailure {
        retriable: e.is_retriable(),
        message: e.to_string(),
    }
}

impl Decode for Codec {
    fn decode(&self, bytes: &[u8]) -> Result<Record, DecodeFailure> {
        Codec::decode(self, bytes).map_err(codec_failure)
    }

    fn decode_slow<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<Record, DecodeFailure>> + Send + 'a>> {
        Box::pin(async move { self.decode_async(bytes).await.map_err(codec_failure) })
    }
}

/// The decoder a sink holds.
pub type RecordDecoder = dyn Decode;

/// Decodes every message of a batch in turn, handing `f` the message's index, the message
/// and its record (or the reason it is poison). Records are handed over one at a time, never
/// collected: a decoded record takes several times the memory of its Avro bytes. A
/// retriable failure fails the whole call (the batch is retried).
pub(crate) async fn decode_each(
    decoder: &RecordDecoder,
    msgs: &[SinkMessage],
    mut f: impl FnMut(usize, &SinkMessage, Result<Record, Rejected>),
) -> Result<(), SinkError> {
    for (index, m) in msgs.iter().enumerate() {
        let Some(payload) = m.payload.as_deref() else {
            f(
                index,
                m,
                Err(Rejected {
                    index,
                    kind: "decode",
                    message: "the message has no value".into(),
                }),
            );
            continue;
        };
        let decoded = match decoder.decode(payload) {
            Err(e) if e.retriable => decoder.decode_slow(payload).await,
            other => other,
        };
        match decoded {
            Ok(r) => f(index, m, Ok(r)),
            Err(e) if e.retriable => {
                return Err(SinkError::Retriable {
                    what: "decoding",
                    message: e.message,
                })
            }
            Err(e) => f(
                index,
                m,
                Err(Rejected {
                    index,
                    kind: "decode",
                    message: e.message,
                }),
            ),
        }
    }
    Ok(())
}

/// The sink's schema (`sink.schema`) and its Avro codec, which also reads data written with
/// the older schemas of `history/` beside it.
pub async fn load_codec(
    cfg: &Common,
    sink: &SinkConfig,
) -> Result<(RecordSchema, std::sync::Arc<RecordDecoder>), SinkError> {
    let schema_err =
        |e: CodecError| SinkError::Config(ConfigError::key("sink.schema", e.to_string()));
    let schema = crate::codec::load_schema(&sink.schema).map_err(schema_err)?;
    let codec = Codec::reader(&cfg.kafka, schema.clone()).map_err(|e| SinkError::Fatal {
        what: "setting up the codec",
        message: e.to_string(),
    })?;
    codec.add_history(&sink.schema).map_err(schema_err)?;
    Ok((schema, std::sync::Arc::new(codec)))
}
