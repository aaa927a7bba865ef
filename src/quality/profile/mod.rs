//! `etl-pipe profile`: the quality report of a JSONL or CSV file, outside any pipeline.
//!
//! One streaming pass over the file (two when `--baseline` is a data file: that file is
//! read first to build the baseline), in memory bounded by the number of fields, not rows:
//! the first `--infer-rows` rows are held to infer each field's kind, then every row goes
//! through a [`WindowStats`] (and a [`BaselineBuilder`] for `--save-baseline`).
//!
//! - Fields: the CSV header, or the field paths of the first `--infer-rows` JSON objects
//!   (`key`, `key.sub` through nested objects, `len(key)` for arrays; in order of first
//!   appearance; keys first seen later are listed in the notes, not profiled), plus the baseline's fields (one the file lacks is missing in every row,
//!   so a dropped column FAILs). `--fields` picks some of them; an unknown name is an error.
//! - Kinds: numeric when at least 90 % of the non-missing values in the inference rows
//!   are numbers (JSON numbers or text that parses as one), categorical otherwise (also
//!   when the field has no values there). With a baseline, its kinds win, so values that
//!   do not fit the baseline's kind count as type errors.
//! - Exit codes: 0 PASS or WARN, 3 FAIL (and WARN with `--strict`), 1 on an error
//!   (unreadable file, bad CSV row or JSON line with its line number, unknown field),
//!   2 on a command-line usage error.
mod reference;
mod source;
mod text;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;

use self::reference::BaselineInput;
use self::source::{Row, RowView, Source};
use super::psi::BaselineError;
use super::{
    classify, html, Baseline, BaselineBuilder, Classified, Decision, FieldKind, FieldSpec,
    FieldView, QualityConfig, QualityReport, WindowStats,
};

pub use self::text::table;

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

/// Runs the profile and prints it; returns the report (for callers and tests).
pub fn profile(
    args: &ProfileArgs,
    cfg: &QualityConfig,
) -> Result<(ProfileOutput, Vec<String>), ProfileError> {
    let (mut src, sample) = Source::open_sampled(&args.file, args.format, args.infer_rows)?;
    let names = src.field_names(&sample);
    // The baseline's fields count too: one the file lacks is reported all-missing.
    let input = BaselineInput::open(args)?;
    let selected = select_fields(args, &names, input.as_ref(), &src.label)?;
    let baseline = match input {
        None => None,
        Some(i) => Some(i.load(&selected, cfg)?),
    };
    let absent: Vec<&String> = selected.iter().filter(|f| !names.contains(f)).collect();

    let columns = src.columns(&selected);
    let kinds_from = baseline.as_ref().map(|(b, _)| b);
    let specs = field_specs(&sample, &selected, &columns, kinds_from);
    let mut window = WindowStats::new(specs.clone(), baseline.as_ref().map(|(b, _)| b));
    let mut saver = args
        .save_baseline
        .as_ref()
        .map(|_| BaselineBuilder::new(specs.clone(), cfg));
    let mut push = |view: &RowView<'_>| {
        window.push(view);
        if let Some(s) = saver.as_mut() {
            s.push(view);
        }
    };
    // Top-level keys: a field path `a.b` or `len(a)` knows the key `a`.
    let known: HashSet<String> = names
        .iter()
        .chain(&selected)
        .map(|n| source::top_level(n).to_string())
        .collect();
    let late = stream(&mut src, sample, &columns, &known, &mut push)?;

    let mut report = window.report(cfg);
    for (f, d) in report.fields.iter_mut().zip(window.distributions()) {
        f.distribution = d;
    }
    add_notes(&mut report, &src, args.infer_rows, &absent, late);
    let mut written = Vec::new();
    if let (Some(out), Some(builder)) = (&args.save_baseline, saver) {
        write_file(out, &builder.build().to_json())?;
        written.push(format!("baseline written to {}", out.display()));
    }
    let output = ProfileOutput {
        file: src.label.clone(),
        format: src.format,
        baseline: baseline.map(|(_, source)| source),
        report,
    };
    if let Some(out) = &args.html {
        write_file(out, &html::render(&output, cfg))?;
        written.push(format!("HTML report written to {}", out.display()));
    }
    Ok((output, written))
}

/// The profiled fields: `--fields` (each one known, in the order given, once), or every
/// known field (the file's, then the baseline's).
fn select_fields(
    args: &ProfileArgs,
    names: &[String],
    input: Option<&BaselineInput>,
    label: &str,
) -> Result<Vec<String>, ProfileError> {
    let mut known = names.to_vec();
    if let Some(i) = input {
        known.extend(i.names());
    }
    let mut seen = HashSet::new();
    known.retain(|n| seen.insert(n.clone()));
    if args.fields.is_empty() {
        return Ok(known);
    }
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
                    format!("{label} and the baseline")
                } else {
                    label.to_string()
                },
                available: known.join(", "),
            });
        }
        if !sel.iter().any(|s: &String| s == f) {
            sel.push(f.to_string());
        }
    }
    Ok(sel)
}

/// Each field's spec: the kind inferred from the sample, or the baseline's when it has the
/// field (values that do not fit it then count as type errors).
fn field_specs(
    sample: &[Row],
    fields: &[String],
    columns: &[Option<usize>],
    baseline: Option<&Baseline>,
) -> Vec<FieldSpec> {
    let inferred = infer_kinds(sample, fields, columns);
    fields
        .iter()
        .zip(inferred)
        .map(|(name, kind)| {
            let kind = baseline
                .and_then(|b| b.field(name))
                .map_or(kind, |f| f.dist.kind());
            FieldSpec::new(name.clone(), kind)
        })
        .collect()
}

/// Pushes the sample, then every further row; returns the JSON keys the inference rows did
/// not have (at most 10, with the data row each first appears in): named in the notes, not
/// profiled.
fn stream(
    src: &mut Source,
    sample: Vec<Row>,
    columns: &[Option<usize>],
    known: &HashSet<String>,
    push: &mut impl FnMut(&RowView<'_>),
) -> Result<Vec<(String, u64)>, ProfileError> {
    for row in &sample {
        push(&RowView { row, columns });
    }
    drop(sample);
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
        push(&RowView { row: &row, columns });
    }
    Ok(late)
}

/// Notes on the baseline's fields the file lacks and on keys that appeared too late.
fn add_notes(
    report: &mut QualityReport,
    src: &Source,
    infer_rows: usize,
    absent: &[&String],
    late: Vec<(String, u64)>,
) {
    for f in absent {
        report.notes.push(if src.format == Format::Csv {
            format!(
                "field `{f}` is in the baseline but not in the header of {}: missing in every row",
                src.label
            )
        } else {
            format!(
                "field `{f}` is in the baseline but not in the first {} rows of {}",
                infer_rows, src.label
            )
        });
    }
    for (k, at) in late {
        report.notes.push(format!(
            "field `{k}` first appears in data row {at}, after the {} rows used to find fields; not profiled",
            infer_rows
        ));
    }
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

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

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
