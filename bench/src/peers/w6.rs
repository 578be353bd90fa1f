//! W6, over the network: projection state reads at 64 connections and commands at 32
//! clients.
//!
//! * **Loom**: the release `loom serve` over HTTP on loopback, loaded by `wrk` through the
//!   scripts the HTTP benchmarks use (`tests/interop/bench_state_query.sh` with the `cart`
//!   projection over 1 000 carts; `tests/interop/bench_commands.sh` with the `bank` decider
//!   over 1 024 accounts). Their output is parsed here.
//! * **PostgreSQL**: what one would build instead. State reads: a `states` table (`key text
//!   primary key, state jsonb`) holding 1 000 cart states of the same size, read by primary
//!   key from 64 connections. Commands: each a transaction that reads the account's events,
//!   folds the balance, and inserts the next revision (`unique (stream, revision)`; a
//!   violation retries), from 32 connections over 1 024 accounts, durable like Loom's.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::Statement;

use super::{INSERT_ONE, Pg, Row};

/// What wrk printed: requests/s and latency percentiles.
#[derive(Debug, Default)]
struct Wrk {
    rps: f64,
    p50: Option<Duration>,
    p99: Option<Duration>,
    non_2xx: u64,
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let v: f64 = number.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// The first wrk summary in `out` after the line containing `after`.
fn parse_wrk(out: &str, after: &str) -> Option<Wrk> {
    let start = out.find(after)?;
    let mut w = Wrk::default();
    let mut seen_rps = false;
    for line in out[start..].lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => w.p50 = parse_duration(v),
            ["99%", v] => w.p99 = parse_duration(v),
            ["Requests/sec:", v] => {
                w.rps = v.parse().ok()?;
                seen_rps = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => w.non_2xx = n.parse().ok()?,
            _ => {}
        }
        if seen_rps {
            break;
        }
    }
    seen_rps.then_some(w)
}

