//! The start-up access check: before a stage reads or writes, it asks the cluster which
//! operations its principal may perform on its topics (DescribeTopics with authorized
//! operations, KIP-430) and stops at once, naming the topic and the operation, when one is
//! missing. Without it a stage run with the wrong credentials would fail later with a message
//! about a transactional id or a group, or retry in a loop.
//!
//! [`probe`] does the same for the connection itself: a client the broker refuses (a CA it does
//! not trust, no or wrong SASL credentials, the wrong `security.protocol`) gets librdkafka's
//! reason and what to change, where the admin API only says "Broker transport failure".
use std::ffi::{CStr, CString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka_sys as rd;

use super::acls::Request;
use crate::settings::KafkaConfig;

/// What a stage must be allowed to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Read => "READ",
            Access::Write => "WRITE",
        }
    }
}

/// Why a stage may not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    NotAuthorized(#[from] NotAuthorized),
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// The principal may not do something the stage needs: a person must grant it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{stage}: not authorized to {} topic {topic} as {principal} (Kafka ACL: ALLOW {principal} {} \
     on TOPIC {topic}); `etl-pipe acls` prints what each stage needs",
    operation.as_str(),
    operation.as_str()
)]
pub struct NotAuthorized {
    pub stage: &'static str,
    pub topic: String,
    pub operation: Access,
    pub principal: String,
}

/// The broker refused this client: a setting to fix, not an outage to wait out.
#[derive(Debug, thiserror::Error)]
#[error("Kafka at {brokers} refused the connection: {reason} ({hint})")]
pub struct Refused {
    pub brokers: String,
    pub reason: String,
    pub hint: &'static str,
}

/// Keeps the errors librdkafka reported (the first ones name the cause; later ones say
/// "brokers are down").
#[derive(Default)]
struct LastError(Mutex<Vec<String>>);

impl LastError {
    fn keep(&self, reason: &str) {
        if let Ok(mut seen) = self.0.lock() {
            if seen.len() < 50 {
                seen.push(reason.to_string());
            }
        }
    }
}

impl ClientContext for LastError {
    // Connection failures arrive as `FAIL` log lines from librdkafka's broker threads (error
    // events wait on a queue nobody polls during a blocking metadata request).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if fac == "FAIL" || matches!(level, L::Emerg | L::Alert | L::Critical | L::Error) {
            self.keep(message);
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka error");
        self.keep(reason);
    }
}

impl ProducerContext for LastError {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// What to change for each refusal librdkafka can name.
fn hint(reason: &str) -> Option<&'static str> {
    let r = reason.to_ascii_lowercase();
    if r.contains("certificate verify failed") || r.contains("could not be verified") {
        Some("the broker's certificate is not trusted: set kafka.client_options.ssl.ca.location to the PEM file of the CA that signed it")
    } else if r.contains("sasl authentication") || r.contains("authentication failed") {
        Some("wrong SASL user or password: check kafka.client_options.sasl.username, sasl.password and sasl.mechanism")
    } else if r.contains("ssl handshake failed") {
        Some("TLS failed: check kafka.client_options.security.protocol and the ssl.* options")
    } else if hung_up_right_after_connecting(&r) {
        // TLS worked and the broker hung up at the first request: it wants SASL first.
        Some("the broker closed the connection right after TLS: it expects SASL authentication; set kafka.client_options.security.protocol=SASL_SSL with sasl.mechanism, sasl.username and sasl.password")
    } else if r.contains("incorrect security.protocol") {
        Some("the listener expects another security.protocol (SASL_SSL, SSL, SASL_PLAINTEXT?) and credentials: set kafka.client_options.security.protocol, sasl.mechanism, sasl.username and sasl.password")
    } else {
        None
    }
}

/// "…: Disconnected: SSL connection closed by peer (after 0ms in state UP)": the broker closed
/// a connection that had just come up. librdkafka's own rule for "broker might require SASL
/// authentication" is state UP for less than 2 s; this allows [`REFUSAL_WINDOW`], the probe's
/// own timeout: on a loaded machine the broker answers the first request late (a test
/// matching "after 0ms" failed in CI, and a CI run with four TLS tests at once found no
/// refusal at all), while a broker closing an idle connection waits `connections.max.idle.ms`
/// (10 min by default).
fn hung_up_right_after_connecting(lowercase: &str) -> bool {
    let Some(at) = ["closed by peer (after ", "reset by peer (after "]
        .iter()
        .find_map(|p| lowercase.find(p).map(|i| i + p.len()))
    else {
        return false;
    };
    let rest = &lowercase[at..];
    let Some((ms, state)) = rest.split_once("ms in state ") else {
        return false;
    };
    ms.parse::<u64>()
        .is_ok_and(|ms| ms < REFUSAL_WINDOW.as_millis() as u64)
        && state.starts_with("up")
}

