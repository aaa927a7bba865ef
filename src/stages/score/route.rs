//! Where a judged record goes, by its verdict and `score.policy`: PASS / WARN → scored;
//! FAIL → quarantine (`quarantine`), scored marked FAIL with its reasons (`flag`), or a fatal
//! error that stops the stage before the record is committed (`halt`); undecodable → dead
//! letter. And the report of a block of offsets, published to the quality topic.
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::Serialize;

use super::baseline;
use super::config::{Policy, DECISION_FIELD, REASONS_FIELD, WINDOW_FIELD};
use super::lane::{BlockEnd, Judged, Verdict};
use super::window::{Closed, HeldRecord, Item};
use super::{DECISION_HEADER, KEEP_HEADERS, QUALITY_FAIL, REASONS_HEADER, STAGE, WINDOW_HEADER};
use crate::codec::{Codec, Extension};
use crate::kafka::eos::{Origin, Output, TransformError};
use crate::kafka::headers::DeadLetter;
use crate::quality::{Decision, QualityReport, Reason};
use crate::record::{Name, Record, Value};

/// Where outputs go and what a FAIL does.
pub(super) struct Router {
    pub(super) codec_out: Arc<Codec>,
    pub(super) scored: Arc<str>,
    pub(super) quarantine: Arc<str>,
    pub(super) quality_topic: Arc<str>,
    pub(super) dead_letter: Arc<str>,
    pub(super) instance: String,
    /// The output schema is the input schema followed by more fields (the quality ones):
    /// a record decoded with only the gate's fields is written from its input datum.
    pub(super) extension: Option<Extension>,
    pub(super) policy: Policy,
    /// Whether the output schema has `quality_reasons`.
    pub(super) reasons_field: bool,
}

/// What became of a routed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Routed {
    Scored,
    Flagged,
    Quarantined,
    DeadLetter,
    /// Replayed while rebuilding a partition: emitted before, nothing to do.
    Skipped,
}

/// The report of a block published to the quality topic.
#[derive(Serialize)]
struct BlockReport<'a> {
    /// The block: `<topic>/<partition>/<first offset>-<last offset>`.
    window: &'a str,
    stage: &'static str,
    instance: &'a str,
    topic: &'a str,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    /// Messages in the block: decoded records + dead letters.
    messages: u64,
    dead_letters: u64,
    /// Records judged while the block was current.
    rows: u64,
    /// The worst decision among them, and its reasons.
    decision: Decision,
    reasons: &'a [Reason],
    /// The trailing window of that worst verdict.
    decided_on: Option<&'a str>,
    decisions: BTreeMap<&'static str, u64>,
    policy: Policy,
    baseline: baseline::Info,
    psi_measured: bool,
    /// The full figures of the trailing window at the block's last record (its VIF is the
    /// one judged in the next block).
    trailing: Trailing<'a>,
}

#[derive(Serialize)]
struct Trailing<'a> {
    window: &'a str,
    #[serde(flatten)]
    report: &'a QualityReport,
}

impl Router {
    /// The output of a judged message, appended to `out`. Under `halt` a FAIL record is an
    /// error instead: nothing of the transaction is committed and the stage stops.
    pub(super) fn route(
        &self,
        j: Judged,
        topic: &Arc<str>,
        partition: i32,
        out: &mut Vec<Output>,
    ) -> Result<Routed, TransformError> {
        let Judged { held, verdict } = j;
        let offset = held.offset;
        let r = match held.item {
            Item::Replayed(_) => return Ok(Routed::Skipped),
            Item::DeadLetter(o) => {
                out.push(o);
                return Ok(Routed::DeadLetter);
            }
            Item::Record(r) => r,
        };
        if verdict.decision != Decision::Fail {
            return Ok(self.scored(topic, partition, offset, r, &verdict, out));
        }
        match self.policy {
            Policy::Quarantine => {
                out.push(self.quarantined(topic, partition, offset, r, &verdict));
                Ok(Routed::Quarantined)
            }
            Policy::Flag => match self.scored(topic, partition, offset, r, &verdict, out) {
                Routed::Scored => Ok(Routed::Flagged),
                other => Ok(other),
            },
            Policy::Halt => Err(TransformError::Fatal(format!(
                "quality gate halted (score.policy = halt): {topic}[{partition}]@{offset} \
                 judged on window {} FAIL: {}; nothing from offset {offset} on is committed: \
                 fix the cause (or change score.policy) and start the stage again",
                verdict.window, verdict.message
            ))),
        }
    }

