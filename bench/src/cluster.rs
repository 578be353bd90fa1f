//! `loom-bench cluster-lag`: how long after an append is acknowledged by the sequencer it can
//! be read on a follower. Appends one event at a time through the sequencer, then reads it on
//! the follower with `min_position` (which answers as soon as the follower has applied it), and
//! the same read on the sequencer itself as the baseline of one HTTP round trip. Run it beside
//! a load (`wrk`) to see the lag under load.
//!
//! ```text
//! loom-bench cluster-lag --sequencer http://127.0.0.1:7071 --follower http://127.0.0.1:7072 [--appends 2000]
//! ```

use std::time::{Duration, Instant};

pub(crate) struct Args {
    sequencer: String,
    follower: String,
    appends: usize,
}

pub(crate) fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        sequencer: String::new(),
        follower: String::new(),
        appends: 2000,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sequencer" => args.sequencer = value()?,
            "--follower" => args.follower = value()?,
            "--appends" => args.appends = value()?.parse().map_err(|_| "bad --appends")?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.sequencer.is_empty() || args.follower.is_empty() {
        return Err("--sequencer and --follower are required".into());
    }
    Ok(args)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn read(agent: &ureq::Agent, base: &str, position: u64) -> Duration {
    let started = Instant::now();
    let resp = agent
        .get(&format!(
            "{base}/v1/events/{position}?min_position={position}&timeout_ms=5000"
        ))
        .call()
        .expect("read");
    assert_eq!(resp.status().as_u16(), 200, "read of {position} on {base}");
    started.elapsed()
}

pub(crate) fn run(args: &Args) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let run = std::process::id();
    let (mut acks, mut follower, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.appends {
        let event = format!(
            r#"{{"specversion":"1.0","id":"lag-{run}-{i}","source":"bench","type":"had_item_added","subject":"cart/lag{}","data":{{"sku":"apple","quantity":1}}}}"#,
            i % 100
        );
        let started = Instant::now();
        let resp = agent
            .post(&format!("{}/v1/events", args.sequencer))
            .header("content-type", "application/cloudevents+json")
            .send(event)
            .expect("append");
        let acked = started.elapsed();
        assert_eq!(resp.status().as_u16(), 201, "append {i}");
        let body: serde_json::Value =
            serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
        let position = body["last_position"].as_u64().unwrap();
        // Alternate which read goes first, so neither is always the warmer one.
        if i % 2 == 0 {
            follower.push(read(&agent, &args.follower, position));
            baseline.push(read(&agent, &args.sequencer, position));
        } else {
            baseline.push(read(&agent, &args.sequencer, position));
            follower.push(read(&agent, &args.follower, position));
        }
        acks.push(acked);
    }
    println!(
        "| what ({} appends, one at a time) | p50 ms | p99 ms | max ms |",
        args.appends
    );
    println!("|---|---:|---:|---:|");
    for (what, samples) in [
        ("append acknowledged by the sequencer", &mut acks),
        (
            "then readable on the follower (min_position read)",
            &mut follower,
        ),
        (
            "the same read on the sequencer (one HTTP round trip)",
            &mut baseline,
        ),
    ] {
        samples.sort();
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} |",
            percentile(samples, 0.5),
            percentile(samples, 0.99),
            percentile(samples, 1.0)
        );
    }
}
