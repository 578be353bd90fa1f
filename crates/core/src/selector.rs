//! Selectors: which events a read, a subscription, a projection or a condition is about.
//!
//! A *replay* part (`entity`, `keys`, `types`) is answered from index tables; a *filter* part
//! (`data`, `meta`: RFC 9535 JSONPath) is checked on each candidate event. An event matches a
//! JSONPath filter when the path selects at least one node.

use serde::{Deserialize, Serialize};
use serde_json_path::JsonPath;

use crate::error::SelectorError;
use crate::event::StoredEvent;
use crate::names::{check_entity_name, split_subject};

/// A selector as clients write it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Selector {
    /// Only events of this entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Only events of these streams of the entity (keys, without the `entity/` prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Only events of these types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// JSONPath over the event's `data`; the event matches when it selects anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// JSONPath over the whole event in CloudEvents JSON form (attributes and data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<String>,
}

impl Selector {
    /// All events.
    pub fn all() -> Selector {
        Selector::default()
    }

    /// One stream, from its subject `{entity}/{key}`.
    pub fn stream(subject: &str) -> Result<Selector, SelectorError> {
        let (entity, key) = split_subject(subject)
            .ok_or_else(|| SelectorError::BadEntity(format!("{subject:?} is not a stream name")))?;
        Ok(Selector {
            entity: Some(entity.into()),
            keys: vec![key.into()],
            ..Selector::default()
        })
    }

    /// Checks and compiles the selector.
    pub fn compile(&self) -> Result<CompiledSelector, SelectorError> {
        if let Some(entity) = &self.entity {
            check_entity_name(entity).map_err(SelectorError::BadEntity)?;
        } else if !self.keys.is_empty() {
            return Err(SelectorError::KeysWithoutEntity);
        }
        let parse = |field: &'static str, p: &Option<String>| {
            p.as_deref()
                .map(|text| {
                    crate::jsonpath::check(text).map_err(|e| SelectorError::TooComplex {
                        field,
                        message: e.to_string(),
                    })?;
                    parse_json_path(text)
                        .map_err(|message| SelectorError::JsonPath { field, message })
                })
                .transpose()
        };
        let mut keys = self.keys.clone();
        keys.sort();
        keys.dedup();
        let mut types = self.types.clone();
        types.sort();
        types.dedup();
        Ok(CompiledSelector {
            source: self.clone(),
            keys,
            types,
            data: parse("data", &self.data)?,
            meta: parse("meta", &self.meta)?,
        })
    }
}

/// Parses an RFC 9535 JSONPath expression. serde_json_path 0.7.2 panics on some malformed
/// input (an expression ending in a string's `\u` escape, e.g. `$['\u`: "entered unreachable
/// code: we do not use streaming parsers"; found by the `selector` fuzz target); the panic is
/// caught and reported as the parse error it is, so that a client's selector cannot take down
/// the request (or the thread) that compiles it.
fn parse_json_path(text: &str) -> Result<JsonPath, String> {
    match std::panic::catch_unwind(|| JsonPath::parse(text)) {
        Ok(parsed) => parsed.map_err(|e| e.to_string()),
        Err(_) => Err(
            "the expression is malformed (it ends inside a string or an escape sequence)".into(),
        ),
    }
}

/// A checked selector, ready to run.
#[derive(Clone, Debug)]
pub struct CompiledSelector {
    source: Selector,
    keys: Vec<String>,
    types: Vec<String>,
    data: Option<JsonPath>,
    meta: Option<JsonPath>,
}

impl CompiledSelector {
    /// The stream keys it is about (sorted, without duplicates; empty: every stream).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The event types it is about (sorted, without duplicates; empty: every type).
    pub fn types(&self) -> &[String] {
        &self.types
    }

    /// The selector it was compiled from.
    pub fn selector(&self) -> &Selector {
        &self.source
    }

    /// The entity it is about, if any.
    pub fn entity(&self) -> Option<&str> {
        self.source.entity.as_deref()
    }

    /// Whether the selector has JSONPath filters (which need the whole event decoded).
    pub fn has_filters(&self) -> bool {
        self.data.is_some() || self.meta.is_some()
    }

    /// Whether type and subject pass the replay part.
    pub fn matches_header(&self, ty: &str, subject: &str) -> bool {
        if !self.types.is_empty() && self.types.binary_search_by(|t| t.as_str().cmp(ty)).is_err() {
            return false;
        }
        if let Some(entity) = self.entity() {
            let Some((e, key)) = subject.split_once('/') else {
                return false;
            };
            if e != entity {
                return false;
            }
            if !self.keys.is_empty() && self.keys.binary_search_by(|k| k.as_str().cmp(key)).is_err()
            {
                return false;
            }
        }
        true
    }

    /// Whether a stored event matches the whole selector.
    pub fn matches(&self, e: &StoredEvent) -> bool {
        self.matches_header(&e.event.ty, &e.event.subject) && self.matches_filters(e)
    }

    /// Whether a stored event passes the JSONPath filters (the replay part unchecked).
    pub fn matches_filters(&self, e: &StoredEvent) -> bool {
        if let Some(path) = &self.data {
            let Some(value) = e.event.data.as_ref().and_then(|d| d.to_json_value()) else {
                return false;
            };
            if path.query(&value).is_empty() {
                return false;
            }
        }
        if let Some(path) = &self.meta
            && path.query(&e.to_json_value()).is_empty()
        {
            return false;
        }
        true
    }
}
