//! Reading a JSONL or CSV input one row at a time: format detection, the CSV header, errors
//! naming the file and line, and a row seen through a field list ([`RowView`]).
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{Format, ProfileError};
use crate::quality::{Cell, FieldView};

/// One row of input, owned (kept for kind inference) or current.
#[derive(Debug, Clone)]
pub(super) enum Row {
    Csv(csv::StringRecord),
    Json(serde_json::Map<String, serde_json::Value>),
}

/// A row seen through a field list: CSV by column position, JSON by name.
pub(super) struct RowView<'a> {
    pub(super) row: &'a Row,
    /// Column of each field in the CSV header (`None`: not in this file).
    pub(super) columns: &'a [Option<usize>],
}

impl FieldView for RowView<'_> {
    fn cell(&self, index: usize, name: &str) -> Cell<'_> {
        match self.row {
            Row::Csv(r) => match self.columns.get(index).copied().flatten() {
                Some(c) => r.get(c).map_or(Cell::Absent, Cell::Text),
                None => Cell::Absent,
            },
            // By field path (`a.b`, `len(a)`), as the score stage reads records.
            Row::Json(m) => m.cell(index, name),
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
pub(super) struct Source {
    pub(super) label: String,
    pub(super) format: Format,
    reader: Reader,
    /// The CSV header (empty for JSONL).
    header: Vec<String>,
    pub(super) rows: u64,
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
    pub(super) fn next_row(&mut self) -> Result<Option<Row>, ProfileError> {
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

    /// Opens `path` and reads its first `n` rows (kept for kind inference); a file without
    /// data rows is an error.
    pub(super) fn open_sampled(
        path: &Path,
        format: Format,
        n: usize,
    ) -> Result<(Source, Vec<Row>), ProfileError> {
        let mut src = Source::open(path, format)?;
        let sample = src.sample(n)?;
        if sample.is_empty() {
            return Err(ProfileError::BadFile {
                path: src.label,
                message: "no data rows".into(),
            });
        }
        Ok((src, sample))
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

    /// The file's field names: the CSV header, or the JSON field paths in order of first
    /// appearance: a key, `key.sub` through nested objects (at any depth) and `len(key)` for
    /// an array. A key seen as an object or array in some rows and as a scalar or null in
    /// others is profiled by its paths only.
    pub(super) fn field_names(&self, sample: &[Row]) -> Vec<String> {
        if self.format == Format::Csv {
            return self.header.clone();
        }
        fn walk(
            prefix: &str,
            m: &serde_json::Map<String, serde_json::Value>,
            seen: &mut HashSet<String>,
            names: &mut Vec<String>,
        ) {
            for (k, v) in m {
                let path = format!("{prefix}{k}");
                let name = match v {
                    serde_json::Value::Object(o) => {
                        walk(&format!("{path}."), o, seen, names);
                        continue;
                    }
                    serde_json::Value::Array(_) => format!("len({path})"),
                    _ => path,
                };
                if seen.insert(name.clone()) {
                    names.push(name);
                }
            }
        }
        let mut seen = HashSet::new();
        let mut names = Vec::new();
        for row in sample {
            if let Row::Json(m) = row {
                walk("", m, &mut seen, &mut names);
            }
        }
        let nested = |n: &str| {
            names
                .iter()
                .any(|o| o.starts_with(&format!("{n}.")) || *o == format!("len({n})"))
        };
        let drop: HashSet<String> = names.iter().filter(|n| nested(n)).cloned().collect();
        names.retain(|n| !drop.contains(n));
        names
    }

    /// The CSV column of each field (all `None` for JSONL, which looks fields up by name).
    pub(super) fn columns(&self, fields: &[String]) -> Vec<Option<usize>> {
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
pub(super) fn is_saved_baseline(path: &Path) -> Result<bool, ProfileError> {
    let head = read_head(path, &path.display().to_string())?;
    let compact: String = head.chars().filter(|c| !c.is_whitespace()).collect();
    Ok(compact.starts_with(&format!(
        "{{\"format\":\"{}\"",
        crate::quality::psi::BASELINE_FORMAT
    )))
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

/// The top-level key of a field path (`a` of `a.b.c` and of `len(a.b)`).
pub(super) fn top_level(path: &str) -> &str {
    let inner = path
        .strip_prefix("len(")
        .and_then(|p| p.strip_suffix(')'))
        .unwrap_or(path);
    inner.split('.').next().unwrap_or(inner)
}
