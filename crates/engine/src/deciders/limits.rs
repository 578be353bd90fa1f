//! What a command may be and what a decider may answer: the request checked before anything
//! runs, and `decide`'s output checked against the command limits before anything is appended.

use serde::Deserialize;

use crate::CommandError;

/// The default of [`crate::EngineConfig::max_command_events`].
pub const MAX_COMMAND_EVENTS: usize = 10_000;

/// The default of [`crate::EngineConfig::max_command_bytes`].
pub const MAX_COMMAND_BYTES: usize = 8 << 20;

/// What one command may append.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CommandLimits {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

/// Longest accepted idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 200;

/// A command's stream key, body and idempotency key, checked before anything runs.
pub(super) fn check_request(
    key: &str,
    command: &[u8],
    idempotency_key: Option<&str>,
) -> Result<(), CommandError> {
    if key.is_empty() {
        return Err(CommandError::Invalid("a command needs a stream key".into()));
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(command).is_err() {
        return Err(CommandError::Invalid(
            "the command is not valid JSON".into(),
        ));
    }
    if let Some(k) = idempotency_key
        && (k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY || k.contains('/'))
    {
        return Err(CommandError::Invalid(format!(
            "an Idempotency-Key is 1-{MAX_IDEMPOTENCY_KEY} characters without '/'"
        )));
    }
    Ok(())
}

/// `decide`'s ok payload: `[{"type": …, "data": …}, …]`.
pub(super) fn parse_decided(
    out: &[u8],
    limits: CommandLimits,
) -> Result<Vec<(String, serde_json::Value)>, CommandError> {
    let (max_events, max_bytes) = (limits.events, limits.bytes);
    #[derive(Deserialize)]
    struct Emitted {
        #[serde(rename = "type")]
        ty: String,
        #[serde(default)]
        data: serde_json::Value,
    }
    // The answer's size bounds the events' data: refuse a huge one before parsing it.
    if out.len() > max_bytes + max_events * 64 {
        return Err(CommandError::BadModuleOutput(format!(
            "decide returned {} bytes of events; a command may append at most \
             {max_bytes} bytes of data",
            out.len()
        )));
    }
    let items: Vec<Emitted> = serde_json::from_slice(out).map_err(|e| {
        CommandError::BadModuleOutput(format!(
            "decide returned something other than a list of events: {e}"
        ))
    })?;
    if items.len() > max_events {
        return Err(CommandError::BadModuleOutput(format!(
            "decide returned {} events; a command may append at most {max_events}",
            items.len()
        )));
    }
    let bytes: usize = items.iter().map(|e| e.data.to_string().len()).sum();
    if bytes > max_bytes {
        return Err(CommandError::BadModuleOutput(format!(
            "decide returned {bytes} bytes of event data; a command may append at most \
             {max_bytes}"
        )));
    }
    items
        .into_iter()
        .map(|e| {
            if e.ty.is_empty() {
                Err(CommandError::BadModuleOutput(format!(
                    "decide returned an event without a type (data: {})",
                    e.data
                )))
            } else {
                Ok((e.ty, e.data))
            }
        })
        .collect()
}
