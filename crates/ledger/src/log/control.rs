//! Control records (cluster mode): changes to what the ledger keeps besides events — entity
//! registrations — and the engine's changes (modules, definitions, life-cycle, opaque to the
//! ledger), carried by the replicated log in order with the commit groups, so that every node
//! applies the same changes at the same point of the history.
//!
//! ```text
//! record := "LOOMCTL1" | JSON of a ledger change
//!         | "LOOMENG1" | the engine's bytes
//! ```

use loom_core::EntitySpec;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"LOOMCTL1";
const ENGINE_MAGIC: &[u8; 8] = b"LOOMENG1";

/// One change.
#[derive(Clone, Debug)]
pub(crate) enum Control {
    /// A change of the ledger's own.
    Ledger(LedgerChange),
    /// An engine change, kept for the engine to apply.
    Engine(Vec<u8>),
}

/// A change of what the ledger keeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum LedgerChange {
    /// Register or replace an entity.
    PutEntity {
        /// Its name.
        name: String,
        /// Its registration.
        spec: EntitySpec,
    },
}

impl Control {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Control::Ledger(change) => {
                let mut bytes = MAGIC.to_vec();
                serde_json::to_writer(&mut bytes, change).expect("a control record serializes");
                bytes
            }
            Control::Engine(change) => [ENGINE_MAGIC.as_slice(), change].concat(),
        }
    }

    /// The control record in `bytes`: `None` when they are not one (a commit group), an
    /// error when they are one but unreadable.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Result<Control, String>> {
        if let Some(change) = bytes.strip_prefix(ENGINE_MAGIC) {
            return Some(Ok(Control::Engine(change.to_vec())));
        }
        let json = bytes.strip_prefix(MAGIC)?;
        Some(
            serde_json::from_slice(json)
                .map(Control::Ledger)
                .map_err(|e| format!("unreadable control record: {e}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_record_reads_back_and_a_group_is_not_one() {
        let spec: EntitySpec = serde_json::from_str(r#"{"open": true}"#).unwrap();
        let record = Control::Ledger(LedgerChange::PutEntity {
            name: "cart".into(),
            spec,
        })
        .encode();
        let Some(Ok(Control::Ledger(LedgerChange::PutEntity { name, .. }))) =
            Control::decode(&record)
        else {
            panic!("not read back");
        };
        assert_eq!(name, "cart");
        let engine = Control::Engine(b"\0any bytes".to_vec()).encode();
        let Some(Ok(Control::Engine(bytes))) = Control::decode(&engine) else {
            panic!("not read back");
        };
        assert_eq!(bytes, b"\0any bytes");
        let group = crate::log::group::tests::group(1, 2);
        assert!(Control::decode(group.bytes()).is_none());
        assert!(Control::decode(b"LOOMCTL1{").unwrap().is_err());
    }
}
