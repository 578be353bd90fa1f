//! ABI v2 modules describe themselves (`loom_describe`): their named reducers, what each is,
//! and which events and commands it decodes. The host checks the description against the
//! module's exports when it compiles the module.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;

/// One named reducer of an ABI v2 module, as the module described it and as it exports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ReducerInfo {
    /// Its name: what a definition's `reducer` names.
    pub name: String,
    /// What it is: any of `projection`, `decider`, `query`, `reactor`.
    pub kinds: Vec<String>,
    /// The entity whose streams it folds or decides on, if it says.
    #[serde(default)]
    pub entity: Option<String>,
    /// The event types (CloudEvents `type`) it decodes; `None` when it takes any event.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// The command types a decider decodes, if it says.
    #[serde(default)]
    pub commands: Option<Vec<String>>,
    /// JSON Schemas derived from its types: `{"events": {"<type>": {…}}, "command": {…}}`.
    #[serde(default)]
    pub schemas: Option<serde_json::Value>,
    /// The entry points it exports (from the module, not the description).
    #[serde(skip)]
    pub exports: Vec<Entry>,
}

impl ReducerInfo {
    /// Whether it says it is `kind`.
    pub fn is(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }
}

#[derive(Deserialize)]
struct Description {
    reducers: Vec<ReducerInfo>,
}

/// The entry points each kind needs.
fn needs(kind: &str) -> Option<&'static [Entry]> {
    Some(match kind {
        "projection" => &[Entry::Evolve],
        "decider" => &[Entry::Evolve, Entry::Decide],
        "query" => &[Entry::Evolve, Entry::Query],
        "reactor" => &[Entry::React],
        _ => return None,
    })
}

impl Runtime {
    /// Calls `loom_describe` and checks the description against the exports.
    pub(crate) fn describe(
        &self,
        module: &Module,
        exported: &BTreeMap<String, Vec<Entry>>,
    ) -> Result<Vec<ReducerInfo>, ModuleError> {
        let bad = |m: String| ModuleError::Description(m);
        let payload = match self.call(module, Entry::Describe, &[]) {
            Ok(call::Outcome::Ok(p)) => p,
            Ok(call::Outcome::Rejected(_)) => {
                return Err(bad("loom_describe may not reject".into()));
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let description: Description = serde_json::from_slice(&payload).map_err(|e| {
            bad(format!(
                "loom_describe answered something else than {{\"reducers\": [...]}}: {e}"
            ))
        })?;
        let mut reducers = description.reducers;
        if reducers.is_empty() {
            return Err(ModuleError::NoEntryPoints);
        }
        let mut seen = std::collections::HashSet::new();
        for r in &mut reducers {
            loom_core::check_entity_name(&r.name).map_err(|_| {
                bad(format!(
                    "reducer name {:?} is not 1-128 ASCII letters, digits, '_', '-' or '.'",
                    r.name
                ))
            })?;
            if !seen.insert(r.name.clone()) {
                return Err(bad(format!("reducer {:?} is described twice", r.name)));
            }
            if r.kinds.is_empty() {
                return Err(bad(format!("reducer {:?} has no kind", r.name)));
            }
            let found = exported.get(&r.name).cloned().unwrap_or_default();
            r.exports = Entry::ALL
                .into_iter()
                .filter(|e| found.contains(e))
                .collect();
            for kind in &r.kinds {
                let Some(needed) = needs(kind) else {
                    return Err(bad(format!(
                        "reducer {:?} has kind {kind:?}; the kinds are projection, decider, query and reactor",
                        r.name
                    )));
                };
                for e in needed {
                    if !r.exports.contains(e) {
                        return Err(bad(format!(
                            "reducer {:?} is a {kind} but the module does not export {}",
                            r.name,
                            loom_abi::reducer_export(e.name(), &r.name)
                        )));
                    }
                }
            }
            if r.exports.contains(&Entry::EvolveGroups) && !r.exports.contains(&Entry::Evolve) {
                return Err(bad(format!(
                    "{} needs {} exported too",
                    loom_abi::reducer_export(Entry::EvolveGroups.name(), &r.name),
                    loom_abi::reducer_export(Entry::Evolve.name(), &r.name)
                )));
            }
        }
        Ok(reducers)
    }
}
