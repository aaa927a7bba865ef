//! The write commands and what their replies are trusted for: an unordered `insert` that
//! lands new documents cheaply, then unordered replacement upserts (`update`) for the rest,
//! split until every failure stands alone when a reply does not account for each statement.
use mongodb::bson::{doc, Bson, Document, RawArrayBuf, RawDocumentBuf};

use super::document::{version_number, Upsert};
use super::errors::{classify, transient};
use super::MongoSink;
use crate::stages::sinks::{Rejected, SinkError};

/// Statements per `update` command at most (MongoDB's `maxWriteBatchSize`).
pub(super) const MAX_STATEMENTS: usize = 100_000;
/// Bytes of documents per command as sent: a command is copied a few times on its way out
/// (array, command, wire message), so 16 MiB commands cost ~50 MiB per partition in flight.
/// 1 MiB (~1 500 league documents) keeps that small; a bigger document still goes alone.
const CHUNK_BYTES: usize = 1024 * 1024;

impl MongoSink {
    /// Sends the upserts; returns the documents MongoDB rejected. Transient per-document
    /// errors fail the call (the caller retries the whole batch: upserts are idempotent).
    pub(super) async fn upsert_all(&self, upserts: &[Upsert]) -> Result<Vec<Rejected>, SinkError> {
        let mut rejected = Vec::new();
        let mut start = 0;
        while start < upserts.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < upserts.len()
                && end - start < MAX_STATEMENTS
                && (end == start || bytes + upserts[end].bytes + 64 <= CHUNK_BYTES)
            {
                bytes += upserts[end].bytes + 64;
                end += 1;
            }
            // Statements still to send, the next on top (order does not matter: one per key).
            // MongoDB answers an unordered update with `n` and the failed statements by index.
            // FerretDB stops at the first failing statement, omits `n` and reports a wrong
            // index: a reply that does not account for every statement is not trusted, the
            // part is split in halves and sent again (upserts: sending an applied statement
            // again is harmless) until each failure is one statement on its own.
            // Append first: one unordered `insert` lands every new document cheaply (FerretDB
            // runs each upsert statement as a lookup plus a write, ~100× slower). Documents
            // that already exist (a replay, a restart) or fail for any other reason go on
            // to the upserts below, which replace or reject them.
            let chunk: Vec<&Upsert> = upserts[start..end].iter().collect();
            let remaining = self.insert_new(&chunk).await?;
            let remaining = self.drop_exact_replays(remaining).await?;
            // The documents already stored go through `update`, at most
            // `update_statements` per command (FerretDB: see FERRETDB_UPDATE_STATEMENTS).
            let mut stack: Vec<Vec<&Upsert>> = remaining
                .chunks(self.update_statements.max(1))
                .rev()
                .map(|c| c.to_vec())
                .collect();
            let mut failures: Vec<(&Upsert, Failure)> = Vec::new();
            while let Some(part) = stack.pop() {
                let (applied, failed) = self.update_command(&part).await?;
                let in_range = failed.iter().all(|(i, _)| *i < part.len());
                match applied {
                    Some(n) if failed.is_empty() && n >= part.len() => {}
                    Some(n) if in_range && n + failed.len() == part.len() => {
                        failures.extend(failed.into_iter().map(|(i, f)| (part[i], f)))
                    }
                    _ if part.len() == 1 => match failed.into_iter().next() {
                        Some((_, f)) => failures.push((part[0], f)),
                        None => {
                            return Err(SinkError::Retriable {
                                what: "the update command",
                                message: "a statement was neither applied nor rejected".into(),
                            })
                        }
                    },
                    _ => {
                        let mut left = part;
                        let right = left.split_off(left.len() / 2);
                        stack.push(right);
                        stack.push(left);
                    }
                }
            }
            rejected.extend(self.stale_or_rejected(failures).await?);
            start = end;
        }
        Ok(rejected)
    }

    /// Sorts failed statements: a duplicate `_id` on a conditional upsert means the stored
    /// document is newer (the filter did not match it, so the upsert tried to insert): skipped,
    /// not an error. Everything else, and a duplicate whose stored version is not newer (a
    /// unique index on another field), is rejected.
    /// Leaves out the documents whose stored copy came from the very same message (source
    /// topic, partition and offset): a replay after a crash, a restart or a rebalance. One
    /// lookup for the lot instead of an `update` per document — FerretDB runs each update
    /// statement as a scan of the collection (≈ 45 statements/s at 20 000 documents), so a
    /// replay of a few thousand documents took minutes there and stalled the sink.
    async fn drop_exact_replays<'a>(
        &self,
        todo: Vec<&'a Upsert>,
    ) -> Result<Vec<&'a Upsert>, SinkError> {
        use crate::stages::sinks::lineage::{SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};
        if todo.is_empty() {
            return Ok(todo);
        }
        let ids: Vec<Bson> = todo.iter().map(|u| u.id.clone()).collect();
        let mut cursor = self
            .db
            .collection::<Document>(&self.collection)
            .find(doc! {"_id": {"$in": ids}})
            .projection(doc! {"_id": 1, SOURCE_TOPIC: 1, SOURCE_PARTITION: 1, SOURCE_OFFSET: 1})
            .await
            .map_err(|e| classify(&e, "reading stored lineage"))?;
        let mut stored = std::collections::HashMap::new();
        while cursor
            .advance()
            .await
            .map_err(|e| classify(&e, "reading stored lineage"))?
        {
            let d = cursor
                .deserialize_current()
                .map_err(|e| classify(&e, "reading stored lineage"))?;
            if let (Some(id), Ok(t), Ok(p), Ok(o)) = (
                d.get("_id"),
                d.get_str(SOURCE_TOPIC),
                d.get_i32(SOURCE_PARTITION),
                d.get_i64(SOURCE_OFFSET),
            ) {
                stored.insert(id.to_string(), (t.to_string(), p, o));
            }
        }
        let same = |u: &Upsert| {
            let Some((t, p, o)) = stored.get(&u.id.to_string()) else {
                return false;
            };
            u.doc.get_str(SOURCE_TOPIC).is_ok_and(|x| x == t)
                && u.doc.get_i32(SOURCE_PARTITION).is_ok_and(|x| x == *p)
                && u.doc.get_i64(SOURCE_OFFSET).is_ok_and(|x| x == *o)
        };
        let before = todo.len();
        let left: Vec<&Upsert> = todo.into_iter().filter(|u| !same(u)).collect();
        if left.len() < before {
            tracing::debug!(
                replayed = before - left.len(),
                "documents already stored from the same messages: not written again"
            );
        }
        Ok(left)
    }

    async fn stale_or_rejected(
        &self,
        failures: Vec<(&Upsert, Failure)>,
    ) -> Result<Vec<Rejected>, SinkError> {
        let reject = |u: &Upsert, f: Failure| Rejected {
            index: u.index,
            kind: "mongo_write",
            message: f.message,
        };
        let (Some(vf), true) = (
            &self.version_field,
            failures.iter().any(|(_, f)| f.code == DUPLICATE_KEY),
        ) else {
            return Ok(failures.into_iter().map(|(u, f)| reject(u, f)).collect());
        };
        let ids: Vec<Bson> = failures
            .iter()
            .filter(|(_, f)| f.code == DUPLICATE_KEY)
            .map(|(u, _)| u.id.clone())
            .collect();
        let mut stored = std::collections::HashMap::new();
        let mut cursor = self
            .db
            .collection::<Document>(&self.collection)
            .find(doc! {"_id": {"$in": ids}})
            .projection(doc! {"_id": 1, vf.as_str(): 1})
            .await
            .map_err(|e| classify(&e, "reading stored versions"))?;
        while cursor
            .advance()
            .await
            .map_err(|e| classify(&e, "reading stored versions"))?
        {
            let d = cursor
                .deserialize_current()
                .map_err(|e| classify(&e, "reading stored versions"))?;
            if let (Some(id), Some(v)) = (d.get("_id"), d.get(vf.as_str()).and_then(version_number))
            {
                stored.insert(id.to_string(), v);
            }
        }
        let mut rejected = Vec::new();
        let mut skipped = 0;
        for (u, f) in failures {
            let mine = u.version.as_ref().and_then(version_number);
            let newer = match (stored.get(&u.id.to_string()), mine) {
                (Some(s), Some(m)) => *s > m,
                _ => false,
            };
            if f.code == DUPLICATE_KEY && newer {
                skipped += 1;
            } else {
                rejected.push(reject(u, f));
            }
        }
        if skipped > 0 {
            tracing::debug!(
                skipped,
                "older versions skipped: the stored documents are newer"
            );
        }
        Ok(rejected)
    }

    /// One unordered `insert` of the documents; returns those not inserted (every one when
    /// the reply does not account for each document).
    async fn insert_new<'a>(&self, todo: &[&'a Upsert]) -> Result<Vec<&'a Upsert>, SinkError> {
        // `document` puts `_id` first.
        let mut docs = RawArrayBuf::new();
        for u in todo {
            docs.push(u.doc.clone());
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append("insert", self.collection.as_str());
        cmd.append("ordered", false);
        cmd.append("documents", docs);
        let reply = self
            .db
            .run_raw_command(cmd)
            .await
            .map_err(|e| classify(&e, "the insert command"))?;
        if reply.get_document("writeConcernError").is_ok() {
            return Ok(todo.to_vec());
        }
        let Some(inserted) = applied_count(&reply) else {
            return Ok(todo.to_vec());
        };
        let mut failed = std::collections::BTreeSet::new();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors {
                match e.as_document().and_then(|d| d.get("index")) {
                    Some(Bson::Int32(i)) => {
                        failed.insert(*i as usize);
                    }
                    Some(Bson::Int64(i)) => {
                        failed.insert(*i as usize);
                    }
                    _ => return Ok(todo.to_vec()),
                }
            }
        }
        if inserted + failed.len() != todo.len() || failed.iter().any(|i| *i >= todo.len()) {
            return Ok(todo.to_vec());
        }
        Ok(failed.into_iter().map(|i| todo[i]).collect())
    }

    /// One `update` command: the number of statements applied (`n`, if the reply has it) and
    /// the rejected ones (by position in `todo`, as the server reports it).
    async fn update_command(
        &self,
        todo: &[&Upsert],
    ) -> Result<(Option<usize>, Vec<(usize, Failure)>), SinkError> {
        let mut updates = RawArrayBuf::new();
        for u in todo {
            let mut q = RawDocumentBuf::new();
            if let Ok(Some(id)) = u.doc.get("_id") {
                q.append_ref("_id", id);
            }
            // Conditional: only a stored version that is the same or older is replaced. When
            // the stored one is newer nothing matches, the upsert tries to insert the `_id`
            // and fails as a duplicate (sorted out in `stale_or_rejected`).
            if let (Some(vf), Some(v)) = (&self.version_field, &u.version) {
                if let Ok(v) = mongodb::bson::RawBson::try_from(v.clone()) {
                    let mut lte = RawDocumentBuf::new();
                    lte.append("$lte", v);
                    q.append(vf.as_str(), lte);
                }
            }
            let mut st = RawDocumentBuf::new();
            st.append("q", q);
            st.append("u", u.doc.clone());
            st.append("upsert", true);
            st.append("multi", false);
            updates.push(st);
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append("update", self.collection.as_str());
        cmd.append("ordered", false);
        cmd.append("updates", updates);
        let reply = self
            .db
            .run_raw_command(cmd)
            .await
            .map_err(|e| classify(&e, "the update command"))?;
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(SinkError::Retriable {
                what: "the update command",
                message: format!("write concern error: {wce}"),
            });
        }
        let applied = applied_count(&reply);
        let mut failed = Vec::new();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors {
                let Some(e) = e.as_document() else { continue };
                let index = match e.get("index") {
                    Some(Bson::Int32(i)) => *i as usize,
                    Some(Bson::Int64(i)) => *i as usize,
                    _ => continue,
                };
                let code = match e.get("code") {
                    Some(Bson::Int32(c)) => *c,
                    Some(Bson::Int64(c)) => *c as i32,
                    _ => 0,
                };
                let msg = e.get_str("errmsg").unwrap_or("(no message)");
                if transient(code, msg) {
                    return Err(SinkError::Retriable {
                        what: "the update command",
                        message: format!("MongoDB error {code}: {msg}"),
                    });
                }
                failed.push((
                    index,
                    Failure {
                        code,
                        message: format!("MongoDB error {code}: {msg}"),
                    },
                ));
            }
        }
        Ok((applied, failed))
    }
}

/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;

/// A statement the server refused: its code and the message a dead letter carries.
pub(super) struct Failure {
    code: i32,
    message: String,
}

/// The `n` of a command's reply: how many statements it applied (`None`: not said).
fn applied_count(reply: &Document) -> Option<usize> {
    match reply.get("n") {
        Some(Bson::Int32(n)) => Some(*n as usize),
        Some(Bson::Int64(n)) => Some(*n as usize),
        Some(Bson::Double(n)) => Some(*n as usize),
        _ => None,
    }
}
