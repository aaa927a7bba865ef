//! `etl-pipe quality report`: reads the configured pipeline's `quality` topic (read_committed,
//! no consumer group) within a time range and writes the page of
//! [`crate::quality::timeline`]. No report in the range is not an error of the page: it is
//! written with a note, and the command exits 4 (as `trace` does when it finds nothing) so a
//! script can tell.
use std::path::PathBuf;

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;

use super::scan::{self, Bounds};
use crate::config::{Config, TopicRole};
use crate::quality::timeline::{self, BlockReport, PageInfo};

/// What went wrong; every message names the topic or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum QualityReportError {
    #[error("reading {topic}: {source}")]
    Kafka {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Metadata(#[from] crate::kafka::MetadataError),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What was read and written.
#[derive(Debug)]
pub struct Outcome {
    pub out: PathBuf,
    pub reports: usize,
    pub failed: usize,
    pub skipped: u64,
    pub topic: String,
    pub range: String,
}

/// A time: RFC 3339, a date, or an age before now like `1h`, `30m`, `2d` (humantime).
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, QualityReportError> {
    if let Ok(d) = humantime::parse_duration(s.trim()) {
        return Ok(now_ms - d.as_millis() as i64);
    }
    super::replay::parse_datetime(s).map_err(|_| {
        QualityReportError::Invalid(format!(
            "`{s}` is not a time: use RFC 3339 like 2026-11-28T10:00:00Z, a date like \
             2026-11-28, or an age like 1h, 30m, 2d"
        ))
    })
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The range in words, for the page and the summary line.
fn describe(b: Bounds, partition: Option<i32>) -> String {
    let range = match (b.since_ms, b.until_ms) {
        (None, None) => "everything retained".to_string(),
        (Some(s), None) => format!("from {} to now", rfc3339(s)),
        (None, Some(u)) => format!("up to {}", rfc3339(u)),
        (Some(s), Some(u)) => format!("from {} to {}", rfc3339(s), rfc3339(u)),
    };
    match partition {
        Some(p) => format!("{range}, input partition {p}"),
        None => range,
    }
}

/// Reads the reports (of input partition `partition` only, when given) and writes the page.
pub fn run(
    cfg: &Config,
    out: PathBuf,
    b: Bounds,
    partition: Option<i32>,
) -> Result<Outcome, QualityReportError> {
    if let (Some(s), Some(u)) = (b.since_ms, b.until_ms) {
        if s > u {
            return Err(QualityReportError::Invalid(format!(
                "--from {} is after --to {}",
                rfc3339(s),
                rfc3339(u)
            )));
        }
    }
    let topic = cfg.topics.name(TopicRole::Quality);
    let kafka = |source| QualityReportError::Kafka {
        topic: topic.clone(),
        source,
    };
    let c = scan::reader(cfg, "quality-report").map_err(kafka)?;
    // A missing topic: "topic X does not exist; create … with `etl-pipe topics apply`".
    let partitions = crate::kafka::partitions(c.client(), &topic, scan::TIMEOUT)?;
    let mut blocks: Vec<BlockReport> = Vec::new();
    let mut skipped = 0u64;
    scan::scan(&c, &topic, &partitions, b, false, |m| {
        let parsed = m
            .payload()
            .and_then(|p| serde_json::from_slice::<BlockReport>(p).ok());
        match parsed {
            Some(mut r) => {
                if partition.is_none_or(|p| p == r.partition) {
                    r.time_ms = m.timestamp().to_millis();
                    blocks.push(r);
                }
            }
            None => skipped += 1,
        }
    })
    .map_err(kafka)?;
    // Exactly-once writes one report per block; keep the last should a block appear twice
    // (a topic written by two runs of the same pipeline name).
    blocks.sort_by_key(|r| (r.partition, r.first_offset, r.time_ms));
    blocks.dedup_by(|later, earlier| {
        let same = later.window == earlier.window;
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    let range = describe(b, partition);
    let info = PageInfo {
        pipeline: cfg.pipeline.name.clone(),
        topic: topic.clone(),
        range: range.clone(),
        skipped,
    };
    let html = timeline::render(&info, &blocks, &cfg.quality);
    std::fs::write(&out, html).map_err(|source| QualityReportError::Write {
        path: out.display().to_string(),
        source,
    })?;
    Ok(Outcome {
        failed: blocks
            .iter()
            .filter(|r| r.decision == crate::quality::Decision::Fail)
            .count(),
        reports: blocks.len(),
        out,
        skipped,
        topic,
        range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_dates_or_ages() {
        let now = 1_764_000_000_000;
        assert_eq!(parse_time("1h", now).unwrap(), now - 3_600_000);
        assert_eq!(parse_time("30m", now).unwrap(), now - 1_800_000);
        assert_eq!(
            parse_time("2026-11-28T10:00:00Z", now).unwrap(),
            1_795_860_000_000
        );
        assert_eq!(parse_time("2026-11-28", now).unwrap(), 1_795_824_000_000);
        let e = parse_time("yesterday-ish", now).unwrap_err().to_string();
        assert!(e.contains("yesterday-ish") && e.contains("1h"), "{e}");
        assert_eq!(
            describe(
                Bounds {
                    since_ms: Some(1_795_824_000_000),
                    until_ms: None
                },
                Some(2)
            ),
            "from 2026-11-28T00:00:00Z to now, input partition 2"
        );
    }
}
