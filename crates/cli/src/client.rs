//! Client subcommands: talk to a Loom server over HTTP.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use loom_client::{AppendedEvent, Client, ReadQuery, SubscribeQuery};
use serde_json::Value;
use serde_json::value::RawValue;

/// Where the server is and how to authenticate.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// The server's URL.
    #[arg(
        long,
        env = "LOOM_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub(crate) url: String,
    /// Bearer token.
    #[arg(long, env = "LOOM_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    /// Print JSON instead of text for people.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Connection {
    /// A client of the server. Requests time out after `timeout`; subscriptions, uploads and
    /// backups do not.
    pub(crate) fn client(&self, timeout: Duration) -> anyhow::Result<Client> {
        let mut builder = Client::builder(&self.url)
            .timeout(timeout)
            .user_agent(concat!("loom-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        Ok(builder.build()?)
    }
}

/// Whether an error is that the server could not be reached (for a hint about `--url`).
pub(crate) fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<loom_client::Error>(),
            Some(loom_client::Error::Transport { .. })
        )
    })
}

// ----- append -----

#[derive(Debug, Args)]
pub(crate) struct AppendArgs {
    #[command(flatten)]
    conn: Connection,
    /// File with the events ("-" or nothing: stdin).
    file: Option<PathBuf>,
    /// Most events per request; each request is one atomic append.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Most bytes per request (stay under the server's --max-body).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    batch_bytes: usize,
}

/// Splits input into events: one JSON object, a JSON array of objects, or NDJSON (any
/// whitespace-separated sequence of those). Events are kept as raw JSON text.
fn split_events(text: &str) -> anyhow::Result<Vec<Box<RawValue>>> {
    let mut events = Vec::new();
    for (n, item) in serde_json::Deserializer::from_str(text)
        .into_iter::<Box<RawValue>>()
        .enumerate()
    {
        let item = item.map_err(|e| {
            anyhow!(
                "the input is not a JSON object, a JSON array or NDJSON (value {}): {e}",
                n + 1
            )
        })?;
        match item.get().as_bytes().first() {
            Some(b'{') => events.push(item),
            Some(b'[') => {
                let items: Vec<Box<RawValue>> =
                    serde_json::from_str(item.get()).context("reading a JSON array of events")?;
                for (i, e) in items.into_iter().enumerate() {
                    if !e.get().starts_with('{') {
                        bail!("array item {i} is not a JSON object");
                    }
                    events.push(e);
                }
            }
            _ => bail!("value {} of the input is not a JSON object or array", n + 1),
        }
    }
    Ok(events)
}

