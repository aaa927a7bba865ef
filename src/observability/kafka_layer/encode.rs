//! The JSON shape of a shipped event or span: [`LogRecord`], the field visitor that fills it
//! (message, trace id, the `log.*` fields of bridged `log` records, cut strings), and the
//! enclosing spans kept in the registry's span extensions.
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::registry::LookupSpan;

/// Longest `message` shipped; longer ones are cut (a log line is not a payload).
const MAX_MESSAGE: usize = 16 * 1024;
/// Longest string field value shipped.
const MAX_FIELD: usize = 4 * 1024;

pub(super) fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One message on the logs topic.
#[derive(Serialize)]
pub(super) struct LogRecord<'a> {
    pub(super) timestamp: String,
    pub(super) level: &'static str,
    /// `event`, or `span` for a span-close record.
    pub(super) kind: &'static str,
    pub(super) pipeline: &'a str,
    pub(super) stage: &'a str,
    pub(super) instance: &'a str,
    pub(super) target: &'a str,
    pub(super) message: String,
    pub(super) fields: Map<String, Value>,
    pub(super) trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) end: Option<String>,
    /// Enclosing spans, outermost first.
    pub(super) spans: Vec<SpanOut>,
}

#[derive(Serialize)]
pub(super) struct SpanOut {
    name: &'static str,
    fields: Map<String, Value>,
}

/// What the layer keeps per span (in the registry's span extensions).
pub(super) struct SpanData {
    pub(super) start: DateTime<Utc>,
    pub(super) started: Instant,
    pub(super) fields: Map<String, Value>,
    pub(super) trace_id: Option<String>,
}

/// Collects fields into JSON; picks out `message`, `trace_id`/`traceparent` and the `log.*`
/// fields that `tracing-log` adds to events bridged from the `log` crate.
#[derive(Default)]
pub(super) struct JsonVisitor {
    pub(super) fields: Map<String, Value>,
    pub(super) message: Option<String>,
    pub(super) trace_id: Option<String>,
    pub(super) log_target: Option<String>,
}

impl JsonVisitor {
    fn put(&mut self, name: &str, value: Value) {
        match name {
            "message" => {
                self.message = Some(match value {
                    Value::String(s) => truncate(s, MAX_MESSAGE),
                    v => v.to_string(),
                });
                return;
            }
            "log.target" => {
                if let Value::String(s) = value {
                    self.log_target = Some(s);
                }
                return;
            }
            n if n.starts_with("log.") => return,
            "trace_id" => {
                if let Value::String(s) = &value {
                    if !s.is_empty() {
                        self.trace_id = Some(s.clone());
                    }
                }
            }
            "traceparent" => {
                if let Value::String(s) = &value {
                    if let Some(id) = crate::observability::trace::trace_id(s) {
                        self.trace_id.get_or_insert_with(|| id.to_string());
                    }
                }
            }
            _ => {}
        }
        let value = match value {
            Value::String(s) => Value::String(truncate(s, MAX_FIELD)),
            v => v,
        };
        self.fields.insert(name.to_string(), value);
    }
}

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field.name(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), Value::from(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field.name(), Value::String(value.to_string()));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field.name(), Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), Value::String(value.to_string()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut s = value.to_string();
        let mut source = value.source();
        while let Some(e) = source {
            s.push_str(": ");
            s.push_str(&e.to_string());
            source = e.source();
        }
        self.put(field.name(), Value::String(s));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field.name(), Value::String(format!("{value:?}")));
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Copies the spans (outermost first) into the record; the innermost span with a trace id
/// gives the record its trace id when the event has none of its own.
pub(super) fn collect_spans<'a, R, I>(spans: I, rec: &mut LogRecord<'_>)
where
    R: LookupSpan<'a> + 'a,
    I: Iterator<Item = tracing_subscriber::registry::SpanRef<'a, R>>,
{
    let mut span_trace = None;
    for span in spans {
        let ext = span.extensions();
        let fields = match ext.get::<SpanData>() {
            Some(d) => {
                if d.trace_id.is_some() {
                    span_trace = d.trace_id.clone();
                }
                d.fields.clone()
            }
            None => Map::new(),
        };
        rec.spans.push(SpanOut {
            name: span.metadata().name(),
            fields,
        });
    }
    if rec.trace_id.is_none() {
        rec.trace_id = span_trace;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitor_takes_trace_id_from_traceparent_and_hides_log_fields() {
        let mut v = JsonVisitor::default();
        v.put(
            "traceparent",
            Value::String("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        );
        v.put("log.target", Value::String("librdkafka".into()));
        v.put("log.line", Value::from(3));
        v.put("message", Value::String("hello".into()));
        assert_eq!(
            v.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(v.log_target.as_deref(), Some("librdkafka"));
        assert_eq!(v.message.as_deref(), Some("hello"));
        assert_eq!(v.fields.len(), 1, "{:?}", v.fields);
    }

    #[test]
    fn long_strings_are_cut_on_a_char_boundary() {
        let s = truncate("é".repeat(10), 5);
        assert!(s.ends_with('…'));
        assert!(s.len() <= 5 + '…'.len_utf8());
    }
}
