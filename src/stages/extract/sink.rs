//! The Kafka side of the extractor: one transactional producer that writes the records of one
//! or more pages, their dead letters and the checkpoints of the streams they advance in one
//! transaction. A page is therefore either entirely in `raw`/`dead-letter` with its checkpoint,
//! or not at all; a killed extractor's open transaction is aborted when its successor (same
//! transactional id) calls `init_transactions`, and the successor resumes at the checkpoints.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use super::checkpoint::{pass_key, stream_key, PassState, State, StreamCheckpoint};
use super::page::ParsedPage;
use super::source::Position;
use super::ExtractError;
use crate::kafka::headers::{self, DeadLetter};
use crate::observability::trace::new_traceparent;
use crate::retry::Backoff;

/// Header on extract dead letters: the page's URL, credential redacted.
pub const SOURCE_URL: &str = "etl.source.url";
/// Header on extract dead letters: the element's position in the page's array.
pub const SOURCE_INDEX: &str = "etl.source.index";
/// `etl.error.kind` of a record larger than the raw topic accepts.
pub const RECORD_TOO_LARGE: &str = "record_too_large";
/// What the headers of a record or dead letter may take, at most (the envelope, the URL):
/// counted against the size limits with the payload.
const HEADERS_ALLOWANCE: usize = 4096;

/// Counts delivery reports; a failed delivery also fails the transaction's commit.
#[derive(Default)]
pub struct DeliveryCounter {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = self.last_error.lock() {
                    *g = Some(e.to_string());
                }
            }
        }
    }
}

pub type TxnProducer = ThreadedProducer<DeliveryCounter>;

/// One fetched page on its way to Kafka.
pub struct PageOut {
    pub stream: Arc<str>,
    /// Redacted URL of the page (dead-letter context).
    pub url: String,
    pub fetched_at: DateTime<Utc>,
    pub page: ParsedPage,
    /// Where the stream continues after this page.
    pub next: Position,
}

/// What the fetchers send to the sink, in order.
pub enum Msg {
    /// A new pass starts (written with the first transaction).
    PassStart(PassState),
    Page(PageOut),
    /// Every stream of the pass is done.
    PassDone(PassState),
}

impl Msg {
    fn records(&self) -> usize {
        match self {
            Msg::Page(p) => p.page.elements(),
            _ => 0,
        }
    }
}

/// Totals of what was committed.
#[derive(Debug, Default, Clone)]
pub struct SinkStats {
    pub pages: u64,
    pub records: u64,
    pub dead_letters: u64,
    pub transactions: u64,
    pub aborted: u64,
    pub payload_bytes: u64,
}

enum TxnError {
    /// Abort the transaction and send the batch again.
    Abortable(String),
    /// The producer is unusable (fenced, or a fatal librdkafka error).
    Fatal(ExtractError),
}

/// The producer and what has been committed so far.
pub struct Sink {
    pub producer: Arc<TxnProducer>,
    pub transactional_id: String,
    pub source: String,
    pub raw_topic: String,
    pub dead_letter_topic: String,
    pub state_topic: String,
    pub op_timeout: Duration,
    /// The largest message `raw_topic` and `dead_letter_topic` take
    /// ([`crate::kafka::eos::limits`]).
    pub raw_max: usize,
    pub dead_letter_max: usize,
    /// The committed state (pass and checkpoints), kept current for the next pass.
    pub state: State,
    pub stats: SinkStats,
}

fn classify(e: KafkaError, txn_id: &str, what: &str) -> TxnError {
    let fenced = |code: RDKafkaErrorCode| {
        matches!(
            code,
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
        )
    };
    match &e {
        KafkaError::Transaction(rd) if fenced(rd.code()) => {
            TxnError::Fatal(ExtractError::Fenced(txn_id.to_string()))
        }
        KafkaError::Transaction(rd) if rd.is_fatal() => {
            TxnError::Fatal(ExtractError::Kafka(format!("{what}: {e}")))
        }
        _ if e.rdkafka_error_code().is_some_and(fenced) => {
            TxnError::Fatal(ExtractError::Fenced(txn_id.to_string()))
        }
        _ => TxnError::Abortable(format!("{what}: {e}")),
    }
}

