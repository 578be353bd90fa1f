//! What a reactor asks for — events to append, commands to run, CloudEvents to deliver — with
//! typed streams, and errors instead of silently wrong JSON.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::event::encode_event;

/// A stream: an entity and a key, written `{entity}/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stream {
    entity: String,
    key: String,
}

impl Stream {
    /// The stream `key` of `entity`. The entity is 1–128 ASCII letters, digits, `_`, `-` or
    /// `.`; the key any non-empty text (it may contain `/`).
    pub fn new(entity: impl Into<String>, key: impl Into<String>) -> Result<Stream, EffectError> {
        let (entity, key) = (entity.into(), key.into());
        let ok = !entity.is_empty()
            && entity.len() <= 128
            && entity
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(EffectError(format!(
                "{entity:?} is not an entity name: use 1-128 ASCII letters, digits, '_', '-' or '.'"
            )));
        }
        if key.is_empty() {
            return Err(EffectError(format!(
                "a stream of {entity} needs a non-empty key"
            )));
        }
        Ok(Stream { entity, key })
    }

    /// The entity.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.entity, self.key)
    }
}

impl FromStr for Stream {
    type Err = EffectError;
    /// Parses `{entity}/{key}`.
    fn from_str(s: &str) -> Result<Stream, EffectError> {
        let (entity, key) = s.split_once('/').ok_or_else(|| {
            EffectError(format!("{s:?} is not a stream: write {{entity}}/{{key}}"))
        })?;
        Stream::new(entity, key)
    }
}

/// Why an effect could not be made: a bad stream, an event or command that does not
/// serialize as the ABI needs. A reaction that fails with it fails its reactor at that event,
/// with this message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectError(pub String);

impl EffectError {
    /// An error with a message of the reactor's own.
    pub fn msg(message: impl fmt::Display) -> EffectError {
        EffectError(message.to_string())
    }
}

impl fmt::Display for EffectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EffectError {}

/// What a reactor asks for: events to append, commands to run, CloudEvents to deliver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Reaction {
    /// Events to append.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub append: Vec<Emitted>,
    /// Commands to run through deciders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandRequest>,
    /// CloudEvents to deliver to the reactor's sink.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliver: Vec<Emitted>,
}

/// An event a reactor emits.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Emitted {
    /// The stream, `{entity}/{key}`.
    pub subject: String,
    /// CloudEvents `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The data.
    pub data: serde_json::Value,
}

/// A command a reactor asks to run.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct CommandRequest {
    /// Entity of the decider.
    pub entity: String,
    /// Stream key.
    pub key: String,
    /// The command JSON.
    pub command: serde_json::Value,
}

impl Reaction {
    /// Nothing to do.
    pub fn none() -> Reaction {
        Reaction::default()
    }

    fn emitted<E: Serialize>(stream: &Stream, event: &E) -> Result<Emitted, EffectError> {
        let (ty, data) = encode_event(event).map_err(|e| EffectError(e.to_string()))?;
        Ok(Emitted {
            subject: stream.to_string(),
            ty,
            data,
        })
    }

    /// Appends a typed event (a variant of an event enum) to `stream`.
    pub fn append<E: Serialize>(
        mut self,
        stream: &Stream,
        event: &E,
    ) -> Result<Reaction, EffectError> {
        self.append.push(Reaction::emitted(stream, event)?);
        Ok(self)
    }

    /// Runs a command through the decider of the stream's entity, on that stream.
    pub fn command<C: Serialize>(
        mut self,
        stream: &Stream,
        command: &C,
    ) -> Result<Reaction, EffectError> {
        let command = serde_json::to_value(command)
            .map_err(|e| EffectError(format!("the command does not serialize: {e}")))?;
        self.commands.push(CommandRequest {
            entity: stream.entity.clone(),
            key: stream.key.clone(),
            command,
        });
        Ok(self)
    }

    /// Delivers a typed CloudEvent about `stream` to the reactor's sink.
    pub fn deliver<E: Serialize>(
        mut self,
        stream: &Stream,
        event: &E,
    ) -> Result<Reaction, EffectError> {
        self.deliver.push(Reaction::emitted(stream, event)?);
        Ok(self)
    }
}
