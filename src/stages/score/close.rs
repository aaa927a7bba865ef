//! Closing a window: its [`QualityReport`] (PSI against the baseline unless the baseline was
//! built from these very records; PSI and VIF not judged below `score.drift_min_rows`), the
//! routing of its records (PASS / WARN → scored, FAIL → quarantine, undecodable → dead
//! letter) and the report published to the quality topic.
use std::sync::Arc;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::Serialize;

use super::baseline::{self, Active, Baselines, Source};
use super::config::{DECISION_FIELD, WINDOW_FIELD};
use super::window::{Closed, Due, Held, HeldRecord, Item, Window};
use super::{KEEP_HEADERS, LOG_TARGET, QUALITY_FAIL, STAGE, WINDOW_HEADER};
use crate::codec::Codec;
use crate::kafka::eos::{Origin, Output};
use crate::kafka::headers::DeadLetter;
use crate::quality::{
    Baseline, Decision, FieldSpec, Metric, QualityConfig, QualityReport, WindowStats,
};
use crate::record::Value;

/// What closing a window needs: how to judge it and where its outputs go.
pub(super) struct Closer {
    pub(super) codec_out: Arc<Codec>,
    pub(super) specs: Vec<FieldSpec>,
    pub(super) quality: QualityConfig,
    pub(super) drift_min_rows: u64,
    pub(super) scored: Arc<str>,
    pub(super) quarantine: Arc<str>,
    pub(super) quality_topic: Arc<str>,
    pub(super) dead_letter: Arc<str>,
    pub(super) instance: String,
}

/// What is known of the window being closed besides its messages.
struct Closing {
    /// `<topic>/<partition>/<first offset>-<last offset>`.
    id: String,
    topic: String,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    /// Kafka timestamps of the first and last message.
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    opened_at_ms: i64,
    messages: usize,
    closed_by: &'static str,
}

/// The window's report and how it was made.
struct Judged {
    report: QualityReport,
    baseline: baseline::Info,
    psi_measured: bool,
    drift_judged: bool,
}

/// The window's outputs, and how many records went to quarantine and to dead-letter.
#[derive(Default)]
struct Routed {
    outputs: Vec<Output>,
    quarantined: u64,
    dead_letters: u64,
}

