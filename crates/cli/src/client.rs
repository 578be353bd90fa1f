//! Client subcommands: talk to a Loom server over HTTP.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Response, StatusCode, header};
use serde_json::Value;
use serde_json::value::RawValue;

/// Characters left as they are in a path segment.
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
    pub(crate) fn client(&self, timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
        let mut headers = header::HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("loom-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = timeout {
            builder = builder.timeout(t);
        }
        builder.build().context("building the HTTP client")
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.url.trim_end_matches('/'), path_and_query)
    }
}

/// Turns a non-success response into an error that reads well, using the problem's detail.
pub(crate) async fn check(response: Response) -> anyhow::Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    Err(anyhow!(
        "the server answered {} {}: {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        if detail.is_empty() {
            "(no details)"
        } else {
            &detail
        }
    ))
}

pub(crate) fn send_error(url: &str) -> String {
    format!("sending the request to {url} (is the server running? see --url / LOOM_URL)")
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
    let client = args.conn.client(Some(Duration::from_secs(120)))?;
    let url = args.conn.url("/v1/events");
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
    let mut appended: Vec<Value> = Vec::with_capacity(events.len());
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
        let response = client
            .post(&url)
            .header(header::CONTENT_TYPE, "application/cloudevents-batch+json")
            .body(body)
            .send()
            .await
            .with_context(|| send_error(&url))?;
        let sent = in_batch;
        let done = appended.len();
        let response = check(response).await.with_context(|| {
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
        let outcome: Value = response
            .json()
            .await
            .context("reading the server's answer")?;
        if outcome.get("duplicate").and_then(Value::as_bool) == Some(true) {
            duplicates += sent;
        }
        last_position = outcome
            .get("last_position")
            .and_then(Value::as_u64)
            .unwrap_or(last_position);
        if let Some(list) = outcome.get("events").and_then(Value::as_array) {
            appended.extend(list.iter().cloned());
        }
        bar.inc(sent as u64);
        in_batch = 0;
    }
    bar.finish_and_clear();
    if args.conn.json {
        let out = serde_json::json!({ "events": appended, "last_position": last_position });
        println!("{out}");
    } else {
        let first = appended
            .first()
            .and_then(|e| e.get("position"))
            .and_then(Value::as_u64);
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
    raw: &RawValue,
    event: &Value,
    json: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", raw.get());
    }
    let s = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("");
    let n = |k: &str| event.get(k).and_then(Value::as_u64).unwrap_or(0);
    let data = match (event.get("data"), event.get("data_base64")) {
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
        n("position"),
        s("subject"),
        n("revision"),
        s("type"),
        s("id"),
        data
    )
}

pub(crate) fn query_string(pairs: &[(&str, String)]) -> String {
    let mut q = String::new();
    for (k, v) in pairs {
        q.push(if q.is_empty() { '?' } else { '&' });
        q.push_str(k);
        q.push('=');
        q.push_str(&utf8_percent_encode(v, SEGMENT).to_string());
    }
    q
}

pub(crate) async fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let mut filters: Vec<(&str, String)> = Vec::new();
    if let Some(s) = &args.subject {
        filters.push(("subject", s.clone()));
    }
    if let Some(e) = &args.entity {
        filters.push(("entity", e.clone()));
    }
    for t in &args.types {
        filters.push(("type", t.clone()));
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let json = args.conn.json;
    if args.follow {
        return follow(&args, filters, json).await;
    }
    let client = args.conn.client(Some(Duration::from_secs(120)))?;
    let mut printed = 0u64;
    let mut after = args.after;
    loop {
        let page_size = args.limit.map_or(1000, |l| (l - printed).min(1000));
        if page_size == 0 {
            break;
        }
        let mut pairs = filters.clone();
        pairs.push(("after", after.to_string()));
        pairs.push(("limit", page_size.to_string()));
        let url = args
            .conn
            .url(&format!("/v1/events{}", query_string(&pairs)));
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| send_error(&url))?;
        let response = check(response).await?;
        let has_next = response.headers().contains_key(header::LINK);
        let page: Vec<Box<RawValue>> = response.json().await.context("reading events")?;
        for raw in &page {
            let e: Value = serde_json::from_str(raw.get()).context("reading an event")?;
            print_event(raw, &e, json, &mut out).context("writing to stdout")?;
            after = e.get("position").and_then(Value::as_u64).unwrap_or(after);
        }
        printed += page.len() as u64;
        if !has_next || page.is_empty() {
            break;
        }
    }
    if printed == 0 && !json && std::io::stdout().is_terminal() {
        eprintln!("no events");
    }
    Ok(ExitCode::SUCCESS)
}

async fn follow(
    args: &EventsArgs,
    mut pairs: Vec<(&str, String)>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    pairs.push(("after", args.after.to_string()));
    let client = args.conn.client(None)?;
    let url = args
        .conn
        .url(&format!("/v1/subscribe{}", query_string(&pairs)));
    let response = client
        .get(&url)
        .header(header::ACCEPT, "text/event-stream")
        .send()
        .await
        .with_context(|| send_error(&url))?;
    let response = check(response).await?;
    let mut events = eventsource_stream::EventStream::new(response.bytes_stream());
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    while let Some(item) = events.next().await {
        let message = item.map_err(|e| anyhow!("the subscription broke: {e}"))?;
        if message.event == "error" {
            bail!("the server ended the subscription: {}", message.data);
        }
        let raw: Box<RawValue> = serde_json::from_str(&message.data).context("reading an event")?;
        let event: Value = serde_json::from_str(raw.get()).context("reading an event")?;
        let mut out = stdout.lock();
        print_event(&raw, &event, json, &mut out).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
        printed += 1;
        if args.limit.is_some_and(|l| printed >= l) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    bail!("the server closed the subscription")
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
    let client = args.conn.client(Some(Duration::from_secs(120)))?;
    let base = format!(
        "/v1/streams/{}/{}",
        utf8_percent_encode(&args.entity, SEGMENT),
        utf8_percent_encode(&args.key, SEGMENT)
    );
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut after = args.after_revision;
    loop {
        let url = args
            .conn
            .url(&format!("{base}?after_revision={after}&limit=1000"));
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| send_error(&url))?;
        if response.status() == StatusCode::NOT_FOUND && after > args.after_revision {
            break;
        }
        let response = check(response).await?;
        let has_next = response.headers().contains_key(header::LINK);
        let page: Vec<Box<RawValue>> = response.json().await.context("reading the stream")?;
        for raw in &page {
            let e: Value = serde_json::from_str(raw.get()).context("reading an event")?;
            print_event(raw, &e, args.conn.json, &mut out).context("writing to stdout")?;
            after = e.get("revision").and_then(Value::as_u64).unwrap_or(after);
        }
        if !has_next || page.is_empty() {
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