    /// A FAIL record to quarantine: the original key, bytes and headers unchanged, plus
    /// the envelope and the window header.
    fn quarantined(
        &self,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        r: HeldRecord,
        v: &Verdict,
    ) -> Output {
        let message = format!("quality window {} FAIL: {}", v.window, v.message);
        let hs = DeadLetter {
            stage: STAGE,
            kind: QUALITY_FAIL,
            message: &message,
            source: Some((topic, partition, offset)),
        }
        .headers(r.headers.as_ref().map(|h| h.as_borrowed()));
        drop(r.record);
        Output::to(self.quarantine.clone())
            .key(r.key)
            .payload(r.payload)
            .headers(with_header(hs, WINDOW_HEADER, &v.window))
            .origin(Origin {
                topic: topic.clone(),
                partition,
                offset,
                // The quarantined record is the original already: should it be too large,
                // its dead letter refers to it by coordinates.
                payload: None,
                headers: None,
                headers_in_output: 0,
            })
    }

    /// A record to scored with the window fields (its original bytes kept as the origin,
    /// dead-lettered instead should the scored record be too large for the topic), or its
    /// dead letter when the scored schema cannot hold it (poison).
    fn scored(
        &self,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        r: HeldRecord,
        v: &Verdict,
        out: &mut Vec<Output>,
    ) -> Routed {
        let HeldRecord {
            mut record,
            datum,
            key,
            payload,
            headers,
        } = r;
        // The output fields' names, made once.
        static NAMES: LazyLock<[Name; 3]> =
            LazyLock::new(|| [WINDOW_FIELD, DECISION_FIELD, REASONS_FIELD].map(Name::from));
        let decision = v.decision.as_str();
        let mut quality = Record {
            fields: Vec::with_capacity(3),
        };
        quality.set_shared(&NAMES[0], Value::String(v.window.clone()));
        quality.set_shared(&NAMES[1], Value::String(decision.to_string()));
        if self.reasons_field {
            let reasons = (!v.message.is_empty()).then(|| Value::String(field_text(&v.message)));
            quality.set_shared(&NAMES[2], reasons.unwrap_or(Value::Null));
        }
        let encoded = match (&self.extension, datum) {
            (Some(ext), Some(at)) => ext.encode(&payload[at..], &quality),
            _ => {
                record.fields.reserve(quality.fields.len());
                for (name, value) in quality.fields {
                    record.set_shared(&name, value);
                }
                self.codec_out.encode(&record)
            }
        };
        drop(record);
        match encoded {
            Ok(bytes) => {
                // Input headers that are all carried over (clean's output) become the output's
                // list as they are, the origin pointing at them; others are copied, filtered.
                let (mut hs, headers, headers_in_output) = match headers {
                    Some(hs) if hs.iter().all(|h| KEEP_HEADERS.contains(&h.key)) => {
                        let n = hs.count();
                        (hs, None, n)
                    }
                    other => (keep(other.as_ref(), &KEEP_HEADERS), other, 0),
                };
                hs = with_header(hs, WINDOW_HEADER, &v.window);
                hs = with_header(hs, DECISION_HEADER, decision);
                if !v.message.is_empty() {
                    hs = with_header(hs, REASONS_HEADER, &v.message);
                }
                out.push(
                    Output::to(self.scored.clone())
                        .key(key)
                        .payload(bytes)
                        .headers(hs)
                        .origin(Origin {
                            topic: topic.clone(),
                            partition,
                            offset,
                            payload: Some(payload),
                            headers,
                            headers_in_output,
                        }),
                );
                Routed::Scored
            }
            Err(e) => {
                let hs = DeadLetter {
                    stage: STAGE,
                    kind: e.kind(),
                    message: &e.to_string(),
                    source: Some((topic, partition, offset)),
                }
                .headers(headers.as_ref().map(|h| h.as_borrowed()));
                let mut o = Output::to(self.dead_letter.clone())
                    .key(key)
                    .payload(payload)
                    .headers(hs);
                o.dead_letter = Some(e.kind());
                out.push(o);
                Routed::DeadLetter
            }
        }
    }

