//! The event registry: per entity, the event types allowed and their JSON Schemas.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Rejection};
use crate::event::Event;

/// Longest entity name, in bytes.
pub const MAX_ENTITY_LEN: usize = 128;

/// One event type of an entity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeSpec {
    /// JSON Schema the event's `data` must satisfy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
}

/// An entity's registration, as `PUT /v1/entities/{entity}` takes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    /// Allowed event types, by CloudEvents `type`.
    #[serde(default)]
    pub events: BTreeMap<String, EventTypeSpec>,
    /// An open entity accepts any type; listed types still have their schemas checked.
    #[serde(default)]
    pub open: bool,
}

/// Checks that `name` can be an entity: 1-128 ASCII letters, digits, `_`, `-` or `.`.
pub fn check_entity_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ENTITY_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid entity name: use 1-{MAX_ENTITY_LEN} ASCII letters, digits, \
             '_', '-' or '.'"
        ))
    }
}

/// An entity with its schemas compiled.
#[derive(Debug)]
pub(crate) struct CompiledEntity {
    pub(crate) spec: EntitySpec,
    validators: HashMap<String, jsonschema::Validator>,
}

impl CompiledEntity {
    pub(crate) fn compile(spec: EntitySpec) -> Result<CompiledEntity, RegistryError> {
        let mut validators = HashMap::new();
        for (ty, t) in &spec.events {
            if ty.is_empty() {
                return Err(RegistryError::InvalidName(
                    "event type names must not be empty".into(),
                ));
            }
            if let Some(schema) = &t.schema {
                let v = jsonschema::validator_for(schema).map_err(|e| {
                    RegistryError::InvalidSchema {
                        ty: ty.clone(),
                        message: e.to_string(),
                    }
                })?;
                validators.insert(ty.clone(), v);
            }
        }
        Ok(CompiledEntity { spec, validators })
    }
}

/// A snapshot of the whole registry. Cheap to clone; replaced as a whole on change.
#[derive(Debug, Default, Clone)]
pub(crate) struct Registry {
    pub(crate) entities: BTreeMap<String, Arc<CompiledEntity>>,
}

impl Registry {
    /// Checks one event against the registry.
    pub(crate) fn check(&self, index: usize, event: &Event) -> Result<(), Rejection> {
        let entity = event.entity();
        let Some(compiled) = self.entities.get(entity) else {
            return Err(Rejection::UnknownEntity {
                index,
                entity: entity.to_owned(),
            });
        };
        if !compiled.spec.open && !compiled.spec.events.contains_key(&event.ty) {
            return Err(Rejection::UnknownType {
                index,
                entity: entity.to_owned(),
                ty: event.ty.clone(),
            });
        }
        if let Some(validator) = compiled.validators.get(&event.ty) {
            let schema_err = |message: String| Rejection::Schema {
                index,
                entity: entity.to_owned(),
                ty: event.ty.clone(),
                message,
            };
            let Some(value) = event.data_json() else {
                return Err(schema_err(
                    "the type has a JSON Schema, so its data must be JSON".into(),
                ));
            };
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .take(5)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    if at.is_empty() {
                        e.to_string()
                    } else {
                        format!("at {at}: {e}")
                    }
                })
                .collect();
            if !errors.is_empty() {
                return Err(schema_err(errors.join("; ")));
            }
        }
        Ok(())
    }
}
