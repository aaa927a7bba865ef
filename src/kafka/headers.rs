//! Header names and the dead-letter envelope.
//!
//! A dead letter (or quarantined record) is the original key and bytes, unchanged, with the
//! original headers plus `etl.error.*` context — the same idea as Kafka Connect's
//! `__connect.errors.*` headers, so Kafdrop shows why a record is there.
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};

pub const TRACEPARENT: &str = "traceparent";
pub const SOURCE: &str = "etl.source";
pub const FETCHED_AT: &str = "etl.fetched_at";
pub const ERROR_STAGE: &str = "etl.error.stage";
pub const ERROR_KIND: &str = "etl.error.kind";
pub const ERROR_MESSAGE: &str = "etl.error.message";
pub const ERROR_AT: &str = "etl.error.at";
pub const SOURCE_TOPIC: &str = "etl.source.topic";
pub const SOURCE_PARTITION: &str = "etl.source.partition";
pub const SOURCE_OFFSET: &str = "etl.source.offset";
pub const ATTEMPTS: &str = "etl.attempts";

/// The headers written by the pipeline itself on a dead letter; these are replaced, not
/// duplicated, when a record fails again after a redrive.
const ENVELOPE: [&str; 8] = [
    ERROR_STAGE,
    ERROR_KIND,
    ERROR_MESSAGE,
    ERROR_AT,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    ATTEMPTS,
];

/// Reads a header as UTF-8 text.
pub fn get_str<'a, H: Headers>(headers: &'a H, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The values of several headers in one pass (the first of each name, as [`get_str`]).
pub fn get_strs<'a, H: Headers, const N: usize>(
    headers: &'a H,
    names: [&str; N],
) -> [Option<&'a str>; N] {
    let mut found = [None; N];
    for h in headers.iter() {
        if let Some(i) = names.iter().position(|n| *n == h.key) {
            if found[i].is_none() {
                found[i] = Some(h.value.and_then(|v| std::str::from_utf8(v).ok()));
            }
        }
    }
    found.map(Option::flatten)
}

/// When extract fetched the record from the API (`etl.fetched_at`, RFC 3339), ms since the
/// epoch.
pub fn fetched_at_ms<H: Headers>(headers: &H) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(get_str(headers, FETCHED_AT)?)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Copies headers into an owned set (for re-producing them).
pub fn to_owned(headers: Option<&BorrowedHeaders>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = headers {
        for header in h.iter() {
            out = out.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    out
}

/// Why and where a record failed.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// Stage that gave up on the record (`extract`, `clean`, `sink-mysql`, ...).
    pub stage: &'a str,
    /// Short machine-readable kind (`invalid_json`, `missing_key`, `mapping`, `mysql_data`, ...).
    pub kind: &'a str,
    /// Human-readable reason. Must not contain secrets.
    pub message: &'a str,
    /// Topic/partition/offset the record was read from (`None` for records from outside Kafka).
    pub source: Option<(&'a str, i32, i64)>,
}

impl DeadLetter<'_> {
    /// The dead-letter headers: the original headers (minus an older envelope) plus the error
    /// context. `etl.attempts` is the previous value + 1.
    pub fn headers(&self, original: Option<&BorrowedHeaders>) -> OwnedHeaders {
        let mut attempts: u32 = 0;
        let mut out = OwnedHeaders::new();
        if let Some(h) = original {
            for header in h.iter() {
                if header.key == ATTEMPTS {
                    attempts = header
                        .value
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                }
                if ENVELOPE.contains(&header.key) {
                    continue;
                }
                out = out.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
        self.append(out, attempts + 1)
    }

    fn append(&self, mut out: OwnedHeaders, attempts: u32) -> OwnedHeaders {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let attempts = attempts.to_string();
        let mut pairs: Vec<(&str, String)> = vec![
            (ERROR_STAGE, self.stage.to_string()),
            (ERROR_KIND, self.kind.to_string()),
            (ERROR_MESSAGE, truncate(self.message, 2000)),
            (ERROR_AT, at),
            (ATTEMPTS, attempts),
        ];
        if let Some((t, p, o)) = self.source {
            pairs.push((SOURCE_TOPIC, t.to_string()));
            pairs.push((SOURCE_PARTITION, p.to_string()));
            pairs.push((SOURCE_OFFSET, o.to_string()));
        }
        for (k, v) in &pairs {
            out = out.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        out
    }

    /// Headers for a record that never was in Kafka (e.g. a bad record on an API page):
    /// the given extra headers plus the error context.
    pub fn headers_with(&self, extra: &[(&str, &str)]) -> OwnedHeaders {
        let mut out = OwnedHeaders::new();
        for (k, v) in extra {
            out = out.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        self.append(out, 1)
    }
}

/// A copy of `headers` whose `name` header has `extra` appended to its text (`<text>; <extra>`),
/// or set to `extra` when absent; e.g. why a dead letter goes without its payload.
pub fn with_message(headers: &OwnedHeaders, name: &str, extra: &str) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.count() + 1);
    let mut text = None;
    for h in headers.iter() {
        if h.key == name {
            text = Some(String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned());
            continue;
        }
        out = out.insert(Header {
            key: h.key,
            value: h.value,
        });
    }
    let text = match text {
        Some(t) if !t.is_empty() => format!("{t}; {extra}"),
        _ => extra.to_string(),
    };
    out.insert(Header {
        key: name,
        value: Some(&text),
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn dead_letter_headers_carry_context_and_count_attempts() {
        let dl = DeadLetter {
            stage: "clean",
            kind: "mapping",
            message: "field wins: not an int",
            source: Some(("etl.raw", 2, 41)),
        };
        let h = dl.headers_with(&[(TRACEPARENT, "00-abc-def-01")]);
        assert_eq!(get_str(&h, ERROR_KIND), Some("mapping"));
        assert_eq!(get_str(&h, SOURCE_OFFSET), Some("41"));
        assert_eq!(get_str(&h, ATTEMPTS), Some("1"));
        assert_eq!(get_str(&h, TRACEPARENT), Some("00-abc-def-01"));
        assert_eq!(h.count(), 9);
    }

    #[test]
    fn with_message_appends_to_one_header_and_keeps_the_others() {
        let dl = DeadLetter {
            stage: "score",
            kind: "output_too_large",
            message: "too big",
            source: Some(("etl.cleaned", 0, 7)),
        };
        let h = with_message(&dl.headers_with(&[]), ERROR_MESSAGE, "payload left out");
        assert_eq!(
            get_str(&h, ERROR_MESSAGE),
            Some("too big; payload left out")
        );
        assert_eq!(get_str(&h, SOURCE_OFFSET), Some("7"));
        assert_eq!(h.count(), 8);
    }

    #[test]
    fn one_pass_lookup_agrees_with_get_str() {
        use rdkafka::message::{Header, OwnedHeaders};
        let h = [
            ("a", Some(&b"1"[..])),
            ("b", None),
            ("b", Some(&b"late"[..])),
            ("c", Some(&[0xff, 0xfe][..])),
            ("a", Some(&b"second"[..])),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header { key, value })
        });
        let names = ["a", "b", "c", "d"];
        assert_eq!(get_strs(&h, names), names.map(|n| get_str(&h, n)));
        assert_eq!(get_strs(&h, names), [Some("1"), None, None, None]);
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let s = "é".repeat(3000);
        let t = truncate(&s, 2001);
        assert!(t.len() <= 2001 + "…".len());
    }
}
