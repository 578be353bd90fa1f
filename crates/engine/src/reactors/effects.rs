//! One event's effects: events appended, commands run, CloudEvents delivered to the sink
//! (with retries), each with an id derived from the event so a replay does nothing twice.

use super::*;

/// What to do with one reaction, parsed from `react`'s JSON. Unknown members are refused: a
/// typo (`"apend"`) would otherwise make the reaction a silent no-op.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reaction {
    #[serde(default)]
    append: Vec<Emitted>,
    #[serde(default)]
    commands: Vec<CommandRequest>,
    #[serde(default)]
    deliver: Vec<Emitted>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Emitted {
    subject: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandRequest {
    entity: String,
    key: String,
    command: serde_json::Value,
}

impl Shared {
    /// All effects of one event.
    // Long by design: the effects of one reaction in the order they must happen (appends,
    // commands, deliveries) before the checkpoint may move.
    pub(crate) fn react(&self, w: &Worker, e: &StoredEvent) -> Result<(), String> {
        let module = self.module_of(w).map_err(|err| err.to_string())?;
        let out = match self
            .runtime
            .react(&module, e)
            .map_err(|err| err.to_string())?
        {
            Outcome::Ok(out) => out,
            Outcome::Rejected(r) => {
                return Err(format!(
                    "react refused the event: {}",
                    String::from_utf8_lossy(&r)
                ));
            }
        };
        let reaction: Reaction = serde_json::from_slice(&out)
            .map_err(|err| format!("react returned a malformed reaction: {err}"))?;
        let hops = hops_of(e).saturating_add(1);
        if hops > self.max_hops && !(reaction.append.is_empty() && reaction.commands.is_empty()) {
            return Err(format!(
                "the reaction to event {} would be hop {hops} of a chain of reactions, more than \
                 the {} allowed: reactors (or their commands) feed each other in a loop?",
                e.position, self.max_hops
            ));
        }
        let source = super::worker::own_source(&w.name);
        if !reaction.append.is_empty() {
            let events = reaction
                .append
                .iter()
                .enumerate()
                .map(|(i, em)| Event {
                    id: format!("{}/{i}", e.position),
                    source: source.clone(),
                    ty: em.ty.clone(),
                    subject: em.subject.clone(),
                    time: None,
                    datacontenttype: Some("application/json".into()),
                    dataschema: None,
                    data: Some(Data::json(&em.data)),
                    extensions: hops_extension(hops),
                })
                .collect();
            let out = self
                .ledger
                .append(AppendRequest::new(events).by(Origin::Reactor(w.name.clone())))
                .map_err(|err| format!("appending the reaction's events failed: {err}"))?;
            if !out.duplicate {
                w.counters
                    .appended
                    .fetch_add(out.events.len() as u64, Ordering::AcqRel);
            }
        }
        for (i, c) in reaction.commands.iter().enumerate() {
            let idem = format!("r-{}-{}-{i}", w.name, e.position);
            let command = serde_json::to_vec(&c.command).expect("a Value serializes");
            match self
                .deciders
                .run_as_reaction(&c.entity, &c.key, &command, &idem, hops)
            {
                Ok(outcome) => {
                    if !outcome.duplicate {
                        w.counters.commands.fetch_add(1, Ordering::AcqRel);
                    }
                }
                // A domain rejection is an answer, not a failure: the command was decided.
                Err(crate::CommandError::Rejected(message)) => {
                    tracing::info!(reactor = %w.name, position = e.position, %message, "command rejected");
                    w.counters.commands.fetch_add(1, Ordering::AcqRel);
                }
                Err(err) => {
                    return Err(format!("command on {}/{} failed: {err}", c.entity, c.key));
                }
            }
        }
        if !reaction.deliver.is_empty() {
            let Some(sink) = &w.spec.sink else {
                return Err("the reaction delivers CloudEvents but the reactor has no sink".into());
            };
            for (i, d) in reaction.deliver.iter().enumerate() {
                let body = serde_json::json!({
                    "specversion": "1.0",
                    "id": format!("{}/{}/{i}", w.name, e.position),
                    "source": source,
                    "type": d.ty,
                    "subject": d.subject,
                    "time": loom_ledger::format_time(e.recorded_micros),
                    "datacontenttype": "application/json",
                    "data": d.data,
                });
                self.deliver(w, sink, &body)?;
                w.counters.delivered.fetch_add(1, Ordering::AcqRel);
            }
        }
        w.counters.reacted.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// POSTs one CloudEvent (structured mode), retrying with exponential backoff.
    pub(crate) fn deliver(
        &self,
        w: &Worker,
        sink: &str,
        body: &serde_json::Value,
    ) -> Result<(), String> {
        let bytes = serde_json::to_vec(body).expect("a Value serializes");
        let mut backoff = self.policy.initial_backoff;
        let mut last = String::new();
        for attempt in 1..=self.policy.attempts {
            if w.life.stopping() {
                return Err("stopped".into());
            }
            match self
                .http
                .post(sink)
                .header(
                    "content-type",
                    "application/cloudevents+json; charset=utf-8",
                )
                .send(&bytes[..])
            {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => last = format!("the sink answered {}", resp.status()),
                Err(e) => last = format!("the sink is unreachable: {e}"),
            }
            tracing::debug!(reactor = %w.name, attempt, %last, "delivery failed; retrying");
            if attempt < self.policy.attempts {
                let l = w.life.listen();
                if w.life.stopping() {
                    return Err("stopped".into());
                }
                let _ = l.wait_timeout(backoff);
                backoff = (backoff * 2).min(self.policy.max_backoff);
            }
        }
        Err(format!(
            "delivery to {sink} failed after {} attempts: {last}",
            self.policy.attempts
        ))
    }
}

/// The extension that counts how many reactions led to an event.
pub(crate) const HOPS_EXTENSION: &str = "loomhops";

/// How many reactions led to `e` (0 for an event a client appended).
fn hops_of(e: &StoredEvent) -> u64 {
    match e.event.extensions.get(HOPS_EXTENSION) {
        Some(ExtensionValue::Integer(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// The extensions of an event `hops` reactions away from a client's.
pub(crate) fn hops_extension(hops: u64) -> BTreeMap<String, ExtensionValue> {
    BTreeMap::from([(
        HOPS_EXTENSION.to_owned(),
        ExtensionValue::Integer(i64::try_from(hops).unwrap_or(i64::MAX)),
    )])
}