impl Sink {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&TxnProducer) -> Result<T, KafkaError> + Send + 'static,
    ) -> Result<T, KafkaError> {
        let p = self.producer.clone();
        match tokio::task::spawn_blocking(move || f(&p)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "blocking kafka call did not finish");
                Err(KafkaError::Canceled)
            }
        }
    }

    /// Sends one record, waiting while librdkafka's queue is full.
    async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let mut record = BaseRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    async fn send_msg(
        &self,
        m: &Msg,
        progress: &mut HashMap<Arc<str>, StreamCheckpoint>,
        pass: &mut Option<PassState>,
    ) -> Result<(), KafkaError> {
        match m {
            Msg::PassStart(p) | Msg::PassDone(p) => {
                *pass = Some(p.clone());
            }
            Msg::Page(po) => {
                let fetched_at = po.fetched_at.to_rfc3339_opts(SecondsFormat::Millis, true);
                self.send_records(po, &fetched_at).await?;
                self.send_dead_letters(po, &fetched_at).await?;
                self.advance(po, progress, pass);
            }
        }
        Ok(())
    }

    /// The page's good records to `raw`, each with a new trace and the source headers.
    async fn send_records(&self, po: &PageOut, fetched_at: &str) -> Result<(), KafkaError> {
        for r in &po.page.records {
            let tp = new_traceparent();
            let h = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: headers::TRACEPARENT,
                    value: Some(&tp),
                })
                .insert(Header {
                    key: headers::SOURCE,
                    value: Some(&self.source),
                })
                .insert(Header {
                    key: headers::FETCHED_AT,
                    value: Some(fetched_at),
                });
            self.send(
                &self.raw_topic,
                r.key.as_bytes(),
                po.page.bytes_of(&r.range),
                h,
            )
            .await?;
        }
        Ok(())
    }

    /// The page's poison records to `dead-letter`, with the page's URL and their position.
    async fn send_dead_letters(&self, po: &PageOut, fetched_at: &str) -> Result<(), KafkaError> {
        for d in &po.page.dead {
            let tp = new_traceparent();
            let index = d.index.to_string();
            let h = DeadLetter {
                stage: "extract",
                kind: d.kind,
                message: &d.message,
                source: None,
            }
            .headers_with(&[
                (headers::TRACEPARENT, &tp),
                (headers::SOURCE, &self.source),
                (headers::FETCHED_AT, fetched_at),
                (SOURCE_URL, &po.url),
                (SOURCE_INDEX, &index),
            ]);
            // No trustworthy key: name the element's place instead (readable in Kafdrop).
            let key = format!("{}#{}", po.url, d.index);
            crate::observability::outcome::record(
                &crate::observability::outcome::RecordOutcome::from_dead_letter(
                    "dead_letter",
                    "extract",
                    Some(key.as_bytes()),
                    &h,
                ),
            );
            self.send(
                &self.dead_letter_topic,
                key.as_bytes(),
                po.page.bytes_of(&d.range),
                h,
            )
            .await?;
        }
        Ok(())
    }

    /// Moves the page's stream checkpoint past the page (counts carried on from the last
    /// checkpoint of the same pass).
    fn advance(
        &self,
        po: &PageOut,
        progress: &mut HashMap<Arc<str>, StreamCheckpoint>,
        pass: &Option<PassState>,
    ) {
        let pass_id = pass.as_ref().map(|p| p.pass_id.clone()).unwrap_or_default();
        let prev = progress.get(&po.stream).cloned().or_else(|| {
            self.state
                .streams
                .get(&*po.stream)
                .filter(|c| c.pass_id == pass_id)
                .cloned()
        });
        let (pages, records, dead) = prev
            .map(|c| (c.pages, c.records, c.dead_letters))
            .unwrap_or((0, 0, 0));
        progress.insert(
            po.stream.clone(),
            StreamCheckpoint {
                pass_id,
                stream: po.stream.to_string(),
                position: po.next.clone(),
                pages: pages + 1,
                records: records + po.page.records.len() as u64,
                dead_letters: dead + po.page.dead.len() as u64,
                updated_at: Utc::now(),
            },
        );
    }

    /// Turns the page's records larger than the raw topic takes into dead letters
    /// (`record_too_large`), and leaves out the bytes of a dead letter larger than the
    /// dead-letter topic takes (the message says so; URL and index say where the record is):
    /// the broker would refuse them, fail the transaction, and every rerun of the pass with it.
    fn screen(&self, m: &mut Msg) {
        let Msg::Page(po) = m else { return };
        let page = &mut po.page;
        let size = |r: &std::ops::Range<usize>, key: usize| {
            crate::kafka::eos::limits::wire_size(None, None, None)
                + r.len()
                + key
                + HEADERS_ALLOWANCE
        };
        let mut i = 0;
        while i < page.records.len() {
            let r = &page.records[i];
            let n = size(&r.range, r.key.len());
            if n <= self.raw_max {
                i += 1;
                continue;
            }
            let r = page.records.remove(i);
            tracing::warn!(url = %po.url, index = r.index, bytes = r.range.len(), "record too large for the raw topic: dead letter");
            page.dead.push(super::page::BadRecord {
                index: r.index,
                kind: RECORD_TOO_LARGE,
                message: format!(
                    "the record (key {}) is {} bytes, more than the {} that {} accepts \
                     (max.message.bytes of the topic, message.max.bytes of the producer)",
                    r.key,
                    r.range.len(),
                    self.raw_max,
                    self.raw_topic
                ),
                range: r.range,
            });
        }
        for d in &mut page.dead {
            let n = size(&d.range, po.url.len() + 24);
            if n > self.dead_letter_max {
                d.message = format!(
                    "{}; {}",
                    d.message,
                    crate::kafka::eos::limits::left_out(
                        d.range.len(),
                        &self.dead_letter_topic,
                        self.dead_letter_max
                    )
                );
                d.range = 0..0;
            }
        }
        page.dead.sort_by_key(|d| d.index);
    }

    fn begin(&self) -> Result<Txn, TxnError> {
        self.producer
            .begin_transaction()
            .map_err(|e| classify(e, &self.transactional_id, "begin transaction"))?;
        Ok(Txn {
            progress: HashMap::new(),
            pass: self.state.pass.clone(),
            pass_touched: false,
        })
    }

    async fn add(&self, txn: &mut Txn, m: &Msg) -> Result<(), TxnError> {
        if matches!(m, Msg::PassStart(_) | Msg::PassDone(_)) {
            txn.pass_touched = true;
        }
        self.send_msg(m, &mut txn.progress, &mut txn.pass)
            .await
            .map_err(|e| classify(e, &self.transactional_id, "produce"))
    }

    /// Writes the checkpoints of the streams the transaction advanced, then commits.
    async fn finish(&self, txn: &Txn) -> Result<(), TxnError> {
        let txn_id = self.transactional_id.clone();
        for c in txn.progress.values() {
            let v = serde_json::to_vec(c)
                .map_err(|e| TxnError::Fatal(ExtractError::State(e.to_string())))?;
            self.send(
                &self.state_topic,
                stream_key(&self.source, &c.stream).as_bytes(),
                &v,
                OwnedHeaders::new(),
            )
            .await
            .map_err(|e| classify(e, &txn_id, "produce checkpoint"))?;
        }
        if txn.pass_touched {
            if let Some(p) = &txn.pass {
                let v = serde_json::to_vec(p)
                    .map_err(|e| TxnError::Fatal(ExtractError::State(e.to_string())))?;
                self.send(
                    &self.state_topic,
                    pass_key(&self.source).as_bytes(),
                    &v,
                    OwnedHeaders::new(),
                )
                .await
                .map_err(|e| classify(e, &txn_id, "produce pass record"))?;
            }
        }
        let timeout = self.op_timeout;
        let t0 = std::time::Instant::now();
        // Wait for the delivery reports here: rdkafka's `flush()` (called by
        // `commit_transaction`) polls in fixed 100 ms slices, which would add 100 ms to every
        // commit. The producer's own thread serves the reports as they arrive.
        let deadline = t0 + timeout;
        while self.producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // commit_transaction flushes: it returns Ok only when every message of the
        // transaction has been acknowledged (acks=all), so every delivery is awaited here.
        loop {
            match self.blocking(move |p| p.commit_transaction(timeout)).await {
                Ok(()) => {
                    let secs = t0.elapsed().as_secs_f64();
                    metrics::histogram!("etl_extract_commit_duration_seconds").record(secs);
                    tracing::debug!(commit_ms = secs * 1000.0, "commit confirmed");
                    return Ok(());
                }
                Err(KafkaError::Transaction(rd))
                    if rd.is_retriable() && !rd.txn_requires_abort() =>
                {
                    tracing::warn!(error = %rd, "commit not confirmed yet; retrying the commit");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(classify(e, &txn_id, "commit transaction")),
            }
        }
    }

    fn committed(&mut self, batch: &[Msg], txn: Txn) {
        let (mut pages, mut records, mut dead, mut bytes) = (0u64, 0u64, 0u64, 0u64);
        for m in batch {
            if let Msg::Page(p) = m {
                pages += 1;
                records += p.page.records.len() as u64;
                dead += p.page.dead.len() as u64;
                bytes += p
                    .page
                    .records
                    .iter()
                    .map(|r| r.range.len() as u64)
                    .sum::<u64>();
            }
        }
        self.stats.pages += pages;
        self.stats.records += records;
        self.stats.dead_letters += dead;
        self.stats.payload_bytes += bytes;
        self.stats.transactions += 1;
        metrics::counter!("etl_extract_records_total", "outcome" => "raw").increment(records);
        metrics::counter!("etl_extract_records_total", "outcome" => "dead_letter").increment(dead);
        metrics::counter!("etl_extract_pages_total").increment(pages);
        metrics::counter!("etl_extract_transactions_total").increment(1);
        tracing::debug!(pages, records, dead_letters = dead, "transaction committed");
        for (k, c) in txn.progress {
            self.state.streams.insert(k.to_string(), c);
        }
        self.state.pass = txn.pass;
    }

    async fn abort(&mut self, msg: &str) -> Result<(), ExtractError> {
        self.stats.aborted += 1;
        metrics::counter!("etl_extract_transactions_aborted_total").increment(1);
        let last = self
            .producer
            .context()
            .last_error
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .unwrap_or_default();
        tracing::warn!(error = %msg, last_delivery_error = %last, "transaction failed; aborting it, the batch is sent again");
        let timeout = self.op_timeout;
        if let Err(e) = self.blocking(move |p| p.abort_transaction(timeout)).await {
            match classify(e, &self.transactional_id, "abort transaction") {
                TxnError::Fatal(f) => return Err(f),
                TxnError::Abortable(m) => tracing::warn!(error = %m, "abort failed"),
            }
        }
        Ok(())
    }

    /// Sends a whole batch again in fresh transactions until one commits (a few tries). The
    /// checkpoints still point before the batch meanwhile, so nothing is lost if this fails.
    async fn retry_batch(&mut self, batch: &[Msg], mut last: String) -> Result<(), ExtractError> {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        for _attempt in 2..=5u32 {
            tokio::time::sleep(backoff.next_delay()).await;
            let result = async {
                let mut txn = self.begin()?;
                for m in batch {
                    self.add(&mut txn, m).await?;
                }
                self.finish(&txn).await?;
                Ok::<_, TxnError>(txn)
            }
            .await;
            match result {
                Ok(txn) => {
                    self.committed(batch, txn);
                    return Ok(());
                }
                Err(TxnError::Fatal(e)) => return Err(e),
                Err(TxnError::Abortable(m)) => {
                    last = m;
                    self.abort(&last).await?;
                }
            }
        }
        Err(ExtractError::Kafka(format!(
            "a transaction failed 5 times; last error: {last}"
        )))
    }

    /// Drains `rx` until every sender is gone. Records are produced as pages arrive; a
    /// transaction is committed per `commit_records` records or `commit_interval`.
    pub async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Msg>,
        commit_records: usize,
        commit_interval: Duration,
    ) -> Result<(), ExtractError> {
        while let Some(mut first) = rx.recv().await {
            self.screen(&mut first);
            let deadline = tokio::time::Instant::now() + commit_interval;
            let mut n = first.records();
            let mut failed: Option<String> = None;
            let mut txn = match self.begin() {
                Ok(t) => Some(t),
                Err(TxnError::Fatal(e)) => return Err(e),
                Err(TxnError::Abortable(m)) => {
                    failed = Some(m);
                    None
                }
            };
            let mut batch = vec![first];
            if let Some(t) = txn.as_mut() {
                if let Err(e) = self.add(t, &batch[0]).await {
                    match e {
                        TxnError::Fatal(e) => return Err(e),
                        TxnError::Abortable(m) => failed = Some(m),
                    }
                }
            }
            while n < commit_records {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(mut m)) => {
                        self.screen(&mut m);
                        n += m.records();
                        if let (None, Some(t)) = (&failed, txn.as_mut()) {
                            match self.add(t, &m).await {
                                Ok(()) => {}
                                Err(TxnError::Fatal(e)) => return Err(e),
                                Err(TxnError::Abortable(msg)) => failed = Some(msg),
                            }
                        }
                        batch.push(m);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            if failed.is_none() {
                if let Some(t) = txn.take() {
                    match self.finish(&t).await {
                        Ok(()) => {
                            self.committed(&batch, t);
                            continue;
                        }
                        Err(TxnError::Fatal(e)) => return Err(e),
                        Err(TxnError::Abortable(m)) => failed = Some(m),
                    }
                }
            }
            let msg = failed.unwrap_or_default();
            self.abort(&msg).await?;
            self.retry_batch(&batch, msg).await?;
        }
        Ok(())
    }
}

struct Txn {
    progress: HashMap<Arc<str>, StreamCheckpoint>,
    pass: Option<PassState>,
    pass_touched: bool,
}
