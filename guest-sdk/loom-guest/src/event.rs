//! Typed events: `(type, data)` ↔ a serde enum keyed by CloudEvents `type`.

use std::fmt;

use loom_abi::{DataKind, EventRef};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Visitor};
use serde::{Serialize, forward_to_deserialize_any};

/// One event handed to a reducer: the typed `data` plus the CloudEvents attributes and the
/// store-set `position`, `revision` and `recordedtime`.
#[derive(Debug)]
pub struct Event<'a, E> {
    /// The typed event.
    pub data: E,
    raw: EventRef<'a>,
}

impl<'a, E> Event<'a, E> {
    pub(crate) fn new(data: E, raw: EventRef<'a>) -> Self {
        Event { data, raw }
    }
    /// CloudEvents `type`.
    pub fn ty(&self) -> &'a str {
        self.raw.ty
    }
    /// `subject`: the stream, `{entity}/{key}`.
    pub fn subject(&self) -> &'a str {
        self.raw.subject
    }
    /// The entity part of the subject.
    pub fn entity(&self) -> &'a str {
        self.raw.entity()
    }
    /// The key part of the subject.
    pub fn key(&self) -> &'a str {
        self.raw.key()
    }
    /// `id`.
    pub fn id(&self) -> &'a str {
        self.raw.id
    }
    /// `source`.
    pub fn source(&self) -> &'a str {
        self.raw.source
    }
    /// `time`, as the producer sent it.
    pub fn time(&self) -> Option<&'a str> {
        self.raw.time
    }
    /// Global position in the ledger.
    pub fn position(&self) -> u64 {
        self.raw.position
    }
    /// Revision in its stream.
    pub fn revision(&self) -> u64 {
        self.raw.revision
    }
    /// Commit time, microseconds since the Unix epoch.
    pub fn recorded_micros(&self) -> i64 {
        self.raw.recorded_micros
    }
    /// An extension attribute.
    pub fn extension(&self, name: &str) -> Option<serde_json::Value> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(self.raw.extensions).ok()?;
        map.get(name).cloned()
    }
    /// The untyped event.
    pub fn raw(&self) -> &EventRef<'a> {
        &self.raw
    }
}

/// Why an event's data does not fit the typed event.
#[derive(Debug)]
pub enum DecodeEventError {
    /// The type is not a variant of the event enum (the event is skipped by `evolve`).
    UnknownType,
    /// The data does not match the variant.
    Data(String),
}

impl fmt::Display for DecodeEventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeEventError::UnknownType => f.write_str("event type is not handled"),
            DecodeEventError::Data(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DecodeEventError {}

impl de::Error for DecodeEventError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeEventError::Data(msg.to_string())
    }
}

fn json_err(e: serde_json::Error) -> DecodeEventError {
    DecodeEventError::Data(e.to_string())
}

/// Decodes an event's `data` as the variant named by its `type`. `Ok(None)` when the enum has
/// no such variant.
pub fn decode_event<E: DeserializeOwned>(e: &EventRef<'_>) -> Result<Option<E>, DecodeEventError> {
    match E::deserialize(EventDeserializer {
        ty: e.ty,
        kind: e.data_kind,
        data: e.data,
    }) {
        Ok(v) => Ok(Some(v)),
        Err(DecodeEventError::UnknownType) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Why a typed event cannot be written as CloudEvents `type` and `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeEventError(pub String);

impl fmt::Display for EncodeEventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeEventError {}

/// Splits a typed event into CloudEvents `type` and `data` (unit variants get `{}`). The
/// event must be a variant of an enum in serde's default (externally tagged) representation.
pub fn encode_event<E: Serialize>(
    event: &E,
) -> Result<(String, serde_json::Value), EncodeEventError> {
    match serde_json::to_value(event) {
        Ok(serde_json::Value::String(ty)) => Ok((ty, serde_json::json!({}))),
        Ok(serde_json::Value::Object(map)) if map.len() == 1 => {
            let (ty, data) = map.into_iter().next().expect("one entry");
            Ok((ty, data))
        }
        Ok(other) => Err(EncodeEventError(format!(
            "an event must be a variant of an enum whose variants name the event types \
             (serde's default representation), not {other}"
        ))),
        Err(e) => Err(EncodeEventError(format!(
            "the event does not serialize: {e}"
        ))),
    }
}

/// The event types (CloudEvents `type`s) an event enum decodes: its variants' names as serde
/// reads them (after `rename_all` and `rename`). `None` when the type is not an enum, so it
/// takes any event.
pub fn event_types<E: DeserializeOwned>() -> Option<Vec<&'static str>> {
    struct Probe;
    #[derive(Debug)]
    enum Found {
        Variants(&'static [&'static str]),
        NotAnEnum,
    }
    impl fmt::Display for Found {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Found::NotAnEnum
        }
    }
    impl<'de> Deserializer<'de> for Probe {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
            Err(Found::NotAnEnum)
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Found> {
            Err(Found::Variants(variants))
        }
        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }
    match E::deserialize(Probe) {
        Err(Found::Variants(v)) => Some(v.to_vec()),
        _ => None,
    }
}

struct EventDeserializer<'a> {
    ty: &'a str,
    kind: DataKind,
    data: &'a [u8],
}

impl<'a> EventDeserializer<'a> {
    /// A JSON deserializer over the data. The data is checked to be UTF-8 here, in one pass,
    /// so that serde_json reads it as text and does not check each string it meets again:
    /// one long check instead of a short one per key and string value.
    fn json(
        &self,
    ) -> Result<serde_json::Deserializer<serde_json::de::StrRead<'a>>, DecodeEventError> {
        match self.kind {
            DataKind::Json => {
                let text = std::str::from_utf8(self.data).map_err(|e| {
                    DecodeEventError::Data(format!("the JSON data is not UTF-8: {e}"))
                })?;
                Ok(serde_json::Deserializer::from_str(text))
            }
            DataKind::None => Ok(serde_json::Deserializer::from_str("null")),
            DataKind::Text | DataKind::Binary => Err(DecodeEventError::Data(format!(
                "event type {:?} carries non-JSON data",
                self.ty
            ))),
        }
    }
}

impl<'de> Deserializer<'de> for EventDeserializer<'de> {
    type Error = DecodeEventError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        // Not an enum: the whole data is the event (e.g. `serde_json::Value`).
        self.json()?.deserialize_any(visitor).map_err(json_err)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if !variants.contains(&self.ty) {
            return Err(DecodeEventError::UnknownType);
        }
        visitor.visit_enum(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for EventDeserializer<'de> {
    type Error = DecodeEventError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), Self::Error> {
        let de: de::value::BorrowedStrDeserializer<'de, DecodeEventError> =
            de::value::BorrowedStrDeserializer::new(self.ty);
        let v = seed.deserialize(de)?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for EventDeserializer<'de> {
    type Error = DecodeEventError;

    fn unit_variant(self) -> Result<(), Self::Error> {
        // A unit variant ignores whatever data the event has.
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        let mut de = self.json()?;
        seed.deserialize(&mut de).map_err(json_err)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let mut de = self.json()?;
        de.deserialize_tuple(len, visitor).map_err(json_err)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // An event without data reads as `{}`: a variant `WasCheckedOut {}` (or one whose
        // fields all have defaults) takes it.
        let mut de = if self.kind == DataKind::None {
            serde_json::Deserializer::from_str("{}")
        } else {
            self.json()?
        };
        de.deserialize_struct("", fields, visitor).map_err(json_err)
    }
}
