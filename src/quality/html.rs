//! The self-contained HTML report of `etl-pipe profile --html OUT`: inline CSS and SVG bar
//! charts (PSI, VIF, missing and type-error ratios, and per field the baseline's and the
//! file's distribution over the PSI buckets side by side), no scripts, no network.
use std::fmt::Write as _;

use super::profile::ProfileOutput;
use super::{Decision, Distribution, FieldReport, Metric, QualityConfig, QualityReport, VifStatus};

const GREEN: &str = "#2e7d32";
const AMBER: &str = "#e0a000";
const RED: &str = "#c62828";
const GREY: &str = "#9e9e9e";
/// The baseline's bars in the distribution charts.
pub(super) const BASELINE: &str = "#78909c";

pub(super) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

pub(super) fn colour(d: Option<Decision>) -> &'static str {
    match d {
        Some(Decision::Pass) => GREEN,
        Some(Decision::Warn) => AMBER,
        Some(Decision::Fail) => RED,
        None => GREY,
    }
}

/// One bar: field name, value (None = not computed), its label, its level.
struct Bar {
    name: String,
    value: Option<f64>,
    label: String,
    level: Option<Decision>,
}

/// A horizontal bar chart as inline SVG. Values beyond `max` (or infinite) fill the axis
/// and end in an arrow; dashed lines mark the global WARN and FAIL thresholds.
fn chart(id: &str, bars: &[Bar], max: f64, warn: f64, fail: f64) -> String {
    const LABEL_W: f64 = 200.0;
    const BAR_W: f64 = 520.0;
    const ROW_H: f64 = 22.0;
    const TOP: f64 = 24.0;
    let width = LABEL_W + BAR_W + 110.0;
    let height = TOP + ROW_H * bars.len() as f64 + 8.0;
    let x = |v: f64| LABEL_W + BAR_W * (v / max).clamp(0.0, 1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" id="{id}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">"#
    );
    let _ = write!(
        s,
        r##"<line x1="{LABEL_W}" y1="{TOP}" x2="{LABEL_W}" y2="{}" stroke="#444"/>"##,
        height - 4.0
    );
    for (t, name, c) in [(warn, "WARN", AMBER), (fail, "FAIL", RED)] {
        if t.is_finite() && t <= max {
            let tx = x(t);
            let _ = write!(
                s,
                r#"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="{c}" stroke-dasharray="4 3"/><text x="{tx:.1}" y="14" font-size="11" fill="{c}" text-anchor="middle">{name} {t}</text>"#,
                TOP - 4.0,
                height - 4.0
            );
        }
    }
    for (i, b) in bars.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#,
            LABEL_W - 6.0,
            y + 15.0,
            esc(&b.name)
        );
        let c = colour(b.level);
        let label = esc(&b.label);
        match b.value {
            Some(v) => {
                let over = !v.is_finite() || v > max;
                let x1 = x(if v.is_finite() { v } else { max });
                let w = (x1 - LABEL_W).max(1.0);
                let _ = write!(
                    s,
                    r#"<rect class="bar" x="{LABEL_W}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{c}"><title>{} = {label}</title></rect>"#,
                    y + 4.0,
                    ROW_H - 8.0,
                    esc(&b.name)
                );
                if over {
                    let _ = write!(
                        s,
                        r#"<path d="M{:.1} {:.1} l8 7 l-8 7 z" fill="{c}"/>"#,
                        x1,
                        y + 4.0
                    );
                }
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" font-size="12">{label}</text>"#,
                    x1 + if over { 12.0 } else { 4.0 },
                    y + 15.0
                );
            }
            None => {
                let _ = write!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" font-size="12" fill="#777">{label}</text>"##,
                    LABEL_W + 4.0,
                    y + 15.0
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// A scale showing every value up to `cap` (values above it are clipped with an arrow).
fn scale(values: impl Iterator<Item = f64>, fail: f64, floor: f64, cap: f64) -> f64 {
    let top = values.filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let want = if fail.is_finite() {
        (fail * 1.5).max(top * 1.05)
    } else {
        top * 1.1
    };
    want.max(floor).min(cap.max(floor))
}

fn level(cfg: &QualityConfig, f: &FieldReport, m: Metric, v: f64) -> Option<Decision> {
    Some(
        cfg.thresholds(&f.name, m)
            .judge(v)
            .map_or(Decision::Pass, |(d, _)| d),
    )
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "&ndash;".into(),
        Some(x) if x.is_infinite() => "inf".into(),
        Some(x) if x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-3) => format!("{x:.3e}"),
        Some(x) => format!("{x:.4}"),
    }
}

