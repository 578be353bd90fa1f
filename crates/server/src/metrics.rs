//! Server-side counters and the Prometheus text rendering of `/metrics`.
//!
//! The ledger keeps its own counters ([`loom_ledger::LedgerStats`]); the server adds HTTP
//! request counts and the number of open subscriptions. The text exposition format is small
//! enough to write directly, which keeps the ledger's lock-free atomics as the only source.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use loom_ledger::{Ledger, LedgerStats};

/// Counters kept by the server.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Requests by (method, route, status).
    http: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Open `/v1/subscribe` streams.
    pub(crate) subscriptions: AtomicI64,
}

impl Metrics {
    pub(crate) fn record_request(&self, method: &str, route: &str, status: u16) {
        let mut http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        *http
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub(crate) fn render(&self, ledger: &Ledger) -> String {
        let s = ledger.stats();
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        };
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "loom_appends_total",
            "Appends acknowledged (including idempotent retries).",
            load(&s.appends),
        );
        counter(
            &mut out,
            "loom_events_appended_total",
            "Events written to the ledger.",
            load(&s.events),
        );
        counter(
            &mut out,
            "loom_append_conflicts_total",
            "Appends refused by a condition or an identity conflict.",
            load(&s.conflicts),
        );
        counter(
            &mut out,
            "loom_commits_total",
            "Durable group commits.",
            load(&s.commits),
        );
        let _ = writeln!(
            out,
            "# HELP loom_head_position Position of the last committed event."
        );
        let _ = writeln!(out, "# TYPE loom_head_position gauge");
        let _ = writeln!(out, "loom_head_position {}", ledger.head());

        let name = "loom_commit_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Duration of durable group commits.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in LedgerStats::COMMIT_BUCKETS_MICROS.iter().enumerate() {
            cumulative += load(&s.commit_micros[i]);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += load(&s.commit_micros[LedgerStats::COMMIT_BUCKETS_MICROS.len()]);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            load(&s.commit_micros_sum) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {cumulative}");

        let _ = writeln!(out, "# HELP loom_subscriptions Open /v1/subscribe streams.");
        let _ = writeln!(out, "# TYPE loom_subscriptions gauge");
        let _ = writeln!(
            out,
            "loom_subscriptions {}",
            self.subscriptions.load(Ordering::Relaxed)
        );

        let name = "loom_http_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP requests answered, by method, route and status."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route, status), n) in http.iter() {
            let _ = writeln!(
                out,
                "{name}{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape_label(method),
                escape_label(route)
            );
        }
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counts a subscription while it lives.
#[derive(Debug)]
pub(crate) struct SubscriptionGuard(pub(crate) std::sync::Arc<crate::Inner>);

impl SubscriptionGuard {
    pub(crate) fn new(inner: std::sync::Arc<crate::Inner>) -> Self {
        inner.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        SubscriptionGuard(inner)
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }
}
