//! Kafka ACL bindings and creating them with librdkafka's admin API (`CreateAcls`), which
//! rust-rdkafka does not wrap: the one place the pipeline calls librdkafka's C API itself.
use std::ffi::{c_char, CStr, CString};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka_sys as rd;

use crate::settings::KafkaConfig;

/// What an ACL is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Topic,
    Group,
    TransactionalId,
    /// The cluster itself (name `kafka-cluster`).
    Cluster,
}

/// How the resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    Literal,
    /// Every name that starts with it.
    Prefixed,
}

/// The operations the pipeline's stages need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Read,
    Write,
    Describe,
    /// Reading a topic's settings (`max.message.bytes` caps what a producer sends).
    DescribeConfigs,
    IdempotentWrite,
}

/// One ALLOW binding from any host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclBinding {
    /// `User:<name>`.
    pub principal: String,
    pub resource: Resource,
    pub name: String,
    pub pattern: Pattern,
    pub operation: Operation,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Topic => "TOPIC",
            Resource::Group => "GROUP",
            Resource::TransactionalId => "TRANSACTIONAL_ID",
            Resource::Cluster => "CLUSTER",
        }
    }
    fn native(self) -> rd::rd_kafka_ResourceType_t {
        use rd::rd_kafka_ResourceType_t as T;
        match self {
            Resource::Topic => T::RD_KAFKA_RESOURCE_TOPIC,
            Resource::Group => T::RD_KAFKA_RESOURCE_GROUP,
            Resource::TransactionalId => T::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
            // Kafka's ACL resource type 4 is CLUSTER; librdkafka calls the number BROKER.
            Resource::Cluster => T::RD_KAFKA_RESOURCE_BROKER,
        }
    }
}

impl Pattern {
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Literal => "LITERAL",
            Pattern::Prefixed => "PREFIXED",
        }
    }
    fn native(self) -> rd::rd_kafka_ResourcePatternType_t {
        use rd::rd_kafka_ResourcePatternType_t as P;
        match self {
            Pattern::Literal => P::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
            Pattern::Prefixed => P::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
        }
    }
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Describe => "DESCRIBE",
            Operation::DescribeConfigs => "DESCRIBE_CONFIGS",
            Operation::IdempotentWrite => "IDEMPOTENT_WRITE",
        }
    }
    fn native(self) -> rd::rd_kafka_AclOperation_t {
        use rd::rd_kafka_AclOperation_t as O;
        match self {
            Operation::Read => O::RD_KAFKA_ACL_OPERATION_READ,
            Operation::Write => O::RD_KAFKA_ACL_OPERATION_WRITE,
            Operation::Describe => O::RD_KAFKA_ACL_OPERATION_DESCRIBE,
            Operation::DescribeConfigs => O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
            Operation::IdempotentWrite => O::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
        }
    }
}

/// Why ACLs could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("creating the admin client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("ACL {0}")]
    Binding(String),
    #[error("CreateAcls: no answer within {0:?}")]
    Timeout(Duration),
    /// The request failed as a whole (e.g. the principal may not alter ACLs).
    #[error("CreateAcls: {0}")]
    Request(String),
    /// Some bindings were refused (not authorized: the client is not an administrator); the
    /// first with the broker's reason.
    #[error("CreateAcls refused {refused} of {total} bindings; the first: {first}")]
    Refused {
        refused: usize,
        total: usize,
        first: String,
    },
}

/// Owns the C objects of one request, so every path out frees them.
pub(super) struct Request {
    pub(super) topics: *mut rd::rd_kafka_TopicCollection_t,
    pub(super) options: *mut rd::rd_kafka_AdminOptions_t,
    pub(super) queue: *mut rd::rd_kafka_queue_t,
    pub(super) event: *mut rd::rd_kafka_event_t,
    bindings: Vec<*mut rd::rd_kafka_AclBinding_t>,
}

