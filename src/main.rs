//! `etl-pipe` binary: parse the command line, set up logging, run, map the result to an exit code.
use std::process::ExitCode;

use clap::Parser;

/// glibc gives every thread that allocates its own arena (up to 8 per core); in a stage
/// with tokio workers, librdkafka threads and a poll thread, freed batches then stay spread
/// over many arenas and RSS grows ~40 % above the live heap (measured with heaptrack on
/// sink-mongo). Two arenas keep RSS close to the heap at no measurable cost in throughput.
/// `MALLOC_ARENA_MAX` in the environment wins.
///
/// glibc also raises its mmap threshold each time a large block is freed (up to 32 MiB), after
/// which a statement's transient buffers (sink-mysql's bound values, sqlx's packet: a few
/// hundred KiB each per connection) come from the arenas and stay there: with MySQL slow on
/// random keys, sink-mysql's peak RSS was 68–69 MiB against 56 MiB with a fixed 256 KiB
/// threshold (bench-sink 1 M, issue #18). Fixed here; `MALLOC_MMAP_THRESHOLD_` wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    // OpenSSL registers an exit handler that frees its tables when it is first initialised;
    // librdkafka's broker threads (TLS, SCRAM) can still be using them while the process exits,
    // e.g. a stage stopping at start-up with an error: SIGSEGV in HMAC, seen in 2 of 12 such
    // exits. This initialises OpenSSL first, with OPENSSL_INIT_NO_ATEXIT (the OS frees it).
    openssl_sys::init();
    let cli = etl_pipe::cli::Cli::parse();
    match etl_pipe::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}