fn run_script(script: &str, env: &[(&str, String)]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (k, v.as_str())))
        .output()
        .map_err(|e| format!("{script}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{script} failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(text)
}

const STATE_WORKLOAD: &str = "W6a HTTP state query, 64 connections";
const COMMAND_WORKLOAD: &str = "W6b commands, 32 clients, 1024 accounts";

fn wrk_row(workload: &str, system: &str, w: &Wrk, note: String) -> Row {
    Row {
        workload: workload.into(),
        system: system.into(),
        eps: w.rps,
        p50: w.p50,
        p99: w.p99,
        note,
    }
}

/// Loom's W6 rows, from the HTTP benchmark scripts (release `loom serve` + wrk).
pub(super) fn loom(seconds: f64, rows: &mut Vec<Row>) {
    let duration = format!("{}s", seconds.ceil().max(1.0) as u64);
    match run_script(
        "tests/interop/bench_state_query.sh",
        &[("DURATION", duration.clone()), ("PIN", "1".into())],
    )
    .and_then(|out| parse_wrk(&out, "wrk -t").ok_or_else(|| format!("no wrk summary in:\n{out}")))
    {
        Ok(w) => rows.push(wrk_row(
            STATE_WORKLOAD,
            "Loom (HTTP, `loom serve`)",
            &w,
            format!(
                "requests/s; `GET /v1/projections/carts/state/cart/{{k}}`, 1000 carts folded by the wasm `cart` module; server pinned to CPU 0, wrk -t1 -c64 on CPU 1; {} non-2xx",
                w.non_2xx
            ),
        )),
        Err(e) => eprintln!("W6a Loom left out: {e}"),
    }
    match run_script(
        "tests/interop/bench_commands.sh",
        &[("DURATION", duration), ("CONNECTIONS", "32".into())],
    )
    .and_then(|out| {
        parse_wrk(&out, "== distinct keys").ok_or_else(|| format!("no wrk summary in:\n{out}"))
    }) {
        Ok(w) => rows.push(wrk_row(
            COMMAND_WORKLOAD,
            "Loom (HTTP, `loom serve`)",
            &w,
            format!(
                "commands/s; `POST /v1/commands/account/{{k}}` deposits through the wasm `bank` decider (fold cached state + tail, decide, durable append); wrk -t2 -c32 on the same 2 cores; {} non-2xx; the script checks every acknowledged deposit is in the ledger",
                w.non_2xx
            ),
        )),
        Err(e) => eprintln!("W6b Loom left out: {e}"),
    }
}

/// A cart state like the ones the `cart` projection serves (~480 bytes of JSON).
fn cart_state(k: usize) -> String {
    let items: Vec<serde_json::Value> = (0..4)
        .map(|i| {
            serde_json::json!({
                "sku": format!("sku-{i}"), "name": format!("Item sku-{i}"),
                "price": 100 + i + k % 7, "quantity": 2 + i,
            })
        })
        .collect();
    serde_json::json!({
        "items": items, "status": "active",
        "position": 10_000 + k, "events_applied": 10,
        "created_at": "2026-11-23T20:00:00.000000Z", "updated_at": "2026-11-23T20:00:01.000000Z",
    })
    .to_string()
}

/// A connection and its prepared statements.
type Conn = Arc<(tokio_postgres::Client, Vec<Statement>)>;

/// `clients` connections, each preparing `statements` once and then running `work(conn, i)`
/// (which returns its retries) until `seconds` are over: latencies, operations, retries,
/// elapsed time.
async fn run_clients<F, Fut>(
    pg: &Pg,
    clients: usize,
    seconds: f64,
    statements: &[&str],
    work: F,
) -> (Vec<Duration>, u64, u64, Duration)
where
    F: Fn(Conn, u64) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = u64> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let mut conns: Vec<Conn> = Vec::new();
    for _ in 0..clients {
        let client = pg.connect().await;
        let mut prepared = Vec::new();
        for s in statements {
            prepared.push(client.prepare(s).await.expect("prepare"));
        }
        conns.push(Arc::new((client, prepared)));
    }
    let started = Instant::now();
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            let (stop, work) = (stop.clone(), work.clone());
            tokio::spawn(async move {
                let (mut lat, mut n, mut retries) = (Vec::new(), 0u64, 0u64);
                let mut i = c as u64 * 7919;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let t = Instant::now();
                    retries += work(client.clone(), i).await;
                    lat.push(t.elapsed());
                    n += 1;
                }
                (lat, n, retries)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut n, mut retries) = (Vec::new(), 0, 0);
    for h in handles {
        let (l, c, r) = h.await.expect("client task");
        lat.extend(l);
        n += c;
        retries += r;
    }
    let elapsed = started.elapsed();
    lat.sort_unstable();
    (lat, n, retries, elapsed)
}

