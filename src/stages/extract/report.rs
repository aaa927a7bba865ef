//! What a run did: the [`RunReport`] that `etl-pipe extract` prints, and the
//! [`FailedRequest`]s it lists (the streams that resume there on the next run).
use std::fmt;
use std::time::Duration;

/// A request given up on; its stream stops there and resumes there on the next run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRequest {
    pub stream: String,
    /// Redacted.
    pub url: String,
    pub attempts: u32,
    pub reason: String,
}

impl fmt::Display for FailedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] after {} attempt(s): {}",
            self.url, self.stream, self.attempts, self.reason
        )
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Passes started or resumed.
    pub passes: u32,
    /// Passes completed (every stream to its end).
    pub completed: u32,
    /// Id of the last pass.
    pub pass_id: Option<String>,
    /// The last pass was resumed from checkpoints.
    pub resumed: bool,
    /// Streams skipped because a checkpoint said they were done.
    pub streams_skipped: usize,
    pub streams: usize,
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub http_bytes: u64,
    pub pages: u64,
    pub records: u64,
    pub dead_letters: u64,
    pub payload_bytes: u64,
    pub transactions: u64,
    pub aborted_transactions: u64,
    /// Requests given up on in the last pass.
    pub failed: Vec<FailedRequest>,
    /// Probes that found the API down (continuous mode keeps going).
    pub unavailable: u32,
    pub interrupted: bool,
    pub elapsed: Duration,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "extract: {} pass(es), {} completed{}{}",
            self.passes,
            self.completed,
            if self.resumed {
                ", last one resumed from checkpoints"
            } else {
                ""
            },
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  records {} -> raw, {} -> dead-letter, {} pages, {} transactions ({} aborted)",
            self.records,
            self.dead_letters,
            self.pages,
            self.transactions,
            self.aborted_transactions
        )?;
        writeln!(
            f,
            "  requests {} ({} retries, {} rate limited), {:.1} MB received, {:.1}s",
            self.requests,
            self.retries,
            self.rate_limited,
            self.http_bytes as f64 / 1e6,
            self.elapsed.as_secs_f64()
        )?;
        if self.streams_skipped > 0 {
            writeln!(
                f,
                "  {} stream(s) already done in this pass, skipped",
                self.streams_skipped
            )?;
        }
        if !self.failed.is_empty() {
            writeln!(
                f,
                "  FAILED requests ({}); their streams resume there on the next run:",
                self.failed.len()
            )?;
            for r in &self.failed {
                writeln!(f, "    {r}")?;
            }
        }
        Ok(())
    }
}
