//! `etl-pipe profile`: the quality report of a JSONL or CSV file, outside any pipeline.
//!
//! One streaming pass over the file (two when `--baseline` is a data file: that file is
//! read first to build the baseline), in memory bounded by the number of fields, not rows:
//! the first `--infer-rows` rows are held to infer each field's kind, then every row goes
//! through a [`WindowStats`] (and a [`BaselineBuilder`] for `--save-baseline`).
//!
//! - Fields: the CSV header, or the keys of the first `--infer-rows` JSON objects (in
//!   order of first appearance; keys first seen later are listed in the notes, not
//!   profiled), plus the baseline's fields (one the file lacks is missing in every row,
//!   so a dropped column FAILs). `--fields` picks some of them; an unknown name is an error.
//! - Kinds: numeric when at least 90 % of the non-missing values in the inference rows
//!   are numbers (JSON numbers or text that parses as one), categorical otherwise (also
//!   when the field has no values there). With a baseline, its kinds win, so values that
//!   do not fit the baseline's kind count as type errors.
//! - Exit codes: 0 PASS or WARN, 3 FAIL (and WARN with `--strict`), 1 on an error
//!   (unreadable file, bad CSV row or JSON line with its line number, unknown field),
//!   2 on a command-line usage error.
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;

use super::psi::BaselineError;
use super::{
    classify, html, Baseline, BaselineBuilder, Cell, Classified, Decision, FieldKind, FieldSpec,
    FieldView, QualityConfig, QualityReport, WindowStats,
};

/// Share of numbers among a field's non-missing inference values that makes it numeric.
pub const NUMERIC_SHARE: f64 = 0.9;

/// Exit code of a FAIL report (and of a WARN one with `--strict`).
pub const EXIT_FAIL: u8 = 3;

/// Arguments of `etl-pipe profile`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProfileArgs {
    /// The file to profile: JSONL (one JSON object per line) or CSV with a header row.
    pub file: PathBuf,
    /// Reference data for PSI: a JSONL or CSV file, or a baseline saved with --save-baseline.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Profile only these fields (comma separated or repeated); default: all.
    #[arg(long, value_delimiter = ',', value_name = "FIELD,...")]
    pub fields: Vec<String>,
    /// Input format of FILE and of a data --baseline. `auto`: by extension (.csv; .jsonl,
    /// .ndjson, .json), else JSONL when the file starts with `{`, CSV otherwise.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Print the report as JSON (for machines) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report (PSI, VIF and missing-ratio bars) to OUT.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    /// Also build a baseline from FILE and save it as JSON to OUT (for --baseline or the
    /// score stage).
    #[arg(long, value_name = "OUT")]
    pub save_baseline: Option<PathBuf>,
    /// Rows read first to infer which fields are numeric.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub infer_rows: usize,
    /// Exit with code 3 on WARN too, not only on FAIL.
    #[arg(long)]
    pub strict: bool,
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Auto,
    Csv,
    Jsonl,
}

/// What can go wrong in `profile`; every message names the file (and line) concerned.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    BadRow {
        path: String,
        line: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    BadFile { path: String, message: String },
    #[error("unknown field `{field}` in --fields; the fields of {path} are: {available}")]
    UnknownField {
        field: String,
        path: String,
        available: String,
    },
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// One row of input, owned (kept for kind inference) or current.
#[derive(Debug, Clone)]
enum Row {
    Csv(csv::StringRecord),
    Json(serde_json::Map<String, serde_json::Value>),
}

/// A row seen through a field list: CSV by column position, JSON by name.
struct RowView<'a> {
    row: &'a Row,
    /// Column of each field in the CSV header (`None`: not in this file).
    columns: &'a [Option<usize>],
}

impl FieldView for RowView<'_> {
    fn cell(&self, index: usize, name: &str) -> Cell<'_> {
        match self.row {
            Row::Csv(r) => match self.columns.get(index).copied().flatten() {
                Some(c) => r.get(c).map_or(Cell::Absent, Cell::Text),
                None => Cell::Absent,
            },
            Row::Json(m) => Cell::from_json(m.get(name)),
        }
    }
}

enum Reader {
    Csv(csv::Reader<BufReader<File>>),
    Jsonl {
        lines: BufReader<File>,
        buf: String,
        line: u64,
    },
}

/// A JSONL or CSV file read one row at a time.
struct Source {
    label: String,
    format: Format,
    reader: Reader,
    /// The CSV header (empty for JSONL).
    header: Vec<String>,
    rows: u64,
}

