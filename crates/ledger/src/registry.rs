//! The event registry: per entity, the event types allowed and their JSON Schemas.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{RegistryError, Rejection};
use loom_core::{EntitySpec, Event, Origin};

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
                // Formats are assertions here (`date`, `date-time`, `email`, `uri`, `uuid`, …),
                // not only annotations as JSON Schema 2019-09 and later make them by default.
                let v = jsonschema::options()
                    .should_validate_formats(true)
                    .build(schema)
                    .map_err(|e| RegistryError::InvalidSchema {
                        ty: ty.clone(),
                        message: e.to_string(),
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
    pub(crate) fn check(
        &self,
        index: usize,
        event: &Event,
        origin: &Origin,
    ) -> Result<(), Rejection> {
        let entity = event.entity();
        let Some(compiled) = self.entities.get(entity) else {
            return Err(Rejection::UnknownEntity {
                index,
                entity: entity.to_owned(),
            });
        };
        if compiled.spec.commands_only {
            let allowed = match origin {
                Origin::Decider(e) => e == entity,
                Origin::Reactor(r) => compiled.spec.reactors.contains(r),
                _ => false,
            };
            if !allowed {
                return Err(Rejection::CommandsOnly {
                    index,
                    entity: entity.to_owned(),
                });
            }
        }
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
