//! What a transform hands to the loop: [`Output`], one message to produce inside the
//! transaction (a record or a dead letter of its source), and [`keep_headers`] to carry chosen
//! headers of the input over.
use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedHeaders};

use super::limits::wire_size;
use crate::kafka::headers::DeadLetter;

/// One message to produce inside the transaction.
#[derive(Debug)]
pub struct Output {
    pub topic: Arc<str>,
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
    /// `Some(kind)` when this is a dead letter (counted in `etl_dead_letters_total{kind}`).
    pub dead_letter: Option<&'static str>,
    /// The input message this output was made from, for an output produced after its input
    /// (a stateful transform's flush): dead-lettered in its place should the output be too
    /// large for its topic. Outputs of `transform` need none: the loop has the input.
    pub origin: Option<Box<Origin>>,
}

/// The input message an output was made from (see [`Output::origin`]).
#[derive(Debug)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The input's bytes and headers, unchanged.
    pub payload: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
    /// When `headers` is `None`: the input's headers are the first this many of the
    /// output's (a transform that appended its headers to the input's own list rather than
    /// copying it), taken from there should the output be dead-lettered.
    pub headers_in_output: usize,
}

impl Origin {
    /// The input's headers where [`Origin::headers_in_output`] says they are: the first
    /// ones of `output`.
    pub fn take_headers_from(&mut self, output: Option<&OwnedHeaders>) {
        let n = self.headers_in_output;
        if self.headers.is_some() || n == 0 {
            return;
        }
        self.headers = output.map(|hs| {
            hs.iter()
                .take(n)
                .fold(OwnedHeaders::new_with_capacity(n), |acc, h| {
                    acc.insert(rdkafka::message::Header {
                        key: h.key,
                        value: h.value,
                    })
                })
        });
    }

    /// The dead letter of this input, with `key` (the output's, which is the input's).
    pub fn dead_letter(
        self,
        topic: Arc<str>,
        stage: &str,
        kind: &'static str,
        message: &str,
        key: Option<Vec<u8>>,
    ) -> Output {
        let headers = DeadLetter {
            stage,
            kind,
            message,
            source: Some((&self.topic, self.partition, self.offset)),
        }
        .headers(self.headers.as_ref().map(|h| h.as_borrowed()));
        Output {
            topic,
            partition: None,
            key,
            payload: self.payload,
            headers: Some(headers),
            dead_letter: Some(kind),
            origin: None,
        }
    }
}

impl Output {
    /// An output to `topic`; add the parts with the builder methods.
    pub fn to(topic: Arc<str>) -> Output {
        Output {
            topic,
            partition: None,
            key: None,
            payload: None,
            headers: None,
            dead_letter: None,
            origin: None,
        }
    }
    pub fn key(mut self, key: Option<Vec<u8>>) -> Self {
        self.key = key;
        self
    }
    pub fn payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = Some(payload);
        self
    }
    pub fn headers(mut self, headers: OwnedHeaders) -> Self {
        self.headers = Some(headers);
        self
    }
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
    pub fn origin(mut self, origin: Origin) -> Self {
        self.origin = Some(Box::new(origin));
        self
    }

    /// The bytes this output takes on the wire ([`wire_size`]).
    pub fn wire_size(&self) -> usize {
        wire_size(
            self.key.as_deref(),
            self.payload.as_deref(),
            self.headers.as_ref(),
        )
    }

    /// A dead letter that only refers to its record (no payload, no source coordinates
    /// known): `key` and the `headers` given, plus the envelope.
    pub fn reference(
        topic: Arc<str>,
        stage: &str,
        kind: &'static str,
        message: &str,
        key: Option<Vec<u8>>,
        headers: Option<&OwnedHeaders>,
    ) -> Output {
        let headers = DeadLetter {
            stage,
            kind,
            message,
            source: None,
        }
        .headers(headers.map(|h| h.as_borrowed()));
        Output {
            topic,
            partition: None,
            key,
            payload: None,
            headers: Some(headers),
            dead_letter: Some(kind),
            origin: None,
        }
    }

    /// The dead letter of `source`: its key, bytes and headers unchanged, plus the `etl.error.*`
    /// and `etl.source.*` envelope ([`DeadLetter`]).
    pub fn dead_letter(
        topic: Arc<str>,
        stage: &str,
        kind: &'static str,
        message: &str,
        source: &BorrowedMessage<'_>,
    ) -> Output {
        let headers = DeadLetter {
            stage,
            kind,
            message,
            source: Some((source.topic(), source.partition(), source.offset())),
        }
        .headers(source.headers());
        Output {
            topic,
            partition: None,
            key: source.key().map(<[u8]>::to_vec),
            payload: source.payload().map(<[u8]>::to_vec),
            headers: Some(headers),
            dead_letter: Some(kind),
            origin: None,
        }
    }
}

/// Copies the named headers of `msg` (those present) into a new header set.
pub fn keep_headers(msg: &BorrowedMessage<'_>, names: &[&str]) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(names.len());
    if let Some(h) = msg.headers() {
        for header in h.iter() {
            if names.contains(&header.key) {
                out = out.insert(rdkafka::message::Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
    }
    out
}