fn status(s: impl serde::Serialize) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default()
}

/// The whole HTML document.
pub fn render(out: &ProfileOutput, cfg: &QualityConfig) -> String {
    let r = &out.report;
    let mut h = String::new();
    let title = format!("Quality profile: {}", out.file);
    head(&mut h, &title, "");
    summary(&mut h, out, &title);
    psi_section(&mut h, out, cfg);
    distribution_section(&mut h, r, cfg);
    vif_section(&mut h, r, cfg);
    ratio_sections(&mut h, r, cfg);
    figures_table(&mut h, r);
    if !r.notes.is_empty() {
        h.push_str("<h2>Notes</h2><ul>");
        for n in &r.notes {
            let _ = write!(h, "<li>{}</li>", esc(n));
        }
        h.push_str("</ul>");
    }
    h.push_str(r#"<p class="meta">Generated by etl-pipe profile. PSI = &Sigma; (a&minus;e)&middot;ln(a/e) over baseline quantile bins / categories, proportions floored at epsilon; VIF = 1/(1&minus;R&sup2;) from the correlation matrix of complete rows.</p></body></html>"#);
    h.push('\n');
    h
}

/// The document head with its inline style sheet.
pub(super) fn head(h: &mut String, title: &str, extra_css: &str) {
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; max-width: 1100px; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }}
.badge {{ display: inline-block; padding: 3px 10px; border-radius: 4px; color: #fff; font-weight: 600; }}
table {{ border-collapse: collapse; font-size: 13px; }} th, td {{ padding: 4px 8px; border-bottom: 1px solid #eee; text-align: right; }}
th {{ background: #f5f5f5; }} td.l, th.l {{ text-align: left; }}
.meta {{ color: #555; font-size: 13px; }} svg text {{ font-family: inherit; }}
li {{ font-size: 13px; }}
.dist {{ display: inline-block; vertical-align: top; margin: 0 18px 18px 0; }}
.dist h3 {{ font-size: 14px; margin: 6px 0; }} .dist .badge {{ font-size: 12px; padding: 1px 6px; }}
.swatch {{ display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; }}
{extra_css}
</style></head><body>
"#,
        esc(title)
    );
}

/// Title, what was profiled, the decision and its reasons.
fn summary(h: &mut String, out: &ProfileOutput, title: &str) {
    let r = &out.report;
    let _ = write!(
        h,
        r#"<h1>{}</h1><p class="meta">{} rows &middot; {} fields &middot; baseline: {}</p>"#,
        esc(title),
        r.rows,
        r.fields.len(),
        match &out.baseline {
            Some(b) => format!("{} ({}, {} rows)", esc(&b.path), esc(&b.from), b.rows),
            None => "none (PSI not computed)".into(),
        }
    );
    let _ = write!(
        h,
        r#"<p>Decision: <span class="badge" id="decision" style="background:{}">{}</span></p>"#,
        colour(Some(r.decision)),
        r.decision
    );
    if !r.reasons.is_empty() {
        h.push_str("<ul>");
        for reason in &r.reasons {
            let _ = write!(
                h,
                r#"<li><b style="color:{}">{}</b> {}</li>"#,
                colour(Some(reason.level)),
                reason.level,
                esc(&reason.message)
            );
        }
        h.push_str("</ul>");
    }
}

fn psi_section(h: &mut String, out: &ProfileOutput, cfg: &QualityConfig) {
    let r = &out.report;
    h.push_str("<h2>PSI against the baseline</h2>");
    if out.baseline.is_none() {
        h.push_str(r#"<p class="meta">No baseline given: run with <code>--baseline FILE</code> to measure PSI.</p>"#);
        return;
    }
    let bars: Vec<Bar> = r
        .fields
        .iter()
        .map(|f| Bar {
            name: f.name.clone(),
            value: f.psi,
            label: f
                .psi
                .map_or_else(|| status(f.psi_status), |v| format!("{v:.4}")),
            level: f.psi.and_then(|v| level(cfg, f, Metric::Psi, v)),
        })
        .collect();
    let max = scale(
        r.fields.iter().filter_map(|f| f.psi),
        cfg.psi_fail,
        0.05,
        cfg.psi_fail.min(2.5) * 4.0,
    );
    h.push_str(&chart("psi", &bars, max, cfg.psi_warn, cfg.psi_fail));
}

/// Per field with a PSI: the baseline's and the file's share of values in each bucket.
fn distribution_section(h: &mut String, r: &QualityReport, cfg: &QualityConfig) {
    let with: Vec<(&FieldReport, &Distribution)> = r
        .fields
        .iter()
        .filter_map(|f| f.distribution.as_ref().map(|d| (f, d)))
        .collect();
    if with.is_empty() {
        return;
    }
    let _ = write!(
        h,
        r#"<h2>Distributions: baseline vs this file</h2><p class="meta">Share of each field's values per PSI bucket: numeric fields over the baseline's quantile bins, categorical ones over the baseline's most frequent categories and <i>other</i> (rarer and unseen categories). <span class="swatch" style="background:{BASELINE}"></span>baseline <span class="swatch" style="background:{GREEN}"></span>this file (coloured by the field's PSI level)</p>"#
    );
    for (f, d) in with {
        let lvl = f.psi.and_then(|v| level(cfg, f, Metric::Psi, v));
        let psi = f
            .psi
            .map_or_else(|| status(f.psi_status), |v| format!("PSI {v:.4}"));
        let _ = write!(
            h,
            r#"<div class="dist"><h3>{} <span class="badge" style="background:{}">{} {}</span></h3>{}</div>"#,
            esc(&f.name),
            colour(lvl),
            esc(&psi),
            lvl.map_or(String::new(), |l| l.to_string()),
            paired_bars(&format!("dist-{}", esc(&f.name)), &shown(d), colour(lvl))
        );
    }
}

/// At most 12 buckets: the rest of a long category list is added to its last, `other`.
fn shown(d: &Distribution) -> Distribution {
    const MAX: usize = 12;
    let n = d.buckets.len();
    if n <= MAX {
        return d.clone();
    }
    let sum = |v: &[f64]| v[MAX - 1..].iter().sum::<f64>();
    let mut out = Distribution {
        buckets: d.buckets[..MAX - 1].to_vec(),
        baseline: d.baseline[..MAX - 1].to_vec(),
        window: d.window[..MAX - 1].to_vec(),
    };
    out.buckets.push(format!("other (+{} categories)", n - MAX));
    out.baseline.push(sum(&d.baseline));
    out.window.push(sum(&d.window));
    out
}

/// Vertical bars, baseline and window side by side per bucket, as inline SVG.
fn paired_bars(id: &str, d: &Distribution, current: &str) -> String {
    const LEFT: f64 = 44.0;
    const TOP: f64 = 10.0;
    const PLOT_H: f64 = 130.0;
    const LABEL_H: f64 = 78.0;
    let n = d.buckets.len().max(1);
    let slot = (460.0 / n as f64).clamp(30.0, 60.0);
    let width = LEFT + slot * n as f64 + 10.0;
    let height = TOP + PLOT_H + LABEL_H;
    let top = d
        .baseline
        .iter()
        .chain(&d.window)
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.05f64, f64::max)
        * 1.1;
    let y = |v: f64| TOP + PLOT_H * (1.0 - (v / top).clamp(0.0, 1.0));
    let base = TOP + PLOT_H;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="pair" id="{id}" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img">"#
    );
    for t in [0.0, top / 2.0, top / 1.1] {
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{:.0}%</text>"##,
            width - 10.0,
            LEFT - 4.0,
            y(t) + 3.0,
            t * 100.0,
            y = y(t)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{base}" y2="{base}" stroke="#444"/>"##,
        width - 10.0
    );
    let bar_w = slot * 0.36;
    for (i, label) in d.buckets.iter().enumerate() {
        let x0 = LEFT + slot * i as f64 + slot * 0.12;
        let b = d.baseline.get(i).copied().unwrap_or(0.0);
        let w = d.window.get(i).copied().unwrap_or(0.0);
        let tip = format!(
            "{}: baseline {:.1}%, this file {:.1}%",
            esc(label),
            b * 100.0,
            w * 100.0
        );
        for (k, v, c, class) in [(0.0, b, BASELINE, "base"), (1.0, w, current, "cur")] {
            let top_y = y(v);
            let _ = write!(
                s,
                r#"<rect class="{class}" x="{:.1}" y="{top_y:.1}" width="{bar_w:.1}" height="{:.1}" fill="{c}"><title>{tip}</title></rect>"#,
                x0 + k * bar_w,
                (base - top_y).max(0.0)
            );
        }
        let short: String = if label.chars().count() > 16 {
            label.chars().take(15).chain(['…']).collect()
        } else {
            label.clone()
        };
        let lx = x0 + bar_w;
        let ly = base + 12.0;
        let _ = write!(
            s,
            r#"<text x="{lx:.1}" y="{ly:.1}" font-size="10" text-anchor="end" transform="rotate(-40 {lx:.1} {ly:.1})">{}<title>{}</title></text>"#,
            esc(&short),
            esc(label)
        );
    }
    s.push_str("</svg>");
    s
}

fn vif_section(h: &mut String, r: &QualityReport, cfg: &QualityConfig) {
    let _ = write!(
        h,
        "<h2>VIF of the numeric fields</h2><p class=\"meta\">{} complete rows of {} ({} numeric fields).</p>",
        r.vif.rows_used, r.rows, r.vif.fields
    );
    let numeric: Vec<&FieldReport> = r
        .fields
        .iter()
        .filter(|f| f.vif_status != VifStatus::NotNumeric)
        .collect();
    if numeric.is_empty() {
        h.push_str(r#"<p class="meta">No numeric fields.</p>"#);
        return;
    }
    let bars: Vec<Bar> = numeric
        .iter()
        .map(|f| {
            let v = f.vif.map(|v| v.0);
            Bar {
                name: f.name.clone(),
                value: v,
                label: match v {
                    Some(x) if x.is_infinite() => "inf (perfectly collinear)".into(),
                    Some(x) => format!("{x:.2}"),
                    None => status(f.vif_status),
                },
                level: v.and_then(|x| level(cfg, f, Metric::Vif, x)),
            }
        })
        .collect();
    let max = scale(
        numeric.iter().filter_map(|f| f.vif.map(|v| v.0)),
        cfg.vif_fail,
        2.0,
        if cfg.vif_fail.is_finite() {
            cfg.vif_fail * 4.0
        } else {
            100.0
        },
    );
    h.push_str(&chart("vif", &bars, max, cfg.vif_warn, cfg.vif_fail));
}

/// The missing ratios, and the type-error ratios when there are any.
fn ratio_sections(h: &mut String, r: &QualityReport, cfg: &QualityConfig) {
    h.push_str("<h2>Missing ratio</h2>");
    let (warn, fail) = (cfg.missing_warn, cfg.missing_fail);
    let ratio = |f: &FieldReport| f.missing_ratio;
    h.push_str(&ratio_chart(
        "missing",
        r,
        cfg,
        Metric::MissingRatio,
        ratio,
        (warn, fail),
    ));
    if r.fields.iter().any(|f| f.type_errors > 0) {
        h.push_str("<h2>Type-error ratio</h2>");
        let (warn, fail) = (cfg.type_error_warn, cfg.type_error_fail);
        let ratio = |f: &FieldReport| f.type_error_ratio;
        h.push_str(&ratio_chart(
            "type-errors",
            r,
            cfg,
            Metric::TypeErrorRatio,
            ratio,
            (warn, fail),
        ));
    }
    h.push_str(r#"<p class="meta">Dashed lines: the global WARN / FAIL thresholds; bar colours use each field's own thresholds (per-field overrides included).</p>"#);
}

/// A chart of one ratio (0 to 1) per field, shown as a percentage.
fn ratio_chart(
    id: &str,
    r: &QualityReport,
    cfg: &QualityConfig,
    metric: Metric,
    ratio: impl Fn(&FieldReport) -> f64,
    (warn, fail): (f64, f64),
) -> String {
    let bars: Vec<Bar> = r
        .fields
        .iter()
        .map(|f| Bar {
            name: f.name.clone(),
            value: Some(ratio(f)),
            label: format!("{:.2}%", ratio(f) * 100.0),
            level: level(cfg, f, metric, ratio(f)),
        })
        .collect();
    let max = scale(r.fields.iter().map(&ratio), fail, 0.05, 1.0);
    chart(id, &bars, max, warn, fail)
}

/// Every figure of every field.
fn figures_table(h: &mut String, r: &QualityReport) {
    h.push_str("<h2>All figures</h2><table><tr><th class=\"l\">field</th><th class=\"l\">kind</th><th>missing</th><th>type errors</th><th>mean</th><th>std</th><th>min</th><th>max</th><th>PSI</th><th>VIF</th><th class=\"l\">decision</th></tr>");
    for f in &r.fields {
        let psi = f
            .psi
            .map_or_else(|| status(f.psi_status), |v| format!("{v:.4}"));
        let vif = match f.vif {
            Some(v) => fmt_num(Some(v.0)),
            None => status(f.vif_status),
        };
        let _ = write!(
            h,
            r#"<tr><td class="l">{}</td><td class="l">{}</td><td>{:.2}%</td><td>{:.2}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="l" style="color:{}"><b>{}</b></td></tr>"#,
            esc(&f.name),
            f.kind.as_str(),
            f.missing_ratio * 100.0,
            f.type_error_ratio * 100.0,
            fmt_num(f.mean),
            fmt_num(f.std),
            fmt_num(f.min),
            fmt_num(f.max),
            esc(&psi),
            esc(&vif),
            colour(Some(f.decision)),
            f.decision
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::profile::{BaselineSource, Format};
    use crate::quality::{BaselineBuilder, Cell, FieldKind, FieldSpec, WindowStats};

    #[test]
    fn distributions_are_paired_bars_with_escaped_labels() {
        let d = Distribution {
            buckets: vec!["(-inf, 1]".into(), "<b>".into(), "other".into()],
            baseline: vec![0.5, 0.3, 0.2],
            window: vec![0.1, 0.1, 0.8],
        };
        let svg = paired_bars("dist-x", &d, RED);
        assert_eq!(svg.matches(r#"class="base""#).count(), 3);
        assert_eq!(svg.matches(r#"class="cur""#).count(), 3);
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains("other: baseline 20.0%, this file 80.0%"));
        // A long category list is cut to 12 buckets, the rest added to `other`.
        let long = Distribution {
            buckets: (0..20)
                .map(|i| format!("c{i}"))
                .chain(["other".to_string()])
                .collect(),
            baseline: vec![1.0 / 21.0; 21],
            window: vec![1.0 / 21.0; 21],
        };
        let s = shown(&long);
        assert_eq!(s.buckets.len(), 12);
        assert_eq!(s.buckets[11], "other (+9 categories)");
        assert!((s.baseline.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_profile_page_draws_each_fields_distribution_and_fetches_nothing() {
        let cfg = QualityConfig::default();
        let specs = vec![
            FieldSpec::new("x<1>", FieldKind::Numeric),
            FieldSpec::new("tier", FieldKind::Categorical),
        ];
        let mut b = BaselineBuilder::new(specs.clone(), &cfg);
        for i in 0..1000 {
            b.push(
                &[
                    Cell::Number(f64::from(i % 100)),
                    Cell::Text(["A", "B"][i as usize % 2]),
                ][..],
            );
        }
        let base = b.build();
        let mut w = WindowStats::new(specs, Some(&base));
        for i in 0..500 {
            w.push(&[Cell::Number(f64::from(i % 100 + 50)), Cell::Text("C")][..]);
        }
        let mut report = w.report(&cfg);
        for (f, d) in report.fields.iter_mut().zip(w.distributions()) {
            f.distribution = d;
        }
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["fields"][1]["distribution"]["buckets"][2], "other");
        assert_eq!(json["fields"][1]["distribution"]["window"][2], 1.0);
        let out = ProfileOutput {
            file: "f.jsonl".into(),
            format: Format::Jsonl,
            baseline: Some(BaselineSource {
                path: "b.jsonl".into(),
                from: "jsonl".into(),
                rows: 1000,
            }),
            report,
        };
        let page = render(&out, &cfg);
        assert!(page.contains("Distributions: baseline vs this file"));
        assert!(page.contains(r#"id="dist-x&lt;1&gt;""#) && page.contains(r#"id="dist-tier""#));
        assert!(page.contains("(-inf, 9]") && page.contains("(89, +inf)"));
        assert!(!page.contains("x<1>") && !page.contains("<script") && !page.contains("http"));
        assert!(page.contains("PSI ") && page.contains("FAIL</span>"));
    }

    #[test]
    fn escapes_and_clips() {
        assert_eq!(esc("<a&\"b'>"), "&lt;a&amp;&quot;b&#39;&gt;");
        let bars = [
            Bar {
                name: "<x>".into(),
                value: Some(f64::INFINITY),
                label: "inf".into(),
                level: Some(Decision::Fail),
            },
            Bar {
                name: "y".into(),
                value: None,
                label: "constant".into(),
                level: None,
            },
        ];
        let svg = chart("vif", &bars, 15.0, 5.0, 10.0);
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"));
        assert_eq!(svg.matches("class=\"bar\"").count(), 1);
        assert!(svg.contains("WARN 5") && svg.contains("FAIL 10") && svg.contains("constant"));
        assert!(!svg.contains("NaN") && !svg.contains("inf\""));
    }
}
