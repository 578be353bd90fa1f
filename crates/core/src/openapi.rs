//! OpenAPI schemas of the types whose JSON form is written by hand (feature `openapi`).
//!
//! [`Event`] and [`StoredEvent`] serialize as CloudEvents JSON (attributes, extensions as
//! further members, `data` or `data_base64`), and [`ExpectedRevision`] as a keyword or a
//! number, so their schemas are spelled out here, beside the serializers they describe; every
//! other type derives its schema from its fields.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::{PartialSchema, ToSchema};

use crate::append::ExpectedRevision;
use crate::event::{Event, StoredEvent};
use crate::registry::EventTypeSpec;

/// A name of an entity, projection or reactor: 1–128 ASCII letters, digits, `_`, `-`, `.`
/// ([`crate::check_entity_name`]).
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9_.\-]{1,128}$";

/// A stream name, `{entity}/{key}` with a non-empty key ([`crate::split_subject`]).
pub const SUBJECT_PATTERN: &str = r"^[A-Za-z0-9_.\-]{1,128}/.+$";

/// A module id, `sha256:` and 64 lowercase hex digits.
pub const MODULE_ID_PATTERN: &str = r"^sha256:[0-9a-f]{64}$";

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .description(Some(description))
}

fn nonempty(description: &str) -> ObjectBuilder {
    string(description).min_length(Some(1))
}

fn integer(description: &str, minimum: f64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Integer))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(minimum))
        .description(Some(description))
}

/// The members every CloudEvent in JSON form has; `stored` adds the store's attributes.
fn cloud_event(stored: bool) -> ObjectBuilder {
    let mut o = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .property("specversion", string("`1.0`").enum_values(Some(["1.0"])))
        .required("specversion")
        .property(
            "id",
            nonempty("With `source`, the event's identity; unique in the ledger."),
        )
        .required("id")
        .property("source", nonempty("A URI-reference naming the producer."))
        .required("source")
        .property(
            "type",
            nonempty("The event type, registered for the subject's entity."),
        )
        .required("type")
        .property(
            "subject",
            nonempty("The stream, `{entity}/{key}`.").pattern(Some(SUBJECT_PATTERN)),
        )
        .required("subject")
        .property(
            "time",
            string("When it happened (RFC 3339), as the producer said.")
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .property("datacontenttype", nonempty("Media type of `data`."))
        .property(
            "dataschema",
            nonempty("URI of the schema `data` adheres to."),
        )
        .property(
            "data",
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .description(Some(
                    "The payload: JSON when `datacontenttype` is JSON (or absent), else a string.",
                )),
        )
        .property(
            "data_base64",
            string("Binary payload, base64 (instead of `data`)."),
        )
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(SchemaType::new(Type::String)))
                .item(ObjectBuilder::new().schema_type(SchemaType::new(Type::Integer)))
                .item(ObjectBuilder::new().schema_type(SchemaType::new(Type::Boolean)))
                .description(Some(
                    "Extension attributes: names of lowercase ASCII letters and digits, at \
                     most 64 characters; string, integer or boolean values.",
                ))
                .build(),
        )))));
    if stored {
        o = o
            .property(
                "position",
                integer("Global, gapless position, from 1.", 1.0),
            )
            .required("position")
            .property(
                "revision",
                integer("Gapless revision in its stream, from 1.", 1.0),
            )
            .required("revision")
            .property(
                "recordedtime",
                string("Commit time (RFC 3339).")
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .required("recordedtime");
    }
    o
}

impl PartialSchema for Event {
    fn schema() -> RefOr<Schema> {
        cloud_event(false)
            .description(Some(
                "A CloudEvent in the JSON format (structured mode). `subject` names the stream \
                 (`{entity}/{key}`); extension attributes are further members.",
            ))
            .into()
    }
}

impl ToSchema for Event {
    fn name() -> Cow<'static, str> {
        "CloudEvent".into()
    }
}

impl PartialSchema for StoredEvent {
    fn schema() -> RefOr<Schema> {
        cloud_event(true)
            .description(Some(
                "A stored CloudEvent: the appended event plus the store's `position`, \
                 `revision` and `recordedtime` extension attributes.",
            ))
            .into()
    }
}

impl ToSchema for StoredEvent {
    fn name() -> Cow<'static, str> {
        "StoredCloudEvent".into()
    }
}

impl PartialSchema for ExpectedRevision {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                string("No expectation, no stream yet, or at least one event.")
                    .enum_values(Some(["any", "none", "exists"])),
            )
            .item(integer(
                "The stream is exactly at this revision (0: no stream yet).",
                0.0,
            ))
            .description(Some("What an append expects of a stream's revision."))
            .into()
    }
}

impl ToSchema for ExpectedRevision {}

/// The event types of an entity's registration: a map from non-empty type names to their
/// specs.
pub(crate) fn event_types() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .description(Some(
            "Allowed event types, by CloudEvents `type` (non-empty names).",
        ))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::String))
                .min_length(Some(1)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(EventTypeSpec::schema())))
        .into()
}
