//! Suggestions for misspelt names: entities, event types, reducers.

/// ` (did you mean "x"?)` when one of `candidates` is close to `word` (Damerau-Levenshtein
/// distance at most a third of the longer name, and at least 2 allowed), else nothing.
pub(crate) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| {
            let longer = word.chars().count().max(c.chars().count());
            *d > 0 && *d <= (longer / 3).max(2)
        })
        .min()
        .map(|(_, c)| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// Checks that a definition's selector names only what the registry knows: its entity, and
/// its types (of that entity, or of any entity when it names none). An open entity takes any
/// type. A typo would otherwise select nothing, forever, without a word.
pub(crate) fn check_registered(
    ledger: &loom_ledger::Ledger,
    selector: &loom_core::Selector,
) -> Result<(), crate::DefinitionError> {
    let entities = ledger.entities();
    let names: Vec<&str> = entities.keys().map(String::as_str).collect();
    let refuse = |m: String| Err(crate::DefinitionError::Unregistered(m));
    let list = |v: &[&str]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    match &selector.entity {
        Some(entity) => {
            let Some(spec) = entities.get(entity) else {
                return refuse(format!(
                    "the selector names entity {entity:?}, which is not registered{}; registered: {}",
                    did_you_mean(entity, &names),
                    list(&names)
                ));
            };
            if spec.open {
                return Ok(());
            }
            let types: Vec<&str> = spec.events.keys().map(String::as_str).collect();
            for ty in &selector.types {
                if !spec.events.contains_key(ty) {
                    return refuse(format!(
                        "the selector names type {ty:?}, which entity {entity:?} does not register{}; it registers: {}",
                        did_you_mean(ty, &types),
                        list(&types)
                    ));
                }
            }
        }
        None => {
            let all: Vec<&str> = entities
                .values()
                .flat_map(|s| s.events.keys().map(String::as_str))
                .collect();
            let any_open = entities.values().any(|s| s.open);
            for ty in &selector.types {
                if !any_open && !all.contains(&ty.as_str()) {
                    return refuse(format!(
                        "the selector names type {ty:?}, which no entity registers{}",
                        did_you_mean(ty, &all)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks that a decider's entity is registered.
pub(crate) fn check_entity_registered(
    ledger: &loom_ledger::Ledger,
    entity: &str,
) -> Result<(), crate::DefinitionError> {
    let entities = ledger.entities();
    if entities.contains_key(entity) {
        return Ok(());
    }
    let names: Vec<&str> = entities.keys().map(String::as_str).collect();
    Err(crate::DefinitionError::Unregistered(format!(
        "entity {entity:?} is not registered{}; register it first (registered: {})",
        did_you_mean(entity, &names),
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_only_close_names() {
        assert_eq!(
            did_you_mean("boks", &["book", "member"]),
            " (did you mean \"book\"?)"
        );
        assert_eq!(
            did_you_mean("was_lended", &["was_lent", "was_returned"]),
            " (did you mean \"was_lent\"?)"
        );
        assert_eq!(did_you_mean("cart", &["account"]), "");
        assert_eq!(did_you_mean("x", &[]), "");
    }
}
