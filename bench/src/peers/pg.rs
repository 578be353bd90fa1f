//! The PostgreSQL peer: its own cluster in a temp dir, and its side of W1–W5.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use super::{
    Amount, Args, Row, STREAMS, ZIPF_S, ZIPF_STREAMS, Zipf, catchup_row, conditional_row,
    data_text, owned_stream, temp_in,
};

/// A PostgreSQL cluster in a temp dir, stopped on drop.
pub(super) struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn as_postgres(bin: &Path, prog: &str) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(prog));
        c
    } else {
        Command::new(bin.join(prog))
    }
}

fn run_checked(mut c: Command) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{c:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Pg {
    pub(super) fn start(args: &Args) -> Result<Pg, String> {
        let dir = temp_in(&args.dir);
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let mut c = as_postgres(&args.pg_bin, "initdb");
        c.args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data);
        run_checked(c)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let opts = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=200 \
             -c shared_buffers=512MB",
            dir.path().display()
        );
        let mut c = as_postgres(&args.pg_bin, "pg_ctl");
        c.arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "-o", &opts, "start"]);
        run_checked(c)?;
        Ok(Pg {
            dir,
            bin: args.pg_bin.clone(),
            port,
        })
    }

    fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub(super) async fn connect(&self) -> Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), NoTls)
            .await
            .expect("connect to postgres");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    pub(super) async fn fresh_table(&self) {
        let c = self.connect().await;
        c.batch_execute(
            "DROP TABLE IF EXISTS events;
             CREATE TABLE events (
                 position bigserial PRIMARY KEY,
                 stream text NOT NULL,
                 revision bigint NOT NULL,
                 type text NOT NULL,
                 data jsonb NOT NULL,
                 UNIQUE (stream, revision));
             CHECKPOINT;",
        )
        .await
        .expect("create table");
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        if let Err(e) = run_checked(c) {
            eprintln!("stopping postgres: {e}");
        }
    }
}

pub(super) const INSERT_ONE: &str =
    "INSERT INTO events (stream, revision, type, data) VALUES ($1, $2, $3, $4::text::jsonb)";
pub(super) const INSERT_MANY: &str = "INSERT INTO events (stream, revision, type, data) \
     SELECT s, r, t, d::jsonb FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[]) AS u(s, r, t, d)";

pub(super) async fn pg_appends(
    pg: &Pg,
    seconds: f64,
    workload: &str,
    writers: usize,
    batch: usize,
) -> Row {
    let (lats, elapsed) = load(pg, seconds, writers, |w, client, stop| async move {
        let one = client.prepare(INSERT_ONE).await.expect("prepare");
        let many = client.prepare(INSERT_MANY).await.expect("prepare");
        let mut revs = vec![0i64; STREAMS];
        let mut lat = Vec::new();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let streams: Vec<usize> = (0..batch)
                .map(|b| owned_stream(w, writers, i * batch + b))
                .collect();
            let t = Instant::now();
            if batch == 1 {
                let s = streams[0];
                revs[s] += 1;
                client
                    .execute(
                        &one,
                        &[
                            &format!("bench/{s}"),
                            &revs[s],
                            &"was_credited",
                            &data_text(s),
                        ],
                    )
                    .await
                    .expect("insert");
            } else {
                let names: Vec<String> = streams.iter().map(|s| format!("bench/{s}")).collect();
                let rs: Vec<i64> = streams
                    .iter()
                    .map(|&s| {
                        revs[s] += 1;
                        revs[s]
                    })
                    .collect();
                let types = vec!["was_credited"; batch];
                let datas: Vec<String> = streams.iter().map(|&s| data_text(s)).collect();
                client
                    .execute(&many, &[&names, &rs, &types, &datas])
                    .await
                    .expect("insert batch");
            }
            lat.push(t.elapsed());
            i += 1;
        }
        lat
    })
    .await;
    let lat: Vec<Duration> = lats.into_iter().flatten().collect();
    let events = lat.len() as u64 * batch as u64;
    Row::from_latencies(
        workload,
        "PostgreSQL 15",
        events,
        elapsed,
        lat,
        String::new(),
    )
}

pub(super) async fn pg_conditional(pg: &Pg, seconds: f64, writers: usize) -> Row {
    let (results, elapsed) = load(pg, seconds, writers, |w, client, stop| async move {
        let read = client
            .prepare("SELECT coalesce(max(revision), 0) FROM events WHERE stream = $1")
            .await
            .expect("prepare");
        let insert = client.prepare(INSERT_ONE).await.expect("prepare");
        let mut zipf = Zipf::new(ZIPF_STREAMS, ZIPF_S, w as u64 + 1);
        let (mut lat, mut ok, mut conflicts) = (Vec::new(), 0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let k = zipf.sample();
            let stream = format!("bench/{k}");
            let t = Instant::now();
            let rev: i64 = client
                .query_one(&read, &[&stream])
                .await
                .expect("read")
                .get(0);
            let r = client
                .execute(
                    &insert,
                    &[&stream, &(rev + 1), &"was_credited", &data_text(k)],
                )
                .await;
            match r {
                Ok(_) => ok += 1,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    conflicts += 1
                }
                Err(e) => panic!("insert: {e}"),
            }
            lat.push(t.elapsed());
        }
        (lat, ok, conflicts)
    })
    .await;
    conditional_row("PostgreSQL 15", results, elapsed)
}

