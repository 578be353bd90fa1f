//! The ledger against its real redb file: appends, reads, concurrency, crashes, a full disk, the write-ahead log, segments, and property tests against a model.
//!
//! One test binary for the crate (each links the whole stack); a module per topic.

mod append;
mod backup;
mod common;
mod concurrency;
mod crash;
mod disk_full;
mod fuzz_regressions;
mod model;
mod properties;
mod read;
mod segments;
mod wal;
