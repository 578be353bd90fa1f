//! Names: entities, streams (subjects) and what they may contain.

/// Longest entity name, in bytes.
pub const MAX_ENTITY_LEN: usize = 128;

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

/// Splits a subject into `(entity, key)` if it is a valid stream name.
pub fn split_subject(subject: &str) -> Option<(&str, &str)> {
    let (entity, key) = subject.split_once('/')?;
    if check_entity_name(entity).is_err() || key.is_empty() {
        return None;
    }
    Some((entity, key))
}