/// How long after coming up a connection the broker closes counts as refused (see
/// [`hung_up_right_after_connecting`]).
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// Connects once (a metadata request). Fails only when the broker refused the client for a
/// reason a setting fixes; an unreachable broker passes (the caller retries as it always does).
pub fn probe(cfg: &KafkaConfig, timeout: Duration) -> Result<(), Refused> {
    let mut c = super::base_config(cfg);
    // librdkafka's log level otherwise follows the `log` crate's (off here); FAIL lines are
    // level 3.
    c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    // A producer, because polling it serves the main queue, where rust-rdkafka puts
    // librdkafka's log lines and errors (nothing is produced).
    let Ok(client) = c.create_with_context::<_, BaseProducer<LastError>>(LastError::default())
    else {
        return Ok(());
    };
    if client.client().fetch_metadata(None, timeout).is_ok() {
        return Ok(());
    }
    // The reason may still be on its way to the queue (a broker thread logs it as the
    // connection fails, which on a loaded machine can be after the request gave up).
    let drained = Instant::now() + DRAIN;
    loop {
        client.poll(Duration::from_millis(100));
        let seen = client
            .context()
            .0
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        if let Some((reason, hint)) = seen.iter().find_map(|r| hint(r).map(|h| (r, h))) {
            return Err(Refused {
                brokers: cfg.brokers.clone(),
                reason: reason.clone(),
                hint,
            });
        }
        if Instant::now() >= drained {
            // Not a refusal a setting fixes (or none named): the caller retries or reports its
            // own error; what librdkafka said is kept here for whoever reads the log.
            if !seen.is_empty() {
                tracing::warn!(
                    brokers = %cfg.brokers,
                    said = %seen.join(" | "),
                    "Kafka did not answer the connection check; librdkafka's words"
                );
            }
            return Ok(());
        }
    }
}

/// How long [`probe`] waits for librdkafka's reason after its request failed.
const DRAIN: Duration = Duration::from_secs(2);

/// Per topic: `None` when the cluster did not say (no authorizer, an older broker, the topic
/// missing, the broker unreachable: the stage's own start-up reports those), else whether the
/// principal may describe it and which operations it may perform.
type Allowed = Option<Vec<rd::rd_kafka_AclOperation_t>>;

/// Checks that `cfg`'s principal may read `reads` and write `writes`. Only a definite "no"
/// from the cluster fails; anything it cannot learn within `timeout` passes.
pub fn check(
    cfg: &KafkaConfig,
    stage: &'static str,
    reads: &[String],
    writes: &[String],
    timeout: Duration,
) -> Result<(), AccessError> {
    probe(cfg, timeout.min(Duration::from_secs(10)))?;
    let wanted: Vec<(&String, Access)> = reads
        .iter()
        .map(|t| (t, Access::Read))
        .chain(writes.iter().map(|t| (t, Access::Write)))
        .collect();
    let mut topics: Vec<String> = wanted.iter().map(|(t, _)| (*t).clone()).collect();
    topics.sort();
    topics.dedup();
    let allowed = match describe(cfg, &topics, timeout) {
        Some(a) => a,
        None => return Ok(()),
    };
    let principal = cfg
        .client_options
        .get("sasl.username")
        .and_then(|v| v.value())
        .map_or_else(|| "this client".to_string(), |u| format!("User:{u}"));
    for (topic, access) in wanted {
        let Some(Some(ops)) = allowed.iter().find(|(t, _)| t == topic).map(|(_, a)| a) else {
            continue;
        };
        use rd::rd_kafka_AclOperation_t as O;
        let needed = match access {
            Access::Read => O::RD_KAFKA_ACL_OPERATION_READ,
            Access::Write => O::RD_KAFKA_ACL_OPERATION_WRITE,
        };
        if !ops
            .iter()
            .any(|o| *o == needed || *o == O::RD_KAFKA_ACL_OPERATION_ALL)
        {
            return Err(NotAuthorized {
                stage,
                topic: topic.clone(),
                operation: access,
                principal,
            }
            .into());
        }
    }
    Ok(())
}

