//! CPU time the local stack's services (Kafka, MariaDB, FerretDB, the schema registry) used
//! during a run, from their pid files (`$ETL_STACK_HOME/run/<name>.pid`) and `/proc`. On a
//! small machine a stage's rate depends on the server it writes to sharing the same cores:
//! sink-mysql's upserts cost MariaDB more CPU per row than the sink itself.
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The services measured: (label, pid file name).
const SERVICES: [(&str, &str); 4] = [
    ("kafka", "kafka"),
    ("mariadb", "mariadbd"),
    ("ferretdb", "ferretdb"),
    ("registry", "registry"),
];

/// CPU seconds so far of each service that is running (absent: no pid file, or not running).
pub fn cpu_now() -> BTreeMap<&'static str, f64> {
    let run = stack_home().join("run");
    SERVICES
        .iter()
        .filter_map(|(label, file)| {
            let pid = std::fs::read_to_string(run.join(format!("{file}.pid"))).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
            Some((*label, cpu_seconds(&stat)?))
        })
        .collect()
}

/// CPU seconds each service used since `before` (services running at both reads).
pub fn cpu_since(before: &BTreeMap<&'static str, f64>) -> BTreeMap<String, f64> {
    cpu_now()
        .into_iter()
        .filter_map(|(k, now)| before.get(k).map(|b| (k.to_string(), (now - b).max(0.0))))
        .collect()
}

/// User + system CPU seconds from a `/proc/<pid>/stat` line.
pub(super) fn cpu_seconds(stat: &str) -> Option<f64> {
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
}

/// The local stack's home: `$ETL_STACK_HOME`, else `~/.local/share/etl-pipe-stack`.
pub(super) fn stack_home() -> PathBuf {
    std::env::var_os("ETL_STACK_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/etl-pipe-stack"))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_seconds_are_user_plus_system_ticks() {
        // Fields after the command: state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let stat = "27042 (mariadbd) S 1 27041 27041 0 -1 4194560 100 0 0 0 1234 566 0 0 20 0";
        assert_eq!(super::cpu_seconds(stat), Some(18.0));
        assert_eq!(super::cpu_seconds("garbage"), None);
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(super::cpu_seconds(&stat).is_some());
    }
}