/// The report published to the quality topic: where the window is, what it held, and the
/// quality figures and decision ([`QualityReport`], flattened).
#[derive(Serialize)]
struct WindowReport<'a> {
    window: &'a str,
    stage: &'static str,
    instance: &'a str,
    topic: &'a str,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    /// Messages in the window: decoded records (`rows`) + dead letters.
    messages: usize,
    dead_letters: u64,
    /// `records` (the window was full) or `age` (`window_max_age` passed).
    closed_by: &'static str,
    opened_at: Option<String>,
    closed_at: Option<String>,
    /// Kafka timestamps of the first and last message.
    first_timestamp: Option<String>,
    last_timestamp: Option<String>,
    /// Where the window's records went.
    routed_to: &'a str,
    baseline: baseline::Info,
    /// Whether PSI was measured (a baseline, and not one built from these records).
    psi_measured: bool,
    /// Whether PSI and VIF counted in the decision (`rows` ≥ `score.drift_min_rows`).
    drift_judged: bool,
    #[serde(flatten)]
    report: &'a QualityReport,
}

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl Closer {
    /// Evaluates a window and computes its outputs; `None` for a window without messages.
    pub(super) fn close(
        &self,
        w: Window,
        closed_by: &'static str,
        baselines: &Baselines,
    ) -> Option<Due> {
        let Window {
            topic,
            partition,
            opened,
            opened_at_ms,
            held,
        } = w;
        let (first, last) = (held.first()?, held.last()?);
        let c = Closing {
            id: format!("{topic}/{partition}/{}-{}", first.offset, last.offset),
            first_offset: first.offset,
            last_offset: last.offset,
            first_ts: first.timestamp,
            last_ts: last.timestamp,
            topic,
            partition,
            opened_at_ms,
            messages: held.len(),
            closed_by,
        };
        let judged = self.judge(&held, &c, baselines);
        let reasons = judged
            .report
            .reasons
            .iter()
            .map(|r| r.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let mut routed = self.route(held, &c, &judged.report, &reasons);
        let json = self.report_json(&c, &judged, &routed);
        routed.outputs.push(
            Output::to(self.quality_topic.clone())
                .key(Some(c.id.clone().into_bytes()))
                .payload(json.clone().into_bytes()),
        );
        tracing::trace!(target: LOG_TARGET, window = %c.id, open_for = ?opened.elapsed(), "window closed");
        Some(Due {
            first_offset: c.first_offset,
            outputs: routed.outputs,
            closed: Closed {
                window: c.id,
                topic: c.topic.clone(),
                partition: c.partition,
                decision: judged.report.decision,
                rows: judged.report.rows,
                messages: c.messages,
                quarantined: routed.quarantined,
                dead_letters: routed.dead_letters,
                closed_by,
                baseline: judged.baseline.source,
                psi: judged.psi_measured,
                reasons,
                report: json,
            },
            topic: c.topic,
            partition: c.partition,
        })
    }

    /// The quality report of the window's decoded records.
    fn judge(&self, held: &[Held], c: &Closing, baselines: &Baselines) -> Judged {
        let active = baselines.active();
        let info = baselines.info();
        let (psi_baseline, note) = psi_baseline(active.as_deref(), &info, c);
        let psi_measured = psi_baseline.is_some();
        let mut stats = WindowStats::new(self.specs.clone(), psi_baseline);
        for h in held {
            if let Item::Record(r) = &h.item {
                stats.push(&r.record);
            }
        }
        let mut report = stats.report(&self.quality);
        if let Some(n) = note {
            report
                .notes
                .retain(|n| n != "PSI needs a baseline; none given");
            report.notes.push(n);
        }
        let drift_judged = report.rows >= self.drift_min_rows;
        if !drift_judged {
            unjudge_drift(&mut report, self.drift_min_rows);
        }
        Judged {
            report,
            baseline: info,
            psi_measured,
            drift_judged,
        }
    }

    /// Each message's output: scored, quarantined or dead-lettered.
    fn route(&self, held: Vec<Held>, c: &Closing, report: &QualityReport, reasons: &str) -> Routed {
        let fail = report.decision == Decision::Fail;
        let decision = report.decision.to_string();
        let fail_message = format!("quality window {} FAIL: {reasons}", c.id);
        let mut routed = Routed {
            outputs: Vec::with_capacity(c.messages + 1),
            ..Routed::default()
        };
        let topic: Arc<str> = c.topic.as_str().into();
        for hm in held {
            match hm.item {
                Item::DeadLetter(o) => {
                    routed.dead_letters += 1;
                    routed.outputs.push(o);
                }
                Item::Record(r) if fail => {
                    routed.quarantined += 1;
                    let o = self
                        .quarantined(c, hm.offset, r, &fail_message)
                        .origin(Origin {
                            topic: topic.clone(),
                            partition: c.partition,
                            offset: hm.offset,
                            // The quarantined record is the original already: should it be
                            // too large, its dead letter refers to it by coordinates.
                            payload: None,
                            headers: None,
                        });
                    routed.outputs.push(o);
                }
                Item::Record(r) => match self.scored(c, &topic, hm.offset, r, &decision) {
                    Ok(o) => routed.outputs.push(o),
                    Err(dead_letter) => {
                        routed.dead_letters += 1;
                        routed.outputs.push(dead_letter);
                    }
                },
            }
        }
        routed
    }

    /// A record of a FAIL window: to quarantine, original key, bytes and headers unchanged,
    /// plus the envelope and the window header.
    fn quarantined(&self, c: &Closing, offset: i64, r: HeldRecord, message: &str) -> Output {
        let hs = DeadLetter {
            stage: STAGE,
            kind: QUALITY_FAIL,
            message,
            source: Some((&c.topic, c.partition, offset)),
        }
        .headers(r.headers.as_ref().map(|h| h.as_borrowed()));
        drop(r.record);
        Output::to(self.quarantine.clone())
            .key(r.key)
            .payload(r.payload)
            .headers(with_header(hs, WINDOW_HEADER, &c.id))
    }

    /// A record of a PASS / WARN window, with the window fields, to scored (its original bytes
    /// kept as the origin, dead-lettered instead should the scored record be too large for
    /// the topic); `Err`: its dead letter when the scored schema cannot hold it (poison).
    fn scored(
        &self,
        c: &Closing,
        topic: &Arc<str>,
        offset: i64,
        r: HeldRecord,
        decision: &str,
    ) -> Result<Output, Output> {
        let HeldRecord {
            mut record,
            key,
            payload,
            headers,
        } = r;
        record.set(WINDOW_FIELD, Value::String(c.id.clone()));
        record.set(DECISION_FIELD, Value::String(decision.to_string()));
        match self.codec_out.encode(&record) {
            Ok(bytes) => {
                let hs = keep(headers.as_ref(), &KEEP_HEADERS);
                Ok(Output::to(self.scored.clone())
                    .key(key)
                    .payload(bytes)
                    .headers(with_header(hs, WINDOW_HEADER, &c.id))
                    .origin(Origin {
                        topic: topic.clone(),
                        partition: c.partition,
                        offset,
                        payload: Some(payload),
                        headers,
                    }))
            }
            Err(e) => {
                let hs = DeadLetter {
                    stage: STAGE,
                    kind: e.kind(),
                    message: &e.to_string(),
                    source: Some((&c.topic, c.partition, offset)),
                }
                .headers(headers.as_ref().map(|h| h.as_borrowed()));
                let mut o = Output::to(self.dead_letter.clone())
                    .key(key)
                    .payload(payload)
                    .headers(hs);
                o.dead_letter = Some(e.kind());
                Err(o)
            }
        }
    }

    /// The JSON published to the quality topic.
    fn report_json(&self, c: &Closing, judged: &Judged, routed: &Routed) -> String {
        let fail = judged.report.decision == Decision::Fail;
        let routed_to: &str = if fail { &self.quarantine } else { &self.scored };
        let now_ms = chrono::Utc::now().timestamp_millis();
        serde_json::to_string(&WindowReport {
            window: &c.id,
            stage: STAGE,
            instance: &self.instance,
            topic: &c.topic,
            partition: c.partition,
            first_offset: c.first_offset,
            last_offset: c.last_offset,
            messages: c.messages,
            dead_letters: routed.dead_letters,
            closed_by: c.closed_by,
            opened_at: rfc3339(c.opened_at_ms),
            closed_at: rfc3339(now_ms),
            first_timestamp: c.first_ts.and_then(rfc3339),
            last_timestamp: c.last_ts.and_then(rfc3339),
            routed_to,
            baseline: judged.baseline.clone(),
            psi_measured: judged.psi_measured,
            drift_judged: judged.drift_judged,
            report: &judged.report,
        })
        .unwrap_or_else(|e| format!("{{\"window\": {:?}, \"error\": {:?}}}", c.id, e.to_string()))
    }
}

/// The baseline this window's PSI is measured against, or the note saying why there is none.
fn psi_baseline<'a>(
    active: Option<&'a Active>,
    info: &baseline::Info,
    c: &Closing,
) -> (Option<&'a Baseline>, Option<String>) {
    match active {
        Some(a) if a.covers(&c.topic, c.partition, c.first_offset, c.last_offset) => (
            None,
            Some(format!(
                "PSI not measured: records of this window are part of the baseline \
                 ({} rows, {}) built from the first records",
                a.baseline.rows, a.origin
            )),
        ),
        Some(a) => (Some(&a.baseline), None),
        None => (
            None,
            Some(match info.source {
                Source::Building => format!(
                    "PSI not measured: the baseline is being built from the first {} records \
                     ({} so far)",
                    info.target.unwrap_or_default(),
                    info.rows
                ),
                _ => "PSI not measured: no baseline (score.baseline is not set and \
                      score.baseline_from_first_records = 0)"
                    .to_string(),
            }),
        ),
    }
}

