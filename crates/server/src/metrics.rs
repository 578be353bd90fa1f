//! Server-side counters and the Prometheus text rendering of `/metrics`.
//!
//! The ledger keeps its own counters ([`loom_ledger::LedgerStats`]); the server adds HTTP
//! request counts and the number of open subscriptions. The text exposition format is small
//! enough to write directly, which keeps the ledger's lock-free atomics as the only source.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use loom_engine::{ProjectionStatus, Status};
use loom_ledger::{Ledger, LedgerStats};

/// Upper bounds (µs) of the state-query latency histogram buckets.
const QUERY_BUCKETS_MICROS: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000, 10_000_000,
];

/// Request counts of one route: method → status → count.
type ByMethod = HashMap<String, HashMap<u16, u64>>;

/// Counters kept by the server.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Requests by route, method and status. Nested maps so that counting a request looks
    /// its keys up by reference and allocates nothing once a combination was seen.
    http: Mutex<HashMap<String, ByMethod>>,
    /// Open `/v1/subscribe` streams.
    pub(crate) subscriptions: AtomicI64,
    /// Module uploads that stored new bytes / that found them stored.
    uploads_new: AtomicU64,
    uploads_known: AtomicU64,
    /// Projection state answers by latency bucket (the last is +Inf), and their sum.
    state_queries: [AtomicU64; QUERY_BUCKETS_MICROS.len() + 1],
    state_query_micros_sum: AtomicU64,
    /// Commands by outcome: ok, duplicate, rejected, contention, error.
    commands: [AtomicU64; COMMAND_OUTCOMES.len()],
    /// Connections closed at once because `max_connections` were open.
    refused_connections: AtomicU64,
}

/// Outcomes of `POST /v1/commands/…`, the label values of `loom_commands_total`.
const COMMAND_OUTCOMES: [&str; 5] = ["ok", "duplicate", "rejected", "contention", "error"];

