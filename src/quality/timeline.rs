//! The page of `etl-pipe quality report`: the score stage's block reports (the `quality`
//! topic) as one self-contained HTML page — decisions per block over time, per partition;
//! PSI, missing ratio and VIF of each field over time (small multiples, one line per
//! partition); and the blocks that failed with their reasons. Inline CSS and SVG, no
//! scripts, no network. Pure: the caller reads the topic ([`BlockReport`] is what it parses).
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::html::{colour, esc, head};
use super::{Decision, Metric, QualityConfig};

/// One block report as read back from the quality topic: what the page needs. Unknown keys
/// are ignored and absent ones take defaults, so older and newer reports both parse.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockReport {
    /// `<topic>/<partition>/<first offset>-<last offset>`.
    pub window: String,
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub partition: i32,
    #[serde(default)]
    pub first_offset: i64,
    #[serde(default)]
    pub last_offset: i64,
    #[serde(default)]
    pub messages: u64,
    #[serde(default)]
    pub dead_letters: u64,
    #[serde(default)]
    pub rows: u64,
    pub decision: Decision,
    #[serde(default)]
    pub reasons: Vec<BlockReason>,
    #[serde(default)]
    pub decided_on: Option<String>,
    /// `{"PASS": n, "WARN": n, "FAIL": n}`.
    #[serde(default)]
    pub decisions: BTreeMap<String, u64>,
    #[serde(default)]
    pub trailing: Option<TrailingFigures>,
    /// The report message's timestamp (ms since the epoch); set by the reader.
    #[serde(skip)]
    pub time_ms: Option<i64>,
}

/// A WARN or FAIL reason of a block.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockReason {
    #[serde(default)]
    pub field: Option<String>,
    pub level: Decision,
    #[serde(default)]
    pub message: String,
}

/// The figures of the trailing window at a block's last record.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TrailingFigures {
    #[serde(default)]
    pub fields: Vec<FieldFigures>,
}

/// One field's figures in [`TrailingFigures`].
#[derive(Debug, Clone, Deserialize)]
pub struct FieldFigures {
    pub name: String,
    #[serde(default)]
    pub missing_ratio: f64,
    #[serde(default)]
    pub psi: Option<f64>,
    /// A number, `"inf"` or `null`.
    #[serde(default)]
    pub vif: Option<serde_json::Value>,
}

impl FieldFigures {
    fn value(&self, m: Metric) -> Option<f64> {
        match m {
            Metric::Psi => self.psi,
            Metric::MissingRatio => Some(self.missing_ratio),
            Metric::Vif => match &self.vif {
                Some(serde_json::Value::Number(n)) => n.as_f64(),
                Some(serde_json::Value::String(s)) if s == "inf" => Some(f64::INFINITY),
                _ => None,
            },
            _ => None,
        }
    }
}

impl BlockReport {
    fn count(&self, d: &str) -> u64 {
        self.decisions.get(d).copied().unwrap_or(0)
    }
}

/// What the page says about where its reports came from.
#[derive(Debug, Clone)]
pub struct PageInfo {
    pub pipeline: String,
    pub topic: String,
    /// The time range read, in words (`everything retained`, `from … to …`).
    pub range: String,
    /// Messages that were not block reports (not JSON of that shape), skipped.
    pub skipped: u64,
}

/// Series colours, one per partition (cycled).
const PALETTE: [&str; 6] = [
    "#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#5d4037", "#ad1457",
];
const GREEN: &str = "#2e7d32";
const AMBER: &str = "#e0a000";
const RED: &str = "#c62828";

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "?".into())
}

