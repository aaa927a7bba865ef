//! Operations a person runs against a pipeline, not stages of it: move a stage's consumer
//! group (`replay`, with the MySQL offsets table in `replay_mysql`), send dead letters or
//! quarantined records back (`redrive`), show topics, groups and lag (`status`), print or
//! create each stage's rights (`acls`), and draw the quality topic (`quality_report`). They
//! take the whole [`crate::config::Config`]; the stages never import them.
pub mod acls;
pub mod quality_report;
pub mod redrive;
pub mod replay;
pub mod replay_mysql;
pub mod scan;
pub mod status;
pub mod trace;
