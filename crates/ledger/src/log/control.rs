//! Control records (cluster mode): changes to what the ledger keeps besides events — entity
//! registrations — carried by the replicated log in order with the commit groups, so that
//! every node applies the same registrations at the same point of the history.
//!
//! ```text
//! record := "LOOMCTL1" | JSON of `Control`
//! ```

use loom_core::EntitySpec;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"LOOMCTL1";

/// One change.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Control {
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
        let mut bytes = MAGIC.to_vec();
        serde_json::to_writer(&mut bytes, self).expect("a control record serializes");
        bytes
    }

    /// The control record in `bytes`: `None` when they are not one (a commit group), an
    /// error when they are one but unreadable.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Result<Control, String>> {
        let json = bytes.strip_prefix(MAGIC)?;
        Some(serde_json::from_slice(json).map_err(|e| format!("unreadable control record: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_record_reads_back_and_a_group_is_not_one() {
        let spec: EntitySpec = serde_json::from_str(r#"{"open": true}"#).unwrap();
        let record = Control::PutEntity {
            name: "cart".into(),
            spec,
        }
        .encode();
        let Some(Ok(Control::PutEntity { name, .. })) = Control::decode(&record) else {
            panic!("not read back");
        };
        assert_eq!(name, "cart");
        let group = crate::log::group::tests::group(1, 2);
        assert!(Control::decode(group.bytes()).is_none());
        assert!(Control::decode(b"LOOMCTL1{").unwrap().is_err());
    }
}