impl Request {
    pub(super) fn new() -> Request {
        Request {
            topics: std::ptr::null_mut(),
            options: std::ptr::null_mut(),
            queue: std::ptr::null_mut(),
            event: std::ptr::null_mut(),
            bindings: Vec::new(),
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        // SAFETY: each pointer is null or was returned by its librdkafka constructor and is
        // destroyed exactly once, here.
        unsafe {
            if !self.event.is_null() {
                rd::rd_kafka_event_destroy(self.event);
            }
            if !self.queue.is_null() {
                rd::rd_kafka_queue_destroy(self.queue);
            }
            if !self.options.is_null() {
                rd::rd_kafka_AdminOptions_destroy(self.options);
            }
            if !self.topics.is_null() {
                rd::rd_kafka_TopicCollection_destroy(self.topics);
            }
            for b in self.bindings.drain(..) {
                rd::rd_kafka_AclBinding_destroy(b);
            }
        }
    }
}

fn c_string(what: &str, s: &str) -> Result<CString, AclError> {
    CString::new(s).map_err(|_| AclError::Binding(format!("{what} `{s}` contains a NUL byte")))
}

/// Creates `acls` (ALLOW, any host) as the principal of `cfg`'s client options; creating one
/// that exists is a no-op for Kafka, so this is idempotent. Blocks up to `timeout`.
pub fn create_acls(
    cfg: &KafkaConfig,
    acls: &[AclBinding],
    timeout: Duration,
) -> Result<(), AclError> {
    if acls.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = super::base_config(cfg).create()?;
    let rk = admin.inner().native_ptr();
    let host = c_string("host", "*")?;
    let mut req = Request::new();
    let mut err = [0 as c_char; 512];
    for a in acls {
        let name = c_string("resource name", &a.name)?;
        let principal = c_string("principal", &a.principal)?;
        // SAFETY: the strings outlive the call (librdkafka copies them); err is a writable
        // buffer of the length given.
        let b = unsafe {
            rd::rd_kafka_AclBinding_new(
                a.resource.native(),
                name.as_ptr(),
                a.pattern.native(),
                principal.as_ptr(),
                host.as_ptr(),
                a.operation.native(),
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if b.is_null() {
            // SAFETY: librdkafka wrote a NUL-terminated message into err.
            let why = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
            return Err(AclError::Binding(format!("{}: {why}", render(a))));
        }
        req.bindings.push(b);
    }
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: rk is the live handle of `admin`, which outlives `req` (declared before it);
    // every pointer handed over was created above and is freed by `req`'s Drop.
    unsafe {
        req.options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS,
        );
        rd::rd_kafka_AdminOptions_set_request_timeout(req.options, ms, err.as_mut_ptr(), err.len());
        req.queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_CreateAcls(
            rk,
            req.bindings.as_mut_ptr(),
            req.bindings.len(),
            req.options,
            req.queue,
        );
        req.event = rd::rd_kafka_queue_poll(req.queue, ms.saturating_add(5000));
        if req.event.is_null() {
            return Err(AclError::Timeout(timeout));
        }
        if rd::rd_kafka_event_error(req.event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            let why = CStr::from_ptr(rd::rd_kafka_event_error_string(req.event));
            return Err(AclError::Request(why.to_string_lossy().into_owned()));
        }
        let result = rd::rd_kafka_event_CreateAcls_result(req.event);
        if result.is_null() {
            return Err(AclError::Request(
                "no CreateAcls result in the answer".into(),
            ));
        }
        let mut n = 0usize;
        let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut n);
        let mut refused = Vec::new();
        for (i, a) in acls.iter().enumerate().take(n) {
            let e = rd::rd_kafka_acl_result_error(*results.add(i));
            if !e.is_null() {
                let why = CStr::from_ptr(rd::rd_kafka_error_string(e)).to_string_lossy();
                // The broker's text repeats the whole request (hundreds of characters) before
                // "is not authorized".
                let code = rd::rd_kafka_error_code(e);
                let why: String = if code
                    == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED
                    || why.contains("not authorized")
                {
                    "not authorized: run it as a Kafka administrator (ALTER on the cluster)".into()
                } else {
                    why.chars().take(200).collect()
                };
                refused.push(format!(
                    "{} ({})",
                    render(a).split_whitespace().collect::<Vec<_>>().join(" "),
                    why
                ));
            }
        }
        if let Some(first) = refused.first() {
            return Err(AclError::Refused {
                refused: refused.len(),
                total: acls.len(),
                first: first.clone(),
            });
        }
    }
    // `req` is dropped before `admin` (reverse declaration order), on every path.
    Ok(())
}

/// One line: principal, operation, resource type, pattern and name.
pub fn render(a: &AclBinding) -> String {
    format!(
        "ALLOW {:<16} {:<17} {:<16} {:<8} {}",
        a.principal,
        a.operation.as_str(),
        a.resource.as_str(),
        a.pattern.as_str(),
        a.name
    )
}