// Long by design: one subcommand: its input modes, request and output.
pub(crate) async fn append(args: AppendArgs) -> anyhow::Result<ExitCode> {
    let text = match args.file.as_deref() {
        None => read_stdin()?,
        Some(p) if p.as_os_str() == "-" => read_stdin()?,
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
    };
    let events = split_events(&text)?;
    if events.is_empty() {
        bail!("the input holds no events");
    }
    let client = args.conn.client(Duration::from_secs(120))?;
    let total = events.len() as u64;
    let bar = if crate::stderr_is_terminal() && events.len() > args.batch_size {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut appended: Vec<AppendedEvent> = Vec::with_capacity(events.len());
    let mut last_position = 0;
    let mut duplicates = 0usize;
    let mut batch = String::from("[");
    let mut in_batch = 0usize;
    let batch_size = args.batch_size.max(1);
    let mut iter = events.iter().peekable();
    while let Some(event) = iter.next() {
        if in_batch > 0 {
            batch.push(',');
        }
        batch.push_str(event.get());
        in_batch += 1;
        let full = in_batch >= batch_size
            || iter
                .peek()
                .is_some_and(|next| batch.len() + next.get().len() + 2 > args.batch_bytes);
        if !full && iter.peek().is_some() {
            continue;
        }
        batch.push(']');
        let body = std::mem::replace(&mut batch, String::from("["));
        let sent = in_batch;
        let done = appended.len();
        let outcome = client.append_json(body).await.with_context(|| {
            if done == 0 {
                format!("appending events 1..{sent} (nothing was written)")
            } else {
                format!(
                    "appending events {}..{} (this batch was not written; the {done} events \
                     before it were)",
                    done + 1,
                    done + sent
                )
            }
        })?;
        if outcome.duplicate {
            duplicates += sent;
        }
        last_position = outcome.last_position;
        appended.extend(outcome.events);
        bar.inc(sent as u64);
        in_batch = 0;
    }
    bar.finish_and_clear();
    if args.conn.json {
        let out = serde_json::json!({ "events": appended, "last_position": last_position });
        println!("{out}");
    } else {
        let first = appended.first().map(|e| e.position);
        match first {
            Some(first) if appended.len() > 1 => println!(
                "appended {} events at positions {first}..{last_position}",
                appended.len()
            ),
            Some(first) => println!("appended 1 event at position {first}"),
            None => println!("appended nothing"),
        }
        if duplicates > 0 {
            println!(
                "({duplicates} were stored before with the same content: nothing new written for them)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading events from stdin")?;
    Ok(text)
}

// ----- events -----

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    #[command(flatten)]
    conn: Connection,
    /// Only events after this position.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Most events to print (default: all; with --follow: until interrupted).
    #[arg(long)]
    limit: Option<u64>,
    /// Only this stream ({entity}/{key}).
    #[arg(long)]
    subject: Option<String>,
    /// Only this entity.
    #[arg(long)]
    entity: Option<String>,
    /// Only this type (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Keep printing events as they are committed (Server-Sent Events).
    #[arg(long, short = 'f')]
    follow: bool,
}

/// Prints one stored event: its JSON text as received (numbers exact) or one line for people.
fn print_event(
    event: &loom_client::StoredEvent,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if json {
        return writeln!(out, "{}", event.json()).context("writing to stdout");
    }
    let parsed: Value = serde_json::from_str(event.json()).context("reading an event")?;
    let s = |k: &str| parsed.get(k).and_then(Value::as_str).unwrap_or("");
    let data = match (parsed.get("data"), parsed.get("data_base64")) {
        (Some(d), _) => d.to_string(),
        (None, Some(b)) => format!("base64:{}", b.as_str().unwrap_or("")),
        (None, None) => String::new(),
    };
    let data = if data.chars().count() > 100 {
        format!("{}…", data.chars().take(100).collect::<String>())
    } else {
        data
    };
    writeln!(
        out,
        "{:>8}  {}@{}  {}  {}  {}",
        event.position(),
        event.subject(),
        event.revision(),
        s("type"),
        s("id"),
        data
    )
    .context("writing to stdout")
}

pub(crate) async fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let json = args.conn.json;
    let mut query = ReadQuery::default().after(args.after);
    if let Some(s) = &args.subject {
        query = query.subject(s);
    }
    if let Some(e) = &args.entity {
        query = query.entity(e);
    }
    for t in &args.types {
        query = query.event_type(t);
    }
    if args.follow {
        return follow(&args, SubscribeQuery::from(&query), json).await;
    }
    let client = args.conn.client(Duration::from_secs(120))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0u64;
    loop {
        let page_size = args.limit.map_or(1000, |l| (l - printed).min(1000));
        if page_size == 0 {
            break;
        }
        let page = client.read(&query.clone().limit(page_size)).await?;
        for event in &page.events {
            print_event(event, json, &mut out)?;
        }
        printed += page.events.len() as u64;
        if !page.more || page.events.is_empty() {
            break;
        }
        query = query.next(&page);
    }
    if printed == 0 && !json && std::io::stdout().is_terminal() {
        eprintln!("no events");
    }
    Ok(ExitCode::SUCCESS)
}

async fn follow(args: &EventsArgs, query: SubscribeQuery, json: bool) -> anyhow::Result<ExitCode> {
    let client = args.conn.client(Duration::from_secs(120))?;
    let mut events = client.subscribe(query);
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    while let Some(event) = events.next().await {
        let event = event.context("following the events")?;
        let mut out = stdout.lock();
        print_event(&event, json, &mut out)?;
        out.flush().context("writing to stdout")?;
        printed += 1;
        if args.limit.is_some_and(|l| printed >= l) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    bail!("the subscription ended")
}

// ----- stream -----

#[derive(Debug, Args)]
pub(crate) struct StreamArgs {
    #[command(flatten)]
    conn: Connection,
    /// The entity.
    entity: String,
    /// The stream's key (may contain '/').
    key: String,
    /// Only revisions after this.
    #[arg(long, default_value_t = 0)]
    after_revision: u64,
}

pub(crate) async fn stream(args: StreamArgs) -> anyhow::Result<ExitCode> {
    let client = args.conn.client(Duration::from_secs(120))?;
    let subject = format!("{}/{}", args.entity, args.key);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut after = args.after_revision;
    loop {
        let page = match client.stream(&subject, after).await {
            // The stream ended exactly at a page boundary.
            Err(e) if e.status() == Some(404) && after > args.after_revision => break,
            other => other?,
        };
        for event in &page.events {
            print_event(event, args.conn.json, &mut out)?;
            after = event.revision();
        }
        if !page.more || page.events.is_empty() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::split_events;

    #[test]
    fn split_events_reads_object_array_and_ndjson() {
        assert_eq!(split_events(r#"{"id":"1"}"#).unwrap().len(), 1);
        assert_eq!(split_events(r#"[{"id":"1"},{"id":"2"}]"#).unwrap().len(), 2);
        assert_eq!(
            split_events("{\"id\":\"1\"}\n{\"id\":\"2\"}\n\n{\"id\":\"3\"}\n")
                .unwrap()
                .len(),
            3
        );
        assert!(split_events("{\"id\":1} nope").is_err());
        assert!(split_events("[1]").is_err());
        assert!(split_events("42").is_err());
    }

    #[test]
    fn split_events_keeps_numbers_exact() {
        let events = split_events(r#"{"data":{"n":12345678901234567890123}}"#).unwrap();
        assert!(events[0].get().contains("12345678901234567890123"));
    }
}