/// Takes PSI and VIF out of the decision of a window too small for them (they stay in
/// the field figures): drops their reasons, recomputes the field and window decisions.
fn unjudge_drift(report: &mut QualityReport, min_rows: u64) {
    let before = report.reasons.len();
    report
        .reasons
        .retain(|r| !matches!(r.metric, Metric::Psi | Metric::Vif));
    for f in &mut report.fields {
        f.decision = report
            .reasons
            .iter()
            .filter(|r| r.field.as_deref() == Some(f.name.as_str()))
            .map(|r| r.level)
            .max()
            .unwrap_or(Decision::Pass);
    }
    report.decision = report
        .reasons
        .iter()
        .map(|r| r.level)
        .max()
        .unwrap_or(Decision::Pass);
    report.notes.push(format!(
        "PSI and VIF not judged: {} rows < score.drift_min_rows ({min_rows}){}",
        report.rows,
        if report.reasons.len() < before {
            "; their WARN/FAIL reasons were dropped"
        } else {
            ""
        }
    ));
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
    use crate::quality::{BaselineBuilder, FieldKind};
    use crate::record::Record;

    fn rec(x: i32, name: Option<&str>) -> Record {
        let mut r = Record::new();
        r.set("x", Value::Int(x));
        r.set(
            "name",
            name.map_or(Value::Null, |n| Value::String(n.into())),
        );
        r
    }

    #[test]
    fn a_small_window_keeps_missing_ratios_but_does_not_judge_psi() {
        let specs = vec![
            FieldSpec::new("x", FieldKind::Numeric),
            FieldSpec::new("name", FieldKind::Categorical),
        ];
        let cfg = QualityConfig::default();
        let mut b = BaselineBuilder::new(specs.clone(), &cfg);
        for i in 0..1000 {
            b.push(&rec(i % 100, Some("a")));
        }
        let baseline = b.build();
        // Ten rows far above the baseline: PSI FAILs.
        let mut w = WindowStats::new(specs.clone(), Some(&baseline));
        for i in 0..10 {
            w.push(&rec(500 + i, Some("a")));
        }
        let mut report = w.report(&cfg);
        assert_eq!(report.decision, Decision::Fail);
        unjudge_drift(&mut report, 100);
        assert_eq!(report.decision, Decision::Pass, "{:?}", report.reasons);
        assert!(report.fields[0].psi.is_some(), "the figure stays");
        assert_eq!(report.fields[0].decision, Decision::Pass);
        assert!(report.notes.iter().any(|n| n.contains("drift_min_rows")));

        // Missing names still FAIL a small window.
        let mut w = WindowStats::new(specs, Some(&baseline));
        for i in 0..10 {
            w.push(&rec(i, (i % 2 == 0).then_some("a")));
        }
        let mut report = w.report(&cfg);
        unjudge_drift(&mut report, 100);
        assert_eq!(report.decision, Decision::Fail);
        assert_eq!(report.fields[1].decision, Decision::Fail);
        assert!(report
            .reasons
            .iter()
            .all(|r| r.metric == Metric::MissingRatio));
    }

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
}
