//! [`SinkMessage`]: a consumed Kafka message as the sinks hold it (owned, off the poll
//! thread), and what they read from it besides the record: key text, trace id, fetch time.
use rdkafka::message::OwnedHeaders;

use crate::kafka::headers;
use crate::observability::trace;
use crate::record::{Record, Value};

/// One consumed message, owned (it leaves the poll thread).
#[derive(Debug, Clone)]
pub struct SinkMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
}

impl SinkMessage {
    /// When extract fetched the record from the API (`etl.fetched_at`, ms since the epoch).
    pub fn fetched_at_ms(&self) -> Option<i64> {
        headers::fetched_at_ms(self.headers.as_ref()?)
    }

    /// The trace id of the message: from its `traceparent` header, else the record's
    /// `trace_id` field when it holds a valid 32-hex id.
    pub fn trace_id(&self, record: Option<&Record>) -> Option<String> {
        if let Some(h) = &self.headers {
            if let Some(id) = headers::get_str(h, headers::TRACEPARENT).and_then(trace::trace_id) {
                return Some(id.to_string());
            }
        }
        match record.and_then(|r| r.get("trace_id")) {
            Some(Value::String(s)) if s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
                Some(s.to_ascii_lowercase())
            }
            _ => None,
        }
    }

    /// The Kafka key as UTF-8 text.
    pub fn key_str(&self) -> Result<&str, &'static str> {
        match &self.key {
            None => Err("the message has no key"),
            Some(k) if k.is_empty() => Err("the message key is empty"),
            Some(k) => std::str::from_utf8(k).map_err(|_| "the message key is not UTF-8"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_prefers_header_then_field() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let m = SinkMessage {
            partition: 0,
            offset: 0,
            key: None,
            payload: None,
            headers: Some(OwnedHeaders::new().insert(rdkafka::message::Header {
                key: headers::TRACEPARENT,
                value: Some(tp),
            })),
        };
        assert_eq!(
            m.trace_id(None).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        let m2 = SinkMessage { headers: None, ..m };
        let mut r = Record::new();
        r.set(
            "trace_id",
            Value::String("ABCDEF0123456789abcdef0123456789".into()),
        );
        assert_eq!(
            m2.trace_id(Some(&r)).as_deref(),
            Some("abcdef0123456789abcdef0123456789")
        );
        r.set("trace_id", Value::String("nope".into()));
        assert_eq!(m2.trace_id(Some(&r)), None);
    }

    #[test]
    fn fetched_at_comes_from_the_extract_header() {
        let with = |v: Option<&str>| SinkMessage {
            partition: 0,
            offset: 0,
            key: None,
            payload: None,
            headers: v.map(|v| {
                OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: headers::FETCHED_AT,
                    value: Some(v),
                })
            }),
        };
        // What extract writes: RFC 3339 with milliseconds, UTC.
        assert_eq!(
            with(Some("2026-11-28T21:12:40.123Z")).fetched_at_ms(),
            Some(1_795_900_360_123)
        );
        assert_eq!(with(Some("not a time")).fetched_at_ms(), None);
        assert_eq!(with(None).fetched_at_ms(), None);
    }
}
