//! JSON Schemas derived from a reducer's types, for `loom_describe` (feature `schemars`).
//!
//! [`module!`](crate::module!) asks, for each reducer, whether its event enum and command type
//! implement `schemars::JsonSchema`; the answer is found at compile time by autoref
//! specialisation on [`Probe`], so types that do not derive it still build and describe no
//! schema. An event enum's schema (serde's externally tagged form, as schemars writes it) is
//! split into one schema per event type, the schema of that type's `data`.

use std::marker::PhantomData;

use serde_json::{Map, Value, json};

/// Stands for the type `T` while the compiler picks [`Derived`] or [`NotDerived`].
#[derive(Debug)]
pub struct Probe<T: ?Sized>(PhantomData<T>);

impl<T: ?Sized> Probe<T> {
    /// The probe.
    pub const NEW: Probe<T> = Probe(PhantomData);
}

/// Picked when `T: schemars::JsonSchema` (and the feature is on): the schema of `T`.
pub trait Derived {
    /// The JSON Schema of the probed type.
    fn json_schema(&self) -> Option<Value>;
}

/// Picked otherwise: no schema.
pub trait NotDerived {
    /// Nothing: the probed type does not derive `JsonSchema`.
    fn json_schema(&self) -> Option<Value> {
        None
    }
}

impl<T: ?Sized> NotDerived for &Probe<T> {}

#[cfg(feature = "schemars")]
impl<T: ?Sized + schemars::JsonSchema> Derived for Probe<T> {
    fn json_schema(&self) -> Option<Value> {
        Some(schemars::schema_for!(T).to_value())
    }
}

/// A reducer's `schemas` in its description: `{"events": {"<type>": {…}}, "command": {…}}`,
/// or `None` when neither type derives a schema. Event types whose data is an empty object
/// (unit variants, `{}` variants) get no schema, so such events may also come without data.
pub fn reducer_schemas(events: Option<Value>, command: Option<Value>) -> Option<Value> {
    if events.is_none() && command.is_none() {
        return None;
    }
    let mut out = Map::new();
    if let Some(e) = events {
        out.insert("events".into(), Value::Object(event_schemas(&e)));
    }
    if let Some(c) = command {
        out.insert("command".into(), c);
    }
    Some(Value::Object(out))
}

/// Splits an externally tagged enum's schema into the schemas of each variant's data.
fn event_schemas(root: &Value) -> Map<String, Value> {
    let defs = root.get("$defs").cloned();
    let variants = root
        .get("oneOf")
        .or_else(|| root.get("anyOf"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| vec![root.clone()]);
    let mut out = Map::new();
    for v in &variants {
        // `{"properties": {"<type>": data}, "required": ["<type>"]}`: a variant with data.
        // Unit variants are strings (`enum` / `const`) and have no data schema.
        let Some(props) = v.get("properties").and_then(Value::as_object) else {
            continue;
        };
        if props.len() != 1 {
            continue;
        }
        let (ty, data) = props.iter().next().expect("one property");
        if is_empty_object(data) {
            continue;
        }
        let mut data = data.clone();
        if let (Some(obj), Some(desc)) = (data.as_object_mut(), v.get("description")) {
            obj.entry("description").or_insert_with(|| desc.clone());
        }
        if let Some(defs) = &defs
            && has_ref(&data)
        {
            data = match data {
                Value::Object(mut obj) => {
                    obj.insert("$defs".into(), defs.clone());
                    Value::Object(obj)
                }
                other => json!({ "allOf": [other], "$defs": defs }),
            };
        }
        out.insert(ty.clone(), data);
    }
    out
}

/// Whether a schema refers to a definition anywhere in it.
fn has_ref(schema: &Value) -> bool {
    match schema {
        Value::Object(obj) => obj.iter().any(|(k, v)| k == "$ref" || has_ref(v)),
        Value::Array(items) => items.iter().any(has_ref),
        _ => false,
    }
}

/// `{"type": "object"}` with nothing else that constrains it.
fn is_empty_object(schema: &Value) -> bool {
    let Some(obj) = schema.as_object() else {
        return schema == &Value::Bool(true);
    };
    obj.iter().all(|(k, v)| {
        (k == "type" && v == "object")
            || matches!(k.as_str(), "description" | "title")
            || (k == "properties" && v.as_object().is_some_and(Map::is_empty))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_become_data_schemas_with_their_definitions() {
        let root = json!({
            "oneOf": [
                { "type": "string", "enum": ["was_archived"] },
                { "description": "added", "type": "object", "required": ["was_added"],
                  "properties": { "was_added": { "type": "object", "required": ["title"],
                      "properties": { "title": { "type": "string" } } } } },
                { "type": "object", "properties": { "was_completed": { "type": "object" } } },
                { "type": "object", "properties": { "had_item_added": { "$ref": "#/$defs/Item" } } }
            ],
            "$defs": { "Item": { "type": "object" } }
        });
        let s = event_schemas(&root);
        assert_eq!(
            s.keys().collect::<Vec<_>>(),
            ["had_item_added", "was_added"]
        );
        assert_eq!(s["was_added"]["description"], "added");
        assert_eq!(s["was_added"]["required"], json!(["title"]));
        assert_eq!(s["had_item_added"]["$ref"], "#/$defs/Item");
        assert_eq!(s["had_item_added"]["$defs"]["Item"]["type"], "object");
        assert!(s["was_added"].get("$defs").is_none());
    }

    #[test]
    fn nothing_derived_is_no_schemas() {
        assert_eq!(reducer_schemas(None, None), None);
        assert_eq!(
            reducer_schemas(None, Some(json!({"type": "object"}))),
            Some(json!({"command": {"type": "object"}}))
        );
    }
}