impl Source {
    fn open(path: &Path, format: Format) -> Result<Source, ProfileError> {
        let label = path.display().to_string();
        let read_err = |source| ProfileError::Read {
            path: label.clone(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let format = match format {
            Format::Auto => detect(path, &label)?,
            f => f,
        };
        let (reader, header) = match format {
            Format::Csv => {
                let mut r = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .flexible(false)
                    .from_reader(BufReader::with_capacity(1 << 16, file));
                let header: Vec<String> = r
                    .headers()
                    .map_err(|e| csv_error(&label, e))?
                    .iter()
                    .map(|h| h.trim().to_string())
                    .collect();
                let mut seen = HashSet::new();
                for h in &header {
                    if !seen.insert(h.as_str()) {
                        return Err(ProfileError::BadRow {
                            path: label,
                            line: 1,
                            message: format!("duplicate column `{h}` in the header"),
                        });
                    }
                }
                (Reader::Csv(r), header)
            }
            _ => (
                Reader::Jsonl {
                    lines: BufReader::with_capacity(1 << 16, file),
                    buf: String::new(),
                    line: 0,
                },
                Vec::new(),
            ),
        };
        Ok(Source {
            label,
            format,
            reader,
            header,
            rows: 0,
        })
    }

    /// The next data row, or `None` at the end.
    fn next_row(&mut self) -> Result<Option<Row>, ProfileError> {
        let row = match &mut self.reader {
            Reader::Csv(r) => {
                let mut rec = csv::StringRecord::new();
                match r.read_record(&mut rec) {
                    Ok(true) => Some(Row::Csv(rec)),
                    Ok(false) => None,
                    Err(e) => return Err(csv_error(&self.label, e)),
                }
            }
            Reader::Jsonl { lines, buf, line } => loop {
                buf.clear();
                *line += 1;
                let n = lines.read_line(buf).map_err(|e| ProfileError::BadRow {
                    path: self.label.clone(),
                    line: *line,
                    message: e.to_string(),
                })?;
                if n == 0 {
                    break None;
                }
                let text = buf.trim();
                if text.is_empty() {
                    continue;
                }
                match serde_json::from_str(text) {
                    Ok(m) => break Some(Row::Json(m)),
                    Err(e) => {
                        return Err(ProfileError::BadRow {
                            path: self.label.clone(),
                            line: *line,
                            message: format!("expected one JSON object per line: {e}"),
                        })
                    }
                }
            },
        };
        if row.is_some() {
            self.rows += 1;
        }
        Ok(row)
    }

    /// Up to `n` rows, kept for kind inference.
    fn sample(&mut self, n: usize) -> Result<Vec<Row>, ProfileError> {
        let mut rows = Vec::with_capacity(n.min(10_000));
        while rows.len() < n.max(1) {
            match self.next_row()? {
                Some(r) => rows.push(r),
                None => break,
            }
        }
        Ok(rows)
    }

    /// The file's field names: the CSV header, or JSON keys in order of first appearance.
    fn field_names(&self, sample: &[Row]) -> Vec<String> {
        if self.format == Format::Csv {
            return self.header.clone();
        }
        let mut seen = HashSet::new();
        let mut names = Vec::new();
        for row in sample {
            if let Row::Json(m) = row {
                for k in m.keys() {
                    if seen.insert(k.as_str()) {
                        names.push(k.clone());
                    }
                }
            }
        }
        names
    }

    /// The CSV column of each field (all `None` for JSONL, which looks fields up by name).
    fn columns(&self, fields: &[String]) -> Vec<Option<usize>> {
        fields
            .iter()
            .map(|f| self.header.iter().position(|h| h == f))
            .collect()
    }
}

fn detect(path: &Path, label: &str) -> Result<Format, ProfileError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("csv") => return Ok(Format::Csv),
        Some("jsonl" | "ndjson" | "json") => return Ok(Format::Jsonl),
        _ => {}
    }
    let head = read_head(path, label)?;
    Ok(if head.trim_start().starts_with('{') {
        Format::Jsonl
    } else {
        Format::Csv
    })
}