/// The whole page. `blocks` in any order; they are shown by partition and offset.
pub fn render(info: &PageInfo, blocks: &[BlockReport], cfg: &QualityConfig) -> String {
    let mut blocks: Vec<&BlockReport> = blocks.iter().collect();
    blocks.sort_by_key(|b| (b.partition, b.first_offset));
    let mut h = String::new();
    let title = format!("Quality report: {}", info.pipeline);
    head(
        &mut h,
        &title,
        ".note { background: #fff8e1; border-left: 4px solid #e0a000; padding: 8px 12px; }\n\
         .small { display: inline-block; vertical-align: top; margin: 0 12px 12px 0; }\n\
         h3 { font-size: 14px; margin: 14px 0 6px; } .small h3 { font-size: 13px; margin: 4px 0; }\n\
         td.reasons { text-align: left; } td.nowrap { white-space: nowrap; }",
    );
    let parts: BTreeMap<i32, Vec<&BlockReport>> =
        blocks.iter().fold(BTreeMap::new(), |mut m, b| {
            m.entry(b.partition).or_insert_with(Vec::new).push(*b);
            m
        });
    summary(&mut h, info, &blocks, &parts, &title);
    if blocks.is_empty() {
        let _ = write!(
            h,
            r#"<p class="note" id="empty">No block reports in {} ({}). The score stage writes one per block of <code>score.window_records</code> offsets per partition, once the next block starts.</p>"#,
            esc(&info.topic),
            esc(&info.range)
        );
    } else {
        decisions_section(&mut h, &parts);
        fields_section(&mut h, &parts, cfg);
        failed_section(&mut h, &blocks);
    }
    h.push_str(r#"<p class="meta">Generated by etl-pipe quality report from the quality topic (read_committed). Each report covers one block of offsets of one input partition; its field figures are those of the trailing window at the block's last record.</p></body></html>"#);
    h.push('\n');
    h
}

fn summary(
    h: &mut String,
    info: &PageInfo,
    blocks: &[&BlockReport],
    parts: &BTreeMap<i32, Vec<&BlockReport>>,
    title: &str,
) {
    let total = |d: &str| blocks.iter().map(|b| b.count(d)).sum::<u64>();
    let failed = blocks
        .iter()
        .filter(|b| b.decision == Decision::Fail)
        .count();
    let first = blocks.iter().filter_map(|b| b.time_ms).min();
    let last = blocks.iter().filter_map(|b| b.time_ms).max();
    let _ = write!(
        h,
        r#"<h1>{}</h1><p class="meta">topic {} &middot; {} &middot; {} block reports of {} partition(s), written {} to {}{}</p>"#,
        esc(title),
        esc(&info.topic),
        esc(&info.range),
        blocks.len(),
        parts.len(),
        time(first),
        time(last),
        if info.skipped > 0 {
            format!(
                " &middot; {} messages that are not block reports skipped",
                info.skipped
            )
        } else {
            String::new()
        }
    );
    let _ = write!(
        h,
        r#"<p id="totals">Records judged: <b style="color:{GREEN}">PASS {}</b> &middot; <b style="color:{AMBER}">WARN {}</b> &middot; <b style="color:{RED}">FAIL {}</b> &middot; blocks with a FAIL: <b>{failed}</b></p>"#,
        total("PASS"),
        total("WARN"),
        total("FAIL")
    );
}

/// Per partition: one stacked bar per block (PASS, WARN, FAIL records), in offset order.
fn decisions_section(h: &mut String, parts: &BTreeMap<i32, Vec<&BlockReport>>) {
    h.push_str(r#"<h2>Decisions per block</h2><p class="meta">One bar per block report, in offset order: records judged PASS (green), WARN (amber), FAIL (red). Hover a bar for its offsets and time.</p>"#);
    for (p, bs) in parts {
        const LEFT: f64 = 50.0;
        const TOP: f64 = 8.0;
        const PLOT_H: f64 = 110.0;
        let n = bs.len();
        let slot = (900.0 / n as f64).clamp(2.0, 28.0);
        // Wide enough for the caption under a few bars.
        let width = (LEFT + slot * n as f64 + 20.0).max(480.0);
        let height = TOP + PLOT_H + 34.0;
        let max = bs.iter().map(|b| b.rows.max(1)).max().unwrap_or(1) as f64;
        let base = TOP + PLOT_H;
        let _ = write!(
            h,
            r##"<h3>partition {p}</h3><svg class="decisions" id="decisions-{p}" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img"><line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{base}" stroke="#444"/><line x1="{LEFT}" x2="{:.1}" y1="{base}" y2="{base}" stroke="#444"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{max}</text><text x="{:.1}" y="{base}" font-size="10" text-anchor="end">0</text>"##,
            width - 10.0,
            LEFT - 4.0,
            TOP + 8.0,
            LEFT - 4.0,
        );
        let tick_every = (n / 8).max(1);
        for (i, b) in bs.iter().enumerate() {
            let x = LEFT + slot * i as f64 + slot * 0.1;
            let w = (slot * 0.8).max(1.0);
            let tip = format!(
                "{} at {}: PASS {} WARN {} FAIL {}",
                esc(&b.window),
                time(b.time_ms),
                b.count("PASS"),
                b.count("WARN"),
                b.count("FAIL")
            );
            let mut y = base;
            for (d, c) in [("PASS", GREEN), ("WARN", AMBER), ("FAIL", RED)] {
                let hgt = PLOT_H * b.count(d) as f64 / max;
                if hgt > 0.0 {
                    y -= hgt;
                    let _ = write!(
                        h,
                        r#"<rect class="{}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{hgt:.1}" fill="{c}"><title>{tip}</title></rect>"#,
                        d.to_lowercase()
                    );
                }
            }
            if i % tick_every == 0 {
                let _ = write!(
                    h,
                    r#"<text x="{x:.1}" y="{:.1}" font-size="10">{}</text>"#,
                    base + 14.0,
                    b.first_offset
                );
            }
        }
        let _ = write!(
            h,
            r##"<text x="{LEFT}" y="{:.1}" font-size="10" fill="#555">first offset of the block; reports {} to {}</text></svg>"##,
            base + 30.0,
            time(bs.first().and_then(|b| b.time_ms)),
            time(bs.last().and_then(|b| b.time_ms))
        );
    }
}

/// PSI, missing ratio and VIF of each field over time: one small chart per field and metric.
fn fields_section(h: &mut String, parts: &BTreeMap<i32, Vec<&BlockReport>>, cfg: &QualityConfig) {
    let mut names: Vec<String> = Vec::new();
    for b in parts.values().flatten() {
        for f in b.trailing.iter().flat_map(|t| &t.fields) {
            if !names.contains(&f.name) {
                names.push(f.name.clone());
            }
        }
    }
    let times: Vec<i64> = parts.values().flatten().filter_map(|b| b.time_ms).collect();
    let (t0, t1) = (
        times.iter().copied().min().unwrap_or(0),
        times.iter().copied().max().unwrap_or(0),
    );
    h.push_str(r#"<h2>Fields over time</h2><p class="meta">The trailing window's figures at each block's end, by report time. One line per partition: "#);
    for p in parts.keys() {
        let _ = write!(
            h,
            r#"<span class="swatch" style="background:{}"></span>partition {p} "#,
            PALETTE[*p as usize % PALETTE.len()]
        );
    }
    h.push_str(r#". Dashed lines: the field's WARN and FAIL thresholds.</p>"#);
    for (metric, label) in [
        (Metric::Psi, "PSI"),
        (Metric::MissingRatio, "Missing ratio"),
        (Metric::Vif, "VIF"),
    ] {
        let any = parts.values().flatten().any(|b| {
            b.trailing
                .iter()
                .flat_map(|t| &t.fields)
                .any(|f| f.value(metric).is_some())
        });
        if !any {
            continue;
        }
        let _ = write!(h, "<h3>{label}</h3>");
        for name in &names {
            let series: Vec<(i32, Vec<(i64, f64)>)> = parts
                .iter()
                .map(|(p, bs)| {
                    let pts = bs
                        .iter()
                        .filter_map(|b| {
                            let f = b
                                .trailing
                                .as_ref()?
                                .fields
                                .iter()
                                .find(|f| &f.name == name)?;
                            Some((b.time_ms.unwrap_or(0), f.value(metric)?))
                        })
                        .collect();
                    (*p, pts)
                })
                .collect();
            if series.iter().all(|(_, s)| s.is_empty()) {
                continue;
            }
            let th = cfg.thresholds(name, metric);
            let _ = write!(
                h,
                r#"<div class="small"><h3>{}</h3>{}</div>"#,
                esc(name),
                small_chart(&series, (t0, t1), (th.warn, th.fail), metric)
            );
        }
    }
}

/// A small line chart: x = time in [t0, t1], y from 0 to the largest finite value or 1.5 ×
/// the FAIL line; infinite values sit on the top edge.
fn small_chart(
    series: &[(i32, Vec<(i64, f64)>)],
    (t0, t1): (i64, i64),
    (warn, fail): (f64, f64),
    metric: Metric,
) -> String {
    const W: f64 = 250.0;
    const H: f64 = 110.0;
    const LEFT: f64 = 40.0;
    const TOP: f64 = 6.0;
    const PH: f64 = 90.0;
    let top_value = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let mut max = top_value * 1.1;
    if fail.is_finite() {
        max = max.max(fail * 1.5);
    }
    if metric == Metric::MissingRatio {
        max = max.min(1.0);
    }
    let max = if max > 0.0 { max } else { 1.0 };
    let x = |t: i64| {
        let span = (t1 - t0).max(1) as f64;
        LEFT + (W - LEFT - 8.0) * ((t - t0) as f64 / span).clamp(0.0, 1.0)
    };
    let y = |v: f64| {
        let v = if v.is_finite() { v } else { max };
        TOP + PH * (1.0 - (v / max).clamp(0.0, 1.0))
    };
    let fmt = |v: f64| {
        if metric == Metric::MissingRatio {
            format!("{:.0}%", v * 100.0)
        } else {
            super::psi::short_number(v)
        }
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="series" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img"><line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{b}" stroke="#444"/><line x1="{LEFT}" x2="{:.1}" y1="{b}" y2="{b}" stroke="#444"/><text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end">{}</text><text x="{:.1}" y="{b}" font-size="9" text-anchor="end">0</text>"##,
        W - 8.0,
        LEFT - 3.0,
        TOP + 8.0,
        fmt(max),
        LEFT - 3.0,
        b = TOP + PH
    );
    for (t, c) in [(warn, AMBER), (fail, RED)] {
        if t.is_finite() && t <= max {
            let _ = write!(
                s,
                r#"<line class="threshold" x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="{c}" stroke-dasharray="4 3"/>"#,
                W - 8.0,
                yy = y(t)
            );
        }
    }
    for (p, pts) in series {
        let c = PALETTE[*p as usize % PALETTE.len()];
        if pts.len() > 1 {
            let path: Vec<String> = pts
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/>"#,
                path.join(" ")
            );
        }
        for (t, v) in pts {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{c}"><title>partition {p}, {}: {}</title></circle>"#,
                x(*t),
                y(*v),
                time(Some(*t)),
                if v.is_finite() { fmt(*v) } else { "inf".into() }
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The blocks whose worst decision was FAIL, with the window it was decided on and why.
fn failed_section(h: &mut String, blocks: &[&BlockReport]) {
    let failed: Vec<&&BlockReport> = blocks
        .iter()
        .filter(|b| b.decision == Decision::Fail)
        .collect();
    let _ = write!(h, r#"<h2>Blocks that failed ({})</h2>"#, failed.len());
    if failed.is_empty() {
        h.push_str(r#"<p class="meta">None in this range.</p>"#);
        return;
    }
    h.push_str(r#"<table id="failed"><tr><th>partition</th><th>offsets</th><th class="l">reported</th><th>FAIL / judged</th><th class="l">decided on (trailing window)</th><th class="l">reasons</th></tr>"#);
    for b in failed {
        let mut reasons = String::new();
        for r in &b.reasons {
            let _ = write!(
                reasons,
                r#"<div><b style="color:{}">{}</b> {}</div>"#,
                colour(Some(r.level)),
                r.level,
                esc(&r.message)
            );
        }
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td class="nowrap">{}&ndash;{}</td><td class="l nowrap">{}</td><td>{} / {}</td><td class="l">{}</td><td class="reasons">{}</td></tr>"#,
            b.partition,
            b.first_offset,
            b.last_offset,
            time(b.time_ms),
            b.count("FAIL"),
            b.rows,
            esc(b.decided_on.as_deref().unwrap_or("")),
            reasons
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(p: i32, first: i64, fail: u64, psi: f64, time_ms: i64) -> BlockReport {
        let json = serde_json::json!({
            "window": format!("t/{p}/{first}-{}", first + 99),
            "stage": "score",
            "topic": "t",
            "partition": p,
            "first_offset": first,
            "last_offset": first + 99,
            "messages": 100, "dead_letters": 0, "rows": 100,
            "decision": if fail > 0 { "FAIL" } else { "PASS" },
            "reasons": if fail > 0 { serde_json::json!([{"field": "<pts>", "metric": "psi", "level": "FAIL", "value": psi, "threshold": 0.25, "message": format!("<pts>: PSI {psi:.4} >= 0.25 (FAIL)")}]) } else { serde_json::json!([]) },
            "decided_on": if fail > 0 { Some(format!("t/{p}/{}-{}", first - 84, first + 99)) } else { None },
            "decisions": {"PASS": 100 - fail, "WARN": 0, "FAIL": fail},
            "policy": "quarantine",
            "trailing": {"window": "x", "rows": 100, "fields": [
                {"name": "<pts>", "kind": "numeric", "missing_ratio": 0.01, "psi": psi, "vif": "inf"},
                {"name": "tier", "kind": "categorical", "missing_ratio": 0.3, "psi": null, "vif": null}
            ]}
        });
        let mut b: BlockReport = serde_json::from_value(json).unwrap();
        b.time_ms = Some(time_ms);
        b
    }

    fn info() -> PageInfo {
        PageInfo {
            pipeline: "demo".into(),
            topic: "demo.quality".into(),
            range: "everything retained".into(),
            skipped: 0,
        }
    }

    #[test]
    fn the_page_shows_decisions_series_and_failed_blocks() {
        let t = 1_764_000_000_000;
        let blocks = vec![
            block(0, 100, 40, 0.4, t + 2000),
            block(0, 0, 0, 0.01, t),
            block(1, 0, 0, 0.02, t + 500),
        ];
        let page = render(&info(), &blocks, &QualityConfig::default());
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
        assert!(
            !page.contains("<script") && !page.contains("http://") && !page.contains("https://")
        );
        assert!(!page.contains("NaN"));
        // Names are escaped everywhere.
        assert!(!page.contains("<pts>") && page.contains("&lt;pts&gt;"));
        // A decisions chart per partition; PASS and FAIL bars.
        assert!(page.contains(r#"id="decisions-0""#) && page.contains(r#"id="decisions-1""#));
        assert_eq!(page.matches(r#"class="fail""#).count(), 1);
        assert_eq!(page.matches(r#"class="pass""#).count(), 3);
        // Small multiples: PSI, missing and VIF (an infinite VIF is drawn, on the top edge).
        assert!(page.contains("<h3>PSI</h3>") && page.contains("<h3>Missing ratio</h3>"));
        assert!(page.contains("<h3>VIF</h3>") && page.contains(": inf</title>"));
        assert!(page.contains("<polyline") && page.contains(r#"class="threshold""#));
        // The failed block, its window and reasons.
        let table = &page[page.find(r#"id="failed""#).unwrap()..];
        assert!(table.contains("100&ndash;199") && table.contains("t/0/16-199"));
        assert!(table.contains("&lt;pts&gt;: PSI 0.4000 &gt;= 0.25 (FAIL)"));
        assert!(page.contains("Blocks that failed (1)"));
        assert!(page.contains("FAIL 40"));
    }

    #[test]
    fn no_reports_is_a_valid_page_that_says_so() {
        let page = render(&info(), &[], &QualityConfig::default());
        assert!(page.contains(r#"id="empty""#) && page.contains("No block reports"));
        assert!(page.ends_with("</html>\n") && !page.contains("<svg"));
    }

    #[test]
    fn older_reports_without_figures_parse() {
        let b: BlockReport =
            serde_json::from_str(r#"{"window": "t/0/0-9", "decision": "WARN", "extra": 1}"#)
                .unwrap();
        assert_eq!((b.partition, b.rows), (0, 0));
        assert!(b.trailing.is_none());
        let page = render(&info(), &[b], &QualityConfig::default());
        assert!(page.contains("decisions-0") && !page.contains("<h3>PSI</h3>"));
    }
}
