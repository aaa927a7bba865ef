//! Reading part of a record and writing a longer one without decoding the rest (the score
//! stage's short cut, docs/notes/codec.md): the datum of a message written with the codec's
//! own schema, a decoder of some of its fields, and an encoder of a longer schema from it.
use std::sync::Arc;

use super::{binary, read_lock, Codec, CodecError, IdEntry, CONFLUENT_MAGIC};
use crate::record::{Record, RecordSchema};

impl Codec {
    /// The datum of a message written with this codec's own schema (same canonical form):
    /// the bytes after its framing header, already this schema's encoding. `None` for any
    /// other message (another writer schema, an id not cached, malformed framing): decode
    /// those with [`decode`](Self::decode).
    pub fn own_datum<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        match bytes {
            [0xC3, 0x01, rest @ ..] => {
                let (fp, datum) = rest.split_first_chunk::<8>()?;
                (u64::from_le_bytes(*fp) == self.fingerprint).then_some(datum)
            }
            [CONFLUENT_MAGIC, rest @ ..] => {
                let (id, datum) = rest.split_first_chunk::<4>()?;
                match read_lock(&self.by_id).get(&u32::from_be_bytes(*id)) {
                    Some(IdEntry::Plan(plan)) if plan.own => Some(datum),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// A reader of this schema's datums ([`own_datum`](Self::own_datum)) that keeps only the
    /// top-level fields `keep` names: the others are checked as a full decode checks them
    /// (lengths, UTF-8, union and enum indexes) but not built.
    pub fn projection(&self, keep: impl Fn(&str) -> bool) -> Result<Projection, CodecError> {
        let reader = RecordSchema {
            fields: self
                .schema
                .fields
                .iter()
                .filter(|f| keep(&f.name))
                .cloned()
                .collect(),
            ..(*self.schema).clone()
        };
        Ok(Projection {
            plan: binary::ReadPlan::new(self.schema.clone(), Arc::new(reader))?,
        })
    }

    /// When this codec's schema is `prefix`'s fields followed by more fields, encoded
    /// identically (same names, types and nullability in the same order): the encoder that
    /// writes a message of this schema from a datum of `prefix` and the values of the
    /// remaining fields, without decoding the datum. `None` otherwise, and `None` when
    /// `prefix` has a type whose datum the whole path would check or rewrite on the way
    /// through (decimals: precision is checked only when encoding; uuids: written back
    /// normalised; unions other than `["null", T]`: the encoder picks the branch), so that
    /// copying the datum never lets through what decoding and encoding would refuse.
    pub fn extension_of(&self, prefix: &RecordSchema) -> Option<Extension> {
        fn copies(ty: &crate::record::FieldType) -> bool {
            use crate::record::FieldType as T;
            match ty {
                T::Decimal { .. } | T::Uuid | T::Union(_) => false,
                T::Array(t) | T::Map(t) => copies(t),
                T::Record(r) => r.fields.iter().all(|f| copies(&f.ty)),
                _ => true,
            }
        }
        let n = prefix.fields.len();
        let same = prefix.fields.iter().all(|f| copies(&f.ty))
            && self.schema.fields.len() > n
            && prefix
                .fields
                .iter()
                .zip(&self.schema.fields)
                .all(|(p, o)| p.name == o.name && p.ty == o.ty && p.nullable == o.nullable);
        same.then(|| Extension {
            header: self.header.clone(),
            suffix: RecordSchema {
                fields: self.schema.fields[n..].to_vec(),
                ..(*self.schema).clone()
            },
        })
    }
}

/// See [`Codec::projection`].
#[derive(Debug)]
pub struct Projection {
    plan: binary::ReadPlan,
}

impl Projection {
    /// The kept fields of a datum (the bytes after the framing header); all of `datum` must
    /// be used.
    pub fn decode(&self, datum: &[u8]) -> Result<Record, CodecError> {
        self.plan.decode(datum)
    }
}

/// See [`Codec::extension_of`].
#[derive(Debug)]
pub struct Extension {
    header: Vec<u8>,
    /// The fields after the prefix's.
    suffix: RecordSchema,
}

impl Extension {
    /// The framed message: `datum` (a whole datum of the prefix schema) followed by the
    /// fields after the prefix's, from `rest` (by name; missing ones take their default,
    /// any other field is an error).
    pub fn encode(&self, datum: &[u8], rest: &Record) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(self.header.len() + datum.len() + 64);
        out.extend_from_slice(&self.header);
        out.extend_from_slice(datum);
        binary::encode_datum(&self.suffix, rest, &mut out)?;
        Ok(out)
    }
}
