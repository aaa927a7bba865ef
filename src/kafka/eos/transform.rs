//! The stage's side of the loop: the [`Transform`] trait a stage implements, and the
//! [`TransformError`] it returns when something other than the record failed.
use rdkafka::message::BorrowedMessage;

use super::Output;

/// A transform failure. Poison records are not failures: the transform turns them into
/// dead-letter outputs itself.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// Something outside the record failed (e.g. a schema registry): abort, rewind, back off,
    /// try the same records again.
    #[error("{0}")]
    Retriable(String),
    /// The stage cannot go on (a person must act): abort and stop.
    #[error("{0}")]
    Fatal(String),
}

/// The stage-specific part of a consume–transform–produce loop.
///
/// Everything runs on the loop's thread; the hooks other than `transform` have defaults that
/// fit a stateless transform (clean). A stateful one (score: windows per partition) uses
/// `flush` to emit what is due, `held_from` to keep the committed offset at the oldest record
/// it still holds in memory, and `reset` to drop state when records will be read again.
pub trait Transform: Send + 'static {
    /// One input message → zero or more outputs appended to `out`.
    fn transform(
        &mut self,
        msg: &BorrowedMessage<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), TransformError>;

    /// Called before every commit, and every `batch_max_age` while idle: append outputs that
    /// are due without a new input (e.g. windows closed by age).
    fn flush(&mut self, _out: &mut Vec<Output>) -> Result<(), TransformError> {
        Ok(())
    }

    /// The oldest offset of `topic`/`partition` whose effect is still only in memory; the
    /// transaction commits this offset instead of "last processed + 1", so a restart reads
    /// those records again. `None`: everything read has been emitted.
    fn held_from(&self, _topic: &str, _partition: i32) -> Option<i64> {
        None
    }

    /// These partitions will be read again from their committed offsets (after an abort) or
    /// belong to another instance now (revoked): forget what is held for them.
    fn reset(&mut self, _partitions: &[(String, i32)]) {}

    /// The transaction holding every output appended so far committed (log or count what
    /// is now durable; outputs of an aborted transaction are followed by `reset` instead).
    fn committed(&mut self) {}
}
