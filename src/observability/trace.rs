//! W3C trace context (`traceparent: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`).
//! Extract starts a trace per record; every later stage keeps the trace id and writes it
//! into logs, dead letters and database rows, so one id finds a record's whole path.

/// A fresh `traceparent` with random trace and span ids, sampled.
pub fn new_traceparent() -> String {
    let trace: u128 = rand::random::<u128>() | 1;
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

/// Which bytes are ASCII hex digits.
static HEX_DIGIT: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).is_ascii_hexdigit();
        i += 1;
    }
    t
};

/// The 32-hex trace id of a valid `traceparent`, else `None`.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    // `00-<32 hex>-<16 hex>-<2 hex>`: 55 bytes, dashes at 2, 35 and 52, hex digits elsewhere
    // (checked on the bytes: this runs once per record in every stage).
    let b = traceparent.as_bytes();
    let hex = |r: &[u8]| r.iter().all(|c| HEX_DIGIT[usize::from(*c)]);
    let well_formed = b.len() == 55
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(&b[..2])
        && hex(&b[3..35])
        && hex(&b[36..52])
        && hex(&b[53..]);
    if !well_formed {
        return None; // also before slicing: every byte is ASCII from here on
    }
    let id = &traceparent[3..35];
    id.bytes().any(|c| c != b'0').then_some(id)
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

    /// The rule as first written (split on dashes, check each part), kept as the reference.
    fn by_parts(traceparent: &str) -> Option<&str> {
        let parts: Vec<&str> = traceparent.split('-').collect();
        let lens_ok = parts.len() == 4
            && parts[0].len() == 2
            && parts[1].len() == 32
            && parts[2].len() == 16
            && parts[3].len() == 2;
        let hex = |p: &&str| p.chars().all(|c| c.is_ascii_hexdigit());
        (lens_ok && parts.iter().all(hex) && !parts[1].chars().all(|c| c == '0')).then(|| parts[1])
    }

    #[test]
    fn byte_check_agrees_with_the_split_rule_on_mutated_traceparents() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = ['-', '0', 'f', 'F', 'g', 'é', ' ', 'a', '9', 'Z'];
        let mut valid = 0;
        for _ in 0..50_000 {
            let mut chars: Vec<char> = new_traceparent().chars().collect();
            for _ in 0..rng.gen_range(0..3) {
                let at = rng.gen_range(0..chars.len());
                let c = alphabet[rng.gen_range(0..alphabet.len())];
                match rng.gen_range(0..3) {
                    0 => chars[at] = c,
                    1 => chars.insert(at, c),
                    _ => {
                        chars.remove(at);
                    }
                }
            }
            let tp: String = chars.into_iter().collect();
            assert_eq!(trace_id(&tp), by_parts(&tp), "{tp:?}");
            valid += usize::from(trace_id(&tp).is_some());
        }
        assert!(
            valid > 1_000 && valid < 49_000,
            "{valid} valid: the mutations test both sides"
        );
    }
}
