//! The pipeline stages. Each is a module with one entry point, `run(settings…, shutdown)`:
//! the shared [`crate::settings::Common`] plus the stage's own config type, which the stage
//! owns (the whole [`crate::config::Config`] is assembled above the stages).
pub mod clean;
pub mod extract;
pub mod score;
pub mod sinks;
mod transactional;