/// DescribeTopics with authorized operations. `None` when the request as a whole failed.
/// A topic the principal may not even describe gets an empty list.
fn describe(
    cfg: &KafkaConfig,
    topics: &[String],
    timeout: Duration,
) -> Option<Vec<(String, Allowed)>> {
    let admin: AdminClient<DefaultClientContext> = super::base_config(cfg).create().ok()?;
    let rk = admin.inner().native_ptr();
    let names: Vec<CString> = topics
        .iter()
        .map(|t| CString::new(t.as_str()).ok())
        .collect::<Option<_>>()?;
    let mut ptrs: Vec<*const std::ffi::c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut req = Request::new();
    let mut out = Vec::new();
    // SAFETY: rk is the live handle of `admin`, which outlives `req` (declared before it); the
    // names outlive the call that copies them; every object created is freed by `req`'s Drop;
    // the result objects belong to the event and are read before it is destroyed.
    unsafe {
        req.topics = rd::rd_kafka_TopicCollection_of_topic_names(ptrs.as_mut_ptr(), ptrs.len());
        req.options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let mut err = [0 as std::ffi::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(req.options, ms, err.as_mut_ptr(), err.len());
        let e = rd::rd_kafka_AdminOptions_set_include_authorized_operations(req.options, 1);
        if !e.is_null() {
            rd::rd_kafka_error_destroy(e);
            return None;
        }
        req.queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_DescribeTopics(rk, req.topics, req.options, req.queue);
        req.event = rd::rd_kafka_queue_poll(req.queue, ms.saturating_add(2000));
        if req.event.is_null()
            || rd::rd_kafka_event_error(req.event)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return None;
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(req.event);
        if result.is_null() {
            return None;
        }
        let mut n = 0usize;
        let descs = rd::rd_kafka_DescribeTopics_result_topics(result, &mut n);
        for i in 0..n {
            let d = *descs.add(i);
            let name = CStr::from_ptr(rd::rd_kafka_TopicDescription_name(d))
                .to_string_lossy()
                .into_owned();
            let e = rd::rd_kafka_TopicDescription_error(d);
            let allowed = if e.is_null() {
                let mut cnt = 0usize;
                let ops = rd::rd_kafka_TopicDescription_authorized_operations(d, &mut cnt);
                (!ops.is_null() && cnt > 0).then(|| std::slice::from_raw_parts(ops, cnt).to_vec())
            } else if rd::rd_kafka_error_code(e)
                == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED
            {
                Some(Vec::new())
            } else {
                None
            };
            out.push((name, allowed));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::hint;

    #[test]
    fn a_broker_wanting_sasl_is_named_however_long_the_hang_up_took() {
        // As librdkafka 2.12 words it; CI once saw more than the 0 ms a test expected.
        for (ms, how) in [
            (0, "SSL connection closed"),
            (1, "SSL connection closed"),
            (37, "connection reset"),
            (1999, "connection closed"),
            (4321, "SSL connection closed"),
            (9999, "connection closed"),
        ] {
            let line = format!(
                "ssl://127.0.0.1:9192/bootstrap: Disconnected: {how} by peer (after {ms}ms in \
                 state UP, 2 identical error(s) suppressed)"
            );
            assert!(
                hint(&line).is_some_and(|h| h.contains("expects SASL authentication")),
                "{line}"
            );
        }
        // A connection that was up for minutes and closed is an outage, not a refusal; so is
        // one refused before TLS.
        for line in [
            "ssl://b:9192/1: Disconnected: SSL connection closed by peer (after 93012ms in state UP)",
            "ssl://b:9192/1: Disconnected: SSL connection closed by peer (after 10000ms in state UP)",
            "ssl://b:9192/1: Disconnected: connection closed by peer (after 5ms in state CONNECT)",
            "Connect to ipv4#127.0.0.1:9192 failed: Connection refused (after 0ms in state CONNECT)",
        ] {
            assert!(hint(line).is_none(), "{line}");
        }
    }
}
