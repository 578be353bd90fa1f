//! Loom HTTP API (in progress).
