//! W3C trace context (`traceparent: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`).
//! Extract starts a trace per record; every later stage keeps the trace id and writes it
//! into logs, dead letters and database rows, so one id finds a record's whole path.

/// A fresh `traceparent` with random trace and span ids, sampled.
pub fn new_traceparent() -> String {
    let trace: u128 = rand::random::<u128>() | 1;
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

/// The 32-hex trace id of a valid `traceparent`, else `None`.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let parts: Vec<&str> = traceparent.split('-').collect();
    if parts.len() != 4
        || parts[0].len() != 2
        || parts[1].len() != 32
        || parts[2].len() != 16
        || parts[3].len() != 2
    {
        return None;
    }
    if !parts
        .iter()
        .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
        || parts[1].chars().all(|c| c == '0')
    {
        return None;
    }
    Some(parts[1])
}

/// A child `traceparent`: same trace id, new span id (for the next hop).
pub fn child_of(traceparent: &str) -> Option<String> {
    let id = trace_id(traceparent)?;
    let span: u64 = rand::random::<u64>() | 1;
    Some(format!("00-{id}-{span:016x}-01"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_traceparents_parse_and_children_keep_the_trace() {
        let tp = new_traceparent();
        let id = trace_id(&tp).unwrap().to_string();
        let child = child_of(&tp).unwrap();
        assert_eq!(trace_id(&child), Some(id.as_str()));
        assert_ne!(child, tp);
        assert_eq!(trace_id("garbage"), None);
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-0000000000000001-01"),
            None
        );
    }
}