    /// The report of a block that ended, and what to log when it commits.
    pub(super) fn report(&self, end: &BlockEnd, info: &baseline::Info) -> (Output, Closed) {
        let t = &end.tally;
        let id = format!(
            "{}/{}/{}-{}",
            end.topic, end.partition, t.first_offset, t.last_offset
        );
        let worst = t.worst.as_deref();
        let decisions = BTreeMap::from([("PASS", t.pass), ("WARN", t.warn), ("FAIL", t.fail)]);
        let json = serde_json::to_string(&BlockReport {
            window: &id,
            stage: STAGE,
            instance: &self.instance,
            topic: &end.topic,
            partition: end.partition,
            first_offset: t.first_offset,
            last_offset: t.last_offset,
            messages: t.messages,
            dead_letters: t.dead_letters,
            rows: t.pass + t.warn + t.fail,
            decision: t.decision(),
            reasons: worst.map_or(&[], |v| v.reasons.as_slice()),
            decided_on: worst.map(|v| v.window.as_str()),
            decisions,
            policy: self.policy,
            baseline: info.clone(),
            psi_measured: end.psi_measured,
            trailing: Trailing {
                window: &end.window,
                report: &end.report,
            },
        })
        .unwrap_or_else(|e| format!("{{\"window\": {id:?}, \"error\": {:?}}}", e.to_string()));
        let output = Output::to(self.quality_topic.clone())
            .key(Some(id.clone().into_bytes()))
            .payload(json.clone().into_bytes());
        let closed = Closed {
            window: id,
            topic: end.topic.clone(),
            partition: end.partition,
            decision: t.decision(),
            rows: t.pass + t.warn + t.fail,
            messages: t.messages,
            failed: t.fail,
            dead_letters: t.dead_letters,
            baseline: info.source,
            psi: end.psi_measured,
            reasons: worst.map(|v| v.message.clone()).unwrap_or_default(),
            report: json,
        };
        (output, closed)
    }
}

/// Longest `quality_reasons` value: what a default MySQL string column holds
/// (`sink.mysql.string_length`), so both sinks store the record; the full list is in the
/// `etl.quality.reasons` header and the block's report.
const REASONS_MAX_CHARS: usize = 255;

/// `text`, cut to [`REASONS_MAX_CHARS`] characters (ending in `…` when cut).
fn field_text(text: &str) -> String {
    if text.chars().count() <= REASONS_MAX_CHARS {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(REASONS_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// The named headers of `headers`, owned.
fn keep(headers: Option<&OwnedHeaders>, names: &[&str]) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(names.len() + 1);
    if let Some(hs) = headers {
        for header in hs.iter() {
            if names.contains(&header.key) {
                out = out.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
    }
    out
}

fn with_header(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::headers as h;

    #[test]
    fn only_the_named_headers_are_kept() {
        let hs = OwnedHeaders::new()
            .insert(Header {
                key: h::TRACEPARENT,
                value: Some("00-a-b-01"),
            })
            .insert(Header {
                key: h::ERROR_KIND,
                value: Some("x"),
            });
        let kept = with_header(keep(Some(&hs), &KEEP_HEADERS), WINDOW_HEADER, "t/0/0-9");
        assert_eq!(kept.count(), 2);
        assert_eq!(h::get_str(&kept, h::TRACEPARENT), Some("00-a-b-01"));
        assert_eq!(h::get_str(&kept, WINDOW_HEADER), Some("t/0/0-9"));
        assert_eq!(keep(None, &KEEP_HEADERS).count(), 0);
    }

    #[test]
    fn long_reasons_are_cut_for_the_field() {
        assert_eq!(
            field_text("a: PSI 0.3 >= 0.25 (FAIL)"),
            "a: PSI 0.3 >= 0.25 (FAIL)"
        );
        let long = "é".repeat(300);
        let cut = field_text(&long);
        assert_eq!(cut.chars().count(), 255);
        assert!(cut.ends_with('…'));
    }
}