/// PostgreSQL's W6 rows.
pub(super) async fn pg(pg: &Pg, seconds: f64, rows: &mut Vec<Row>) {
    // W6a: state by primary key.
    let c = pg.connect().await;
    c.batch_execute(
        "DROP TABLE IF EXISTS states;
         CREATE TABLE states (key text PRIMARY KEY, state jsonb NOT NULL);",
    )
    .await
    .expect("create states");
    let keys: Vec<String> = (0..1000).map(|k| format!("cart/{k}")).collect();
    let states: Vec<String> = (0..1000).map(cart_state).collect();
    c.execute(
        "INSERT INTO states SELECT k, s::jsonb FROM unnest($1::text[], $2::text[]) AS u(k, s)",
        &[&keys, &states],
    )
    .await
    .expect("load states");
    c.batch_execute("VACUUM ANALYZE states")
        .await
        .expect("vacuum");
    let select = ["SELECT state::text FROM states WHERE key = $1"];
    let (lat, n, _, elapsed) = run_clients(pg, 64, seconds, &select, |conn, i| async move {
        let (client, stmts) = &*conn;
        let key = format!("cart/{}", (i * 2_654_435_761) % 1000);
        let row = client.query_one(&stmts[0], &[&key]).await.expect("select");
        let state: &str = row.get(0);
        assert!(state.len() > 100);
        0
    })
    .await;
    rows.push(Row::from_latencies(
        STATE_WORKLOAD,
        "PostgreSQL 15 (state table, by primary key)",
        n,
        elapsed,
        lat,
        "requests/s; `SELECT state::text FROM states WHERE key = $1` (1000 rows of ~480-byte jsonb), 64 tokio-postgres connections in the bench process on the same 2 cores".into(),
    ));

    // W6b: decide as a transaction.
    pg.fresh_table().await;
    let open_streams: Vec<String> = (0..1024).map(|k| format!("account/{k}")).collect();
    let revs = vec![1i64; 1024];
    let types = vec!["was_opened"; 1024];
    let datas: Vec<String> = (0..1024)
        .map(|k| format!(r#"{{"owner":"owner-{k}"}}"#))
        .collect();
    c.execute(super::INSERT_MANY, &[&open_streams, &revs, &types, &datas])
        .await
        .expect("open accounts");
    let statements = [
        "SELECT revision, type, data::text FROM events WHERE stream = $1 ORDER BY revision",
        INSERT_ONE,
    ];
    let (lat, n, retries, elapsed) =
        run_clients(pg, 32, seconds, &statements, |conn, i| async move {
            let (client, stmts) = &*conn;
            let (read, insert) = (&stmts[0], &stmts[1]);
            let stream = format!("account/{}", i % 1024);
            let mut retries = 0;
            loop {
                // Fold the stream (balance), decide (a deposit is always accepted), append the
                // next revision; a concurrent writer makes the insert fail and the loop retry.
                let rows = client.query(read, &[&stream]).await.expect("read");
                let (mut revision, mut balance) = (0i64, 0i64);
                for r in &rows {
                    revision = r.get(0);
                    let ty: &str = r.get(1);
                    if ty == "was_credited" {
                        let data: &str = r.get(2);
                        balance += serde_json::from_str::<super::Amount>(data)
                            .expect("amount")
                            .amount;
                    }
                }
                std::hint::black_box(balance);
                match client
                    .execute(
                        insert,
                        &[
                            &stream,
                            &(revision + 1),
                            &"was_credited",
                            &r#"{"amount":1}"#,
                        ],
                    )
                    .await
                {
                    Ok(_) => return retries,
                    Err(e)
                        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                    {
                        retries += 1
                    }
                    Err(e) => panic!("insert: {e}"),
                }
            }
        })
        .await;
    let ok: i64 = c
        .query_one(
            "SELECT count(*) FROM events WHERE type = 'was_credited'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(ok as u64, n, "every acknowledged deposit is stored once");
    rows.push(Row::from_latencies(
        COMMAND_WORKLOAD,
        "PostgreSQL 15 (transaction per command)",
        n,
        elapsed,
        lat,
        format!(
            "commands/s; read the account's events, fold, insert revision n+1 (unique (stream, revision)), synchronous_commit=on; 32 connections; {retries} retries after a conflict; stored deposits checked equal to acknowledged"
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_summary() {
        let out = "== distinct keys: wrk -t2\n  Latency Distribution\n     50%  811.00us\n     75%    0.87ms\n     99%    2.21ms\n  1148826 requests in 15.00s, 564.24MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:  76572.11\n== one shared key\n     50%  9.00ms\nRequests/sec:  100.0\n";
        let w = parse_wrk(out, "== distinct keys").unwrap();
        assert_eq!(w.p50, Some(Duration::from_micros(811)));
        assert_eq!(w.p99, Some(Duration::from_micros(2210)));
        assert_eq!(w.rps, 76572.11);
        assert_eq!(w.non_2xx, 3);
        let w = parse_wrk(out, "== one shared").unwrap();
        assert_eq!(w.rps, 100.0);
        assert!(parse_wrk(out, "missing").is_none());
    }
}