impl Metrics {
    pub(crate) fn record_refused_connection(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_request(&self, method: &str, route: &str, status: u16) {
        let mut http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        let by_method = match http.get_mut(route) {
            Some(m) => m,
            None => http.entry(route.to_owned()).or_default(),
        };
        let by_status = match by_method.get_mut(method) {
            Some(s) => s,
            None => by_method.entry(method.to_owned()).or_default(),
        };
        *by_status.entry(status).or_default() += 1;
    }

    pub(crate) fn record_upload(&self, created: bool) {
        let c = if created {
            &self.uploads_new
        } else {
            &self.uploads_known
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one command by outcome (one of [`COMMAND_OUTCOMES`]; others count as error).
    pub(crate) fn record_command(&self, outcome: &str) {
        let i = COMMAND_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(COMMAND_OUTCOMES.len() - 1);
        self.commands[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_state_query(&self, took: Duration) {
        let micros = took.as_micros().min(u64::MAX as u128) as u64;
        let i = QUERY_BUCKETS_MICROS
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(QUERY_BUCKETS_MICROS.len());
        self.state_queries[i].fetch_add(1, Ordering::Relaxed);
        self.state_query_micros_sum
            .fetch_add(micros, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    // Long by design: one block per metric family, in exposition order: the list is the format.
    pub(crate) fn render(&self, ledger: &Ledger, projections: &[ProjectionStatus]) -> String {
        let s = ledger.stats();
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        };
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "loom_appends_total",
            "Appends acknowledged (including idempotent retries).",
            &load(&s.appends),
        );
        counter(
            &mut out,
            "loom_events_appended_total",
            "Events written to the ledger.",
            &load(&s.events),
        );
        counter(
            &mut out,
            "loom_append_conflicts_total",
            "Appends refused by a condition or an identity conflict.",
            &load(&s.conflicts),
        );
        counter(
            &mut out,
            "loom_commits_total",
            "Durable group commits (in the write-ahead log, or in the database file without one).",
            &load(&s.commits),
        );
        counter(
            &mut out,
            "loom_wal_checkpoints_total",
            "Write-ahead log checkpoints: durable commits of the database file holding every group before them, after which the log moved on to its other file.",
            &load(&s.checkpoints),
        );
        counter(
            &mut out,
            "loom_wal_checkpoint_seconds_total",
            "Time the ledger's writer spent in checkpoints (the groups queued behind one wait that long; the checkpoint's sync runs beside them).",
            &(load(&s.checkpoint_micros_sum) as f64 / 1e6),
        );
        counter(
            &mut out,
            "loom_wal_disk_awake_reads_total",
            "Reads of one block made to keep the log's disk awake between syncs that come close together (loom serve --keep-disk-awake).",
            &load(&s.disk_awake_reads),
        );
        counter(
            &mut out,
            "loom_append_queue_full_waits_total",
            "Times an append found the writer's queue full and waited for room (back-pressure).",
            &load(&s.queue_full_waits),
        );
        counter(
            &mut out,
            "loom_groups_behind_total",
            "Commit groups planned while the group before them was being synced, their log record written right behind its record.",
            &load(&s.groups_behind),
        );
        counter(
            &mut out,
            "loom_groups_sharing_a_commit_total",
            "Commit groups answered once their log record was synced, their transaction left open to be committed together with the groups after it.",
            &load(&s.groups_sharing_a_commit),
        );
        counter(
            &mut out,
            "loom_shared_commits_total",
            "Commits of transactions left open for the groups after their answers; each serves one or more of the groups in loom_groups_sharing_a_commit_total.",
            &load(&s.shared_commits),
        );
        let _ = writeln!(
            out,
            "# HELP loom_commands_total Commands run through deciders, by outcome."
        );
        let _ = writeln!(out, "# TYPE loom_commands_total counter");
        for (i, outcome) in COMMAND_OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "loom_commands_total{{outcome=\"{outcome}\"}} {}",
                load(&self.commands[i])
            );
        }
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

        let _ = writeln!(
            out,
            "# HELP loom_connections_refused_total Connections closed at once because the server \
             had max_connections open."
        );
        let _ = writeln!(out, "# TYPE loom_connections_refused_total counter");
        let _ = writeln!(
            out,
            "loom_connections_refused_total {}",
            self.refused_connections.load(Ordering::Relaxed)
        );

        let name = "loom_module_uploads_total";
        let _ = writeln!(
            out,
            "# HELP {name} Module uploads, by whether they stored new bytes."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(
            out,
            "{name}{{result=\"created\"}} {}",
            load(&self.uploads_new)
        );
        let _ = writeln!(
            out,
            "{name}{{result=\"existing\"}} {}",
            load(&self.uploads_known)
        );

        render_projections(&mut out, projections);

        let name = "loom_projection_state_query_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer projection state reads (min_position waits included)."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in QUERY_BUCKETS_MICROS.iter().enumerate() {
            cumulative += load(&self.state_queries[i]);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += load(&self.state_queries[QUERY_BUCKETS_MICROS.len()]);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            load(&self.state_query_micros_sum) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {cumulative}");

        let name = "loom_http_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP requests answered, by method, route and status."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let http: BTreeMap<(String, String, u16), u64> = {
            let http = self.http.lock().unwrap_or_else(|p| p.into_inner());
            let mut sorted = BTreeMap::new();
            for (route, by_method) in http.iter() {
                for (method, by_status) in by_method {
                    for (status, n) in by_status {
                        sorted.insert((method.clone(), route.clone(), *status), *n);
                    }
                }
            }
            sorted
        };
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

/// Per-projection gauges of the serving generation.
/// Cluster mode: leadership and how far this node has applied the cluster's log.
pub(crate) fn render_cluster(out: &mut String, sequencer: bool, progress: crate::Progress) {
    for (name, kind, help, value) in [
        (
            "loom_cluster_sequencer",
            "gauge",
            "1 while this node is the cluster's sequencer.",
            u64::from(sequencer),
        ),
        (
            "loom_cluster_terms_total",
            "counter",
            "Times this node became the sequencer since it started.",
            progress.terms,
        ),
        (
            "loom_cluster_applied_sequence",
            "gauge",
            "Log sequence of the last message of the cluster's log applied here.",
            progress.applied,
        ),
        (
            "loom_cluster_log_last_sequence",
            "gauge",
            "Last sequence of the cluster's log, as last seen.",
            progress.log_last,
        ),
        (
            "loom_cluster_behind_messages",
            "gauge",
            "Messages of the cluster's log not applied here yet (replication lag).",
            progress.behind(),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
}

fn render_projections(out: &mut String, projections: &[ProjectionStatus]) {
    type Field = fn(&ProjectionStatus) -> u64;
    let gauges: [(&str, &str, Field); 5] = [
        (
            "loom_projection_position",
            "Every selected event up to this position is folded.",
            |p| p.active.position,
        ),
        (
            "loom_projection_lag",
            "Events between the projection's position and the head.",
            |p| p.active.lag,
        ),
        (
            "loom_projection_events_applied",
            "Events folded by the serving generation.",
            |p| p.active.events_applied,
        ),
        ("loom_projection_keys", "Partition keys with state.", |p| {
            p.active.keys
        }),
        (
            "loom_projection_generation",
            "Generation serving queries (grows with upgrades and rebuilds).",
            |p| p.active.generation,
        ),
    ];
    for (name, help, field) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for p in projections {
            let _ = writeln!(
                out,
                "{name}{{projection=\"{}\"}} {}",
                escape_label(&p.name),
                field(p)
            );
        }
    }
    let name = "loom_projection_status";
    let _ = writeln!(
        out,
        "# HELP {name} 1 for the serving generation's status, 0 for the others."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for p in projections {
        for (status, label) in [
            (Status::Running, "running"),
            (Status::CatchingUp, "catching_up"),
            (Status::Paused, "paused"),
            (Status::Failed, "failed"),
        ] {
            let _ = writeln!(
                out,
                "{name}{{projection=\"{}\",status=\"{label}\"}} {}",
                escape_label(&p.name),
                u8::from(p.active.status == status)
            );
        }
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

/// The `method` label of a request: the standard methods by name, anything else `other`, so
/// that invented methods cannot add series.
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
