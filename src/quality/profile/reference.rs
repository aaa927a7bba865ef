//! The `--baseline` input: a baseline saved with `--save-baseline`, or a data file whose
//! first rows are read up front (its field names count among the known fields) and whose rest
//! is streamed into a baseline once the profiled fields are chosen.
use std::path::Path;

use super::source::{is_saved_baseline, Row, RowView, Source};
use super::{infer_kinds, BaselineSource, Format, ProfileArgs, ProfileError};
use crate::quality::{Baseline, BaselineBuilder, FieldSpec, QualityConfig};

/// The `--baseline` file, opened.
pub(super) enum BaselineInput {
    Saved(Baseline, String),
    Data(Box<PendingBaseline>, String),
}

impl BaselineInput {
    /// The `--baseline` of `args`, if given.
    pub(super) fn open(args: &ProfileArgs) -> Result<Option<BaselineInput>, ProfileError> {
        let Some(p) = &args.baseline else {
            return Ok(None);
        };
        let path = p.display().to_string();
        Ok(Some(if is_saved_baseline(p)? {
            BaselineInput::Saved(Baseline::load(p)?, path)
        } else {
            BaselineInput::Data(
                Box::new(PendingBaseline::open(p, args.format, args.infer_rows)?),
                path,
            )
        }))
    }

    /// The field names the baseline has.
    pub(super) fn names(&self) -> Vec<String> {
        match self {
            BaselineInput::Saved(b, _) => b.fields.iter().map(|f| f.name.clone()).collect(),
            BaselineInput::Data(d, _) => d.names.clone(),
        }
    }

    /// The baseline for `fields` (a data file is streamed now), and where it came from.
    pub(super) fn load(
        self,
        fields: &[String],
        cfg: &QualityConfig,
    ) -> Result<(Baseline, BaselineSource), ProfileError> {
        let (b, path, from) = match self {
            BaselineInput::Saved(b, path) => (b, path, "saved"),
            BaselineInput::Data(d, path) => {
                let from = if d.src.format == Format::Csv {
                    "csv"
                } else {
                    "jsonl"
                };
                (d.build(fields, cfg)?, path, from)
            }
        };
        let rows = b.rows;
        let from = from.to_string();
        Ok((b, BaselineSource { path, from, rows }))
    }
}

/// A data file opened as a baseline: its first rows read (kinds, field names), the rest
/// still to stream.
pub(super) struct PendingBaseline {
    src: Source,
    sample: Vec<Row>,
    names: Vec<String>,
}

impl PendingBaseline {
    fn open(path: &Path, format: Format, infer_rows: usize) -> Result<Self, ProfileError> {
        let (src, sample) = Source::open_sampled(path, format, infer_rows)?;
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
