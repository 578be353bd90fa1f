//! Stored events as the ABI carries them.

use super::*;

pub(crate) fn extensions_json(e: &StoredEvent) -> String {
    if e.event.extensions.is_empty() {
        String::new()
    } else {
        let map: serde_json::Map<String, serde_json::Value> = e
            .event
            .extensions
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    loom_core::ExtensionValue::String(s) => serde_json::Value::from(s.as_str()),
                    loom_core::ExtensionValue::Bool(b) => serde_json::Value::from(*b),
                    loom_core::ExtensionValue::Integer(i) => serde_json::Value::from(*i),
                };
                (k.clone(), v)
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// The extensions of a view as the ABI carries them (empty text when there are none).
pub fn view_extensions_json(e: &EventView<'_>) -> String {
    if e.extensions.is_empty() {
        String::new()
    } else {
        e.extensions.to_json()
    }
}

/// The ABI view of a stored record; `extensions` from [`view_extensions_json`].
pub fn view_ref<'a>(e: &EventView<'a>, extensions: &'a str) -> EventRef<'a> {
    let (data_kind, data): (DataKind, &[u8]) = match e.data {
        DataRef::None => (DataKind::None, &[]),
        DataRef::Json(j) => (DataKind::Json, j.as_bytes()),
        DataRef::Text(t) => (DataKind::Text, t.as_bytes()),
        DataRef::Binary(b) => (DataKind::Binary, b),
    };
    EventRef {
        position: e.position,
        revision: e.revision,
        recorded_micros: e.recorded_micros,
        ty: e.ty,
        subject: e.subject,
        id: e.id,
        source: e.source,
        time: e.time,
        datacontenttype: e.datacontenttype,
        data_kind,
        data,
        extensions,
    }
}

/// The ABI view of a stored event.
pub fn event_ref<'a>(e: &'a StoredEvent, extensions: &'a str) -> EventRef<'a> {
    let (data_kind, data): (DataKind, &[u8]) = match &e.event.data {
        None => (DataKind::None, &[]),
        Some(Data::Json(raw)) => (DataKind::Json, raw.get().as_bytes()),
        Some(Data::Text(t)) => (DataKind::Text, t.as_bytes()),
        Some(Data::Binary(b)) => (DataKind::Binary, b),
    };
    EventRef {
        position: e.position,
        revision: e.revision,
        recorded_micros: e.recorded_micros,
        ty: &e.event.ty,
        subject: &e.event.subject,
        id: &e.event.id,
        source: &e.event.source,
        time: e.event.time.as_deref(),
        datacontenttype: e.event.datacontenttype.as_deref(),
        data_kind,
        data,
        extensions,
    }
}
