//! What a transform hands to the loop: [`Output`], one message to produce inside the
//! transaction (a record or a dead letter of its source), and [`keep_headers`] to carry chosen
//! headers of the input over.
use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedHeaders};

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
