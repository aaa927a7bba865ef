//! The human-readable report of `etl-pipe profile` (without `--json`): one line per field,
//! then the VIF coverage, the decision with its reasons, and the notes.
use std::fmt::Write as _;

use super::{Format, ProfileOutput};
use crate::quality::VifStatus;

fn pct(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-3) => format!("{x:.3e}"),
        Some(x) => format!("{x:.4}"),
    }
}

fn clip(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

/// The human-readable report.
pub fn table(out: &ProfileOutput) -> String {
    let r = &out.report;
    let mut s = String::new();
    let fmt = match out.format {
        Format::Csv => "csv",
        _ => "jsonl",
    };
    let _ = writeln!(s, "profile of {} ({fmt}, {} rows)", out.file, r.rows);
    match &out.baseline {
        Some(b) => {
            let _ = writeln!(s, "baseline  {} ({}, {} rows)", b.path, b.from, b.rows);
        }
        None => {
            let _ = writeln!(s, "baseline  none (PSI not computed; pass --baseline FILE)");
        }
    }
    let w = r
        .fields
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 32);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<w$}  {:<11}  {:>8}  {:>8}  {:>11}  {:>11}  {:>8}  {:>8}  decision",
        "field", "kind", "missing", "type err", "mean", "std", "psi", "vif"
    );
    let _ = writeln!(s, "{}", "-".repeat(w + 90));
    for f in &r.fields {
        let psi = match f.psi {
            Some(v) => format!("{v:.4}"),
            None => "-".into(),
        };
        let vif = match (f.vif, f.vif_status) {
            (Some(v), _) if v.0.is_infinite() => "inf".into(),
            (Some(v), _) => format!("{:.2}", v.0),
            (None, VifStatus::Constant) => "const".into(),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<w$}  {:<11}  {:>8}  {:>8}  {:>11}  {:>11}  {:>8}  {:>8}  {}",
            clip(&f.name, w),
            f.kind.as_str(),
            pct(f.missing_ratio),
            pct(f.type_error_ratio),
            num(f.mean),
            num(f.std),
            psi,
            vif,
            f.decision
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "VIF: {} complete rows of {} ({} numeric field{})",
        r.vif.rows_used,
        r.rows,
        r.vif.fields,
        if r.vif.fields == 1 { "" } else { "s" }
    );
    let _ = writeln!(s, "decision: {}", r.decision);
    for reason in &r.reasons {
        let _ = writeln!(s, "  {:<4}  {}", reason.level, reason.message);
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "notes:");
        for n in &r.notes {
            let _ = writeln!(s, "  - {n}");
        }
    }
    s
}
