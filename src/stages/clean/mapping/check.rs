//! The checks every field value goes through, raw, lineage or derived: a missing value takes
//! the `default`, or is null, or fails `required`; a present one must be within `min`/`max` and
//! among `allowed`.
use serde_json::Value as Json;

use super::coerce::{show, ConvError};
use super::lineage::LineageField;
use super::plan::{Plan, Source};
use super::{ErrorKind, MappingError};
use crate::record::Value;

impl Plan {
    /// A value or its absence → the field's value: default, null, or `missing_required`;
    /// then the range and enum checks.
    pub(super) fn resolve(&self, v: Option<Value>) -> Result<Value, MappingError> {
        let Some(v) = v else {
            return self.absent();
        };
        check_value(&self.name, &v, self.min, self.max, &self.allowed).map_err(
            |(kind, message)| MappingError {
                field: Some(self.name.to_string()),
                kind,
                message,
            },
        )?;
        Ok(v)
    }

    /// The value of a field the record has no value for.
    fn absent(&self) -> Result<Value, MappingError> {
        if let Some(d) = &self.default {
            return Ok(d.clone());
        }
        if !self.required {
            return Ok(Value::Null);
        }
        let name = &self.name;
        let message = match &self.source {
            Source::Raw { from, .. } => {
                format!("`{name}`: required, but raw field `{from}` is missing or null")
            }
            Source::Lineage(LineageField::TraceId) => {
                format!("`{name}`: required, but the message has no valid traceparent header")
            }
            Source::Lineage(LineageField::FetchedAt) => format!(
                "`{name}`: required, but the message has neither an etl.fetched_at header nor a timestamp"
            ),
            _ => format!("`{name}`: required, but it has no value"),
        };
        Err(MappingError {
            field: Some(name.to_string()),
            kind: ErrorKind::MissingRequired,
            message,
        })
    }
}

/// The range (`min`, `max`) and enum (`allowed`) checks of one value; null passes `allowed`.
pub(super) fn check_value(
    name: &str,
    v: &Value,
    min: Option<f64>,
    max: Option<f64>,
    allowed: &Option<Vec<Value>>,
) -> Result<(), ConvError> {
    if let Some(x) = v.as_f64() {
        if let Some(lo) = min {
            if x < lo {
                return Err((
                    ErrorKind::OutOfRange,
                    format!("`{name}`: {} is below the minimum {lo}", show_value(v)),
                ));
            }
        }
        if let Some(hi) = max {
            if x > hi {
                return Err((
                    ErrorKind::OutOfRange,
                    format!("`{name}`: {} is above the maximum {hi}", show_value(v)),
                ));
            }
        }
    }
    if let Some(list) = allowed {
        if !v.is_null() && !list.contains(v) {
            return Err((
                ErrorKind::NotAllowed,
                format!(
                    "`{name}`: {} is not one of the allowed values [{}]",
                    show_value(v),
                    list.iter().map(show_value).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A typed value as shown in an error message.
pub(super) fn show_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Long(i) | Value::TimestampMillis(i) => i.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Double(x) => x.to_string(),
        Value::String(s) => show(&Json::String(s.clone())),
        // Nested values, decimals, uuids, enums and the other logical types: as their JSON.
        other => serde_json::to_string(other).unwrap_or_else(|_| other.kind().to_string()),
    }
}