/// Runs `writer(w, client, stop)` for each of `writers` connections on a fresh table until
/// `seconds` have passed (then `stop` is set), and returns what each writer returned and how
/// long they ran.
async fn load<T, F, Fut>(pg: &Pg, seconds: f64, writers: usize, writer: F) -> (Vec<T>, Duration)
where
    F: Fn(usize, Client, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    pg.fresh_table().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..writers {
        clients.push(pg.connect().await);
    }
    let started = Instant::now();
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, client)| tokio::spawn(writer(w, client, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    (results, started.elapsed())
}

/// PostgreSQL's plan for `sql`, one node after the other ("Finalize Aggregate → Gather → …").
async fn plan(c: &Client, sql: &str) -> String {
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    match c
        .query(&format!("EXPLAIN (COSTS OFF) {sql}"), &no_params)
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                r.get::<_, String>(0)
                    .trim()
                    .trim_start_matches("-> ")
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join(" → "),
        Err(e) => format!("(EXPLAIN failed: {e})"),
    }
}

pub(super) async fn pg_catchup(pg: &Pg, events: u64, rows: &mut Vec<Row>) {
    pg.fresh_table().await;
    let c = pg.connect().await;
    let many = c.prepare(INSERT_MANY).await.expect("prepare");
    let t = Instant::now();
    let mut written = 0u64;
    while written < events {
        let n = (events - written).min(1000);
        let streams: Vec<usize> = (0..n)
            .map(|b| ((written + b) % STREAMS as u64) as usize)
            .collect();
        let names: Vec<String> = streams.iter().map(|s| format!("bench/{s}")).collect();
        let revs: Vec<i64> = (0..n)
            .map(|b| ((written + b) / STREAMS as u64 + 1) as i64)
            .collect();
        let types = vec!["was_credited"; n as usize];
        let datas: Vec<String> = streams.iter().map(|&s| data_text(s)).collect();
        c.execute(&many, &[&names, &revs, &types, &datas])
            .await
            .expect("load");
        written += n;
    }
    let load = t.elapsed();
    c.batch_execute("VACUUM ANALYZE events")
        .await
        .expect("vacuum");
    eprintln!(
        "postgres: loaded {events} events in {:.1} s ({:.0} events/s, batches of 1000)",
        load.as_secs_f64(),
        events as f64 / load.as_secs_f64()
    );
    let no_params: [&(dyn ToSql + Sync); 0] = [];

    // SQL aggregates (the server folds; parallel workers as configured by default).
    let mut best = (Duration::MAX, 0i64);
    for _ in 0..3 {
        let t = Instant::now();
        let n: i64 = c
            .query_one("SELECT count(*) FROM events", &no_params)
            .await
            .unwrap()
            .get(0);
        best = best.min((t.elapsed(), n));
    }
    let count_plan = plan(&c, "SELECT count(*) FROM events").await;
    rows.push(catchup_row(
        "W5a catch-up: count 1M",
        "PostgreSQL 15",
        (best.0, best.1 as u64, best.1),
        &format!("SQL `SELECT count(*)`; plan: {count_plan}"),
    ));
    let mut best = (Duration::MAX, 0i64);
    for _ in 0..3 {
        let t = Instant::now();
        let s: i64 = c
            .query_one(
                "SELECT sum((data->>'amount')::bigint)::bigint FROM events",
                &no_params,
            )
            .await
            .unwrap()
            .get(0);
        best = best.min((t.elapsed(), s));
    }
    let sum_plan = plan(
        &c,
        "SELECT sum((data->>'amount')::bigint)::bigint FROM events",
    )
    .await;
    rows.push(catchup_row(
        "W5b catch-up: decode JSON, sum amount",
        "PostgreSQL 15",
        (best.0, events, best.1),
        &format!("SQL `SELECT sum((data->>'amount')::bigint)`; plan: {sum_plan}"),
    ));

    // Every row through the client, folded in Rust.
    let stmt = c
        .prepare(
            "SELECT position, stream, revision, type, data::text FROM events ORDER BY position",
        )
        .await
        .unwrap();
    let client_fold = async |decode: bool| {
        let mut best = (Duration::MAX, 0u64, 0i64);
        for _ in 0..3 {
            let t = Instant::now();
            let stream = c
                .query_raw(&stmt, no_params.iter().copied())
                .await
                .expect("query");
            let mut stream = std::pin::pin!(stream);
            let (mut n, mut sum) = (0u64, 0i64);
            use futures_util::TryStreamExt;
            while let Some(row) = stream.try_next().await.expect("row") {
                n += 1;
                if decode {
                    let data: &str = row.get(4);
                    sum += serde_json::from_str::<Amount>(data).expect("amount").amount;
                } else {
                    let _: i64 = row.get(0);
                }
            }
            let d = t.elapsed();
            if d < best.0 {
                best = (d, n, if decode { sum } else { n as i64 });
            }
        }
        best
    };
    let count = client_fold(false).await;
    let sum = client_fold(true).await;
    rows.push(catchup_row(
        "W5a catch-up: count 1M",
        "PostgreSQL 15, rows to client",
        count,
        "all rows (position, stream, revision, type, data) read through tokio-postgres, counted",
    ));
    rows.push(catchup_row(
        "W5b catch-up: decode JSON, sum amount",
        "PostgreSQL 15, rows to client",
        sum,
        "all rows read through tokio-postgres, data decoded with serde_json, summed",
    ));
}

// ---------------------------------------------------------------- the run