fn read_head(path: &Path, label: &str) -> Result<String, ProfileError> {
    let mut head = Vec::new();
    File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|source| ProfileError::Read {
            path: label.to_string(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Whether `path` is a baseline written by `--save-baseline` (its first key is `format`).
fn is_saved_baseline(path: &Path) -> Result<bool, ProfileError> {
    let head = read_head(path, &path.display().to_string())?;
    let compact: String = head.chars().filter(|c| !c.is_whitespace()).collect();
    Ok(compact.starts_with(&format!("{{\"format\":\"{}\"", super::psi::BASELINE_FORMAT)))
}

fn csv_error(label: &str, e: csv::Error) -> ProfileError {
    let line = e.position().map(|p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("row has {len} fields, the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
        _ => e.to_string(),
    };
    match line {
        Some(line) => ProfileError::BadRow {
            path: label.to_string(),
            line,
            message,
        },
        None => ProfileError::BadFile {
            path: label.to_string(),
            message,
        },
    }
}

/// Infers each field's kind from sample rows (see the module docs for the rule).
fn infer_kinds(sample: &[Row], fields: &[String], columns: &[Option<usize>]) -> Vec<FieldKind> {
    let mut votes = vec![(0u64, 0u64); fields.len()];
    for row in sample {
        let view = RowView { row, columns };
        for (i, name) in fields.iter().enumerate() {
            match classify(view.cell(i, name), FieldKind::Numeric) {
                Classified::Number(_) => votes[i].0 += 1,
                Classified::Missing => {}
                _ => votes[i].1 += 1,
            }
        }
    }
    votes
        .into_iter()
        .map(|(num, other)| {
            if num > 0 && num as f64 >= NUMERIC_SHARE * (num + other) as f64 {
                FieldKind::Numeric
            } else {
                FieldKind::Categorical
            }
        })
        .collect()
}

/// Where the baseline came from.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineSource {
    pub path: String,
    /// `saved` (a baseline JSON) or the data format it was built from.
    pub from: String,
    pub rows: u64,
}

/// The `--json` output: the report plus what it was computed from.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileOutput {
    pub file: String,
    pub format: Format,
    pub baseline: Option<BaselineSource>,
    #[serde(flatten)]
    pub report: QualityReport,
}

/// A data file opened as a baseline: its first rows read (kinds, field names), the rest
/// still to stream.
struct PendingBaseline {
    src: Source,
    sample: Vec<Row>,
    names: Vec<String>,
}

impl PendingBaseline {
    fn open(path: &Path, format: Format, infer_rows: usize) -> Result<Self, ProfileError> {
        let mut src = Source::open(path, format)?;
        let sample = src.sample(infer_rows)?;
        if sample.is_empty() {
            return Err(ProfileError::BadFile {
                path: src.label,
                message: "no data rows".into(),
            });
        }
        let names = src.field_names(&sample);
        Ok(Self { src, sample, names })
    }

    /// Streams the rest of the file into a baseline for those of `fields` the file has
    /// (the others report `not_in_baseline`).
    fn build(self, fields: &[String], cfg: &QualityConfig) -> Result<Baseline, ProfileError> {
        let PendingBaseline {
            mut src,
            sample,
            names,
        } = self;
        let present: Vec<String> = fields
            .iter()
            .filter(|f| names.contains(f))
            .cloned()
            .collect();
        let columns = src.columns(&present);
        let kinds = infer_kinds(&sample, &present, &columns);
        let specs: Vec<FieldSpec> = present
            .iter()
            .zip(kinds)
            .map(|(n, k)| FieldSpec::new(n.clone(), k))
            .collect();
        let mut builder = BaselineBuilder::new(specs, cfg);
        for row in &sample {
            builder.push(&RowView {
                row,
                columns: &columns,
            });
        }
        drop(sample);
        while let Some(row) = src.next_row()? {
            builder.push(&RowView {
                row: &row,
                columns: &columns,
            });
        }
        Ok(builder.build())
    }
}

/// Runs the profile and prints it; returns the report (for callers and tests).
pub fn profile(
    args: &ProfileArgs,
    cfg: &QualityConfig,
) -> Result<(ProfileOutput, Vec<String>), ProfileError> {
    let mut src = Source::open(&args.file, args.format)?;
    let sample = src.sample(args.infer_rows)?;
    if sample.is_empty() {
        return Err(ProfileError::BadFile {
            path: src.label,
            message: "no data rows".into(),
        });
    }
    let names = src.field_names(&sample);

    // The baseline's fields count too: one the file lacks is reported all-missing.
    enum Input {
        Saved(Baseline, String),
        Data(Box<PendingBaseline>, String),
    }
    let input = match &args.baseline {
        None => None,
        Some(p) if is_saved_baseline(p)? => {
            Some(Input::Saved(Baseline::load(p)?, p.display().to_string()))
        }
        Some(p) => Some(Input::Data(
            Box::new(PendingBaseline::open(p, args.format, args.infer_rows)?),
            p.display().to_string(),
        )),
    };
    let mut known = names.clone();
    match &input {
        Some(Input::Saved(b, _)) => known.extend(b.fields.iter().map(|f| f.name.clone())),
        Some(Input::Data(d, _)) => known.extend(d.names.iter().cloned()),
        None => {}
    }
    let mut seen = HashSet::new();
    known.retain(|n| seen.insert(n.clone()));

    let selected: Vec<String> = if args.fields.is_empty() {
        known.clone()
    } else {
        let mut sel = Vec::new();
        for f in args
            .fields
            .iter()
            .map(|f| f.trim())
            .filter(|f| !f.is_empty())
        {
            if !known.iter().any(|n| n == f) {
                return Err(ProfileError::UnknownField {
                    field: f.to_string(),
                    path: if input.is_some() {
                        format!("{} and the baseline", src.label)
                    } else {
                        src.label.clone()
                    },
                    available: known.join(", "),
                });
            }
            if !sel.iter().any(|s: &String| s == f) {
                sel.push(f.to_string());
            }
        }
        sel
    };

    let baseline = match input {
        None => None,
        Some(Input::Saved(b, path)) => {
            let rows = b.rows;
            Some((b, path, "saved".to_string(), rows))
        }
        Some(Input::Data(d, path)) => {
            let from = if d.src.format == Format::Csv {
                "csv"
            } else {
                "jsonl"
            };
            let b = d.build(&selected, cfg)?;
            let rows = b.rows;
            Some((b, path, from.to_string(), rows))
        }
    };
    let absent: Vec<&String> = selected.iter().filter(|f| !names.contains(f)).collect();

    let columns = src.columns(&selected);
    let inferred = infer_kinds(&sample, &selected, &columns);
    let specs: Vec<FieldSpec> = selected
        .iter()
        .zip(inferred)
        .map(|(name, kind)| {
            let kind = baseline
                .as_ref()
                .and_then(|(b, ..)| b.field(name))
                .map_or(kind, |f| f.dist.kind());
            FieldSpec::new(name.clone(), kind)
        })
        .collect();

    let mut window = WindowStats::new(specs.clone(), baseline.as_ref().map(|(b, ..)| b));
    let mut saver = args
        .save_baseline
        .as_ref()
        .map(|_| BaselineBuilder::new(specs.clone(), cfg));
    for row in &sample {
        let view = RowView {
            row,
            columns: &columns,
        };
        window.push(&view);
        if let Some(s) = saver.as_mut() {
            s.push(&view);
        }
    }
    drop(sample);

    // JSON keys the inference rows did not have: named in the notes, not profiled.
    let known: HashSet<String> = names.iter().chain(&selected).cloned().collect();
    let mut late: Vec<(String, u64)> = Vec::new();
    while let Some(row) = src.next_row()? {
        if let Row::Json(m) = &row {
            if late.len() < 10 && m.keys().any(|k| !known.contains(k)) {
                for k in m.keys() {
                    if !known.contains(k) && !late.iter().any(|(n, _)| n == k) && late.len() < 10 {
                        late.push((k.clone(), src.rows));
                    }
                }
            }
        }
        let view = RowView {
            row: &row,
            columns: &columns,
        };
        window.push(&view);
        if let Some(s) = saver.as_mut() {
            s.push(&view);
        }
    }

    let mut report = window.report(cfg);
    for f in absent {
        report.notes.push(if src.format == Format::Csv {
            format!(
                "field `{f}` is in the baseline but not in the header of {}: missing in every row",
                src.label
            )
        } else {
            format!(
                "field `{f}` is in the baseline but not in the first {} rows of {}",
                args.infer_rows, src.label
            )
        });
    }
    for (k, at) in late {
        report.notes.push(format!(
            "field `{k}` first appears in data row {at}, after the {} rows used to find fields; not profiled",
            args.infer_rows
        ));
    }
    let mut written = Vec::new();
    if let (Some(out), Some(builder)) = (&args.save_baseline, saver) {
        write_file(out, &builder.build().to_json())?;
        written.push(format!("baseline written to {}", out.display()));
    }
    let output = ProfileOutput {
        file: src.label.clone(),
        format: src.format,
        baseline: baseline.map(|(_, path, from, rows)| BaselineSource { path, from, rows }),
        report,
    };
    if let Some(out) = &args.html {
        write_file(out, &html::render(&output, cfg))?;
        written.push(format!("HTML report written to {}", out.display()));
    }
    Ok((output, written))
}

fn write_file(path: &Path, text: &str) -> Result<(), ProfileError> {
    std::fs::write(path, text).map_err(|source| ProfileError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// `etl-pipe profile`: runs, prints the table (or JSON), returns the exit code.
pub fn run(args: &ProfileArgs, cfg: &QualityConfig) -> Result<ExitCode, ProfileError> {
    let started = Instant::now();
    let (out, written) = profile(args, cfg)?;
    if args.json {
        // Every number in a report is finite or a Figure: this cannot fail.
        println!(
            "{}",
            serde_json::to_string_pretty(&out)
                .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
        );
    } else {
        print!("{}", table(&out));
    }
    for w in written {
        eprintln!("{w}");
    }
    let secs = started.elapsed().as_secs_f64();
    let baseline_rows = match &out.baseline {
        Some(b) if b.from != "saved" => b.rows,
        _ => 0,
    };
    let total = out.report.rows + baseline_rows;
    let also = if baseline_rows > 0 {
        format!(" + {baseline_rows} baseline rows")
    } else {
        String::new()
    };
    eprintln!(
        "profiled {} rows{also} in {secs:.2} s ({:.0} rows/s)",
        out.report.rows,
        total as f64 / secs.max(1e-9)
    );
    let fail = match out.report.decision {
        Decision::Fail => true,
        Decision::Warn => args.strict,
        Decision::Pass => false,
    };
    Ok(if fail {
        ExitCode::from(EXIT_FAIL)
    } else {
        ExitCode::SUCCESS
    })
}

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
            (None, super::VifStatus::Constant) => "const".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(file: &Path) -> ProfileArgs {
        ProfileArgs {
            file: file.to_path_buf(),
            baseline: None,
            fields: vec![],
            format: Format::Auto,
            json: false,
            html: None,
            save_baseline: None,
            infer_rows: 1000,
            strict: false,
        }
    }

    #[test]
    fn csv_kinds_missing_and_type_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        let mut text = String::from("id,score,tier\n");
        for i in 0..100 {
            let score = match i {
                0..=4 => "oops".to_string(),
                5..=9 => String::new(),
                _ => format!("{}", i % 13),
            };
            let _ = writeln!(text, "{i},{score},\"T{}\"", i % 3);
        }
        std::fs::write(&p, text).unwrap();
        let (out, _) = profile(&args(&p), &QualityConfig::default()).unwrap();
        let r = &out.report;
        assert_eq!(r.rows, 100);
        let score = &r.fields[1];
        assert_eq!(score.kind, FieldKind::Numeric);
        assert_eq!((score.missing, score.type_errors), (5, 5));
        assert_eq!(r.fields[2].kind, FieldKind::Categorical);
        assert_eq!(r.vif.rows_used, 90);
        let t = table(&out);
        assert!(t.contains("score") && t.contains("5.00%"), "{t}");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, "a,b\n1,2\n3\n").unwrap();
        let e = profile(&args(&p), &QualityConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.csv line 3") && e.contains("1 fields"),
            "{e}"
        );

        let p = dir.path().join("bad.jsonl");
        std::fs::write(&p, "{\"a\": 1}\n\n[1, 2]\n").unwrap();
        let e = profile(&args(&p), &QualityConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.jsonl line 3"), "{e}");

        let p = dir.path().join("ok.jsonl");
        std::fs::write(&p, "{\"a\": 1, \"b\": \"x\"}\n").unwrap();
        let mut a = args(&p);
        a.fields = vec!["a".into(), "zz".into()];
        let e = profile(&a, &QualityConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `zz`") && e.contains("a, b"),
            "{e}"
        );

        let e = profile(
            &args(&dir.path().join("nope.csv")),
            &QualityConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot read") && e.contains("nope.csv"), "{e}");

        let p = dir.path().join("empty.csv");
        std::fs::write(&p, "a,b\n").unwrap();
        let e = profile(&args(&p), &QualityConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no data rows"), "{e}");
    }

    #[test]
    fn inference_threshold() {
        let rows: Vec<Row> = (0..100)
            .map(|i| {
                let v = if i < 8 {
                    "x".to_string()
                } else {
                    i.to_string()
                };
                Row::Csv(csv::StringRecord::from(vec![
                    v.clone(),
                    if i < 20 { "x".into() } else { v },
                ]))
            })
            .collect();
        let kinds = infer_kinds(&rows, &["a".into(), "b".into()], &[Some(0), Some(1)]);
        assert_eq!(kinds, vec![FieldKind::Numeric, FieldKind::Categorical]);
    }
}
