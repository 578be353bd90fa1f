//! Names: entities, streams (subjects) and what they may contain.
//!
//! The one grammar for the names of entities, projections and reactors: 1-128 ASCII
//! letters, digits, `_`, `-` or `.`, so that every name is safe as a URL path segment; and,
//! for anything defined from now on, not `.` or `..`, which path-normalising clients turn
//! into another path ([`check_new_name`]). A stream is `{entity}/{key}` with a non-empty
//! `key` of any characters (`/` included).

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

/// Checks a name for something being defined now (an entity, projection or reactor): the
/// grammar of [`check_entity_name`], and not `.` or `..`. (Stored names are only held to
/// [`check_entity_name`], so that data written before this rule still opens.)
pub fn check_new_name(name: &str) -> Result<(), String> {
    check_entity_name(name)?;
    if name == "." || name == ".." {
        return Err(format!(
            "{name:?} is not a valid name: '.' and '..' are path segments that clients \
             normalise away; use letters or digits too"
        ));
    }
    Ok(())
}

/// Splits a subject into `(entity, key)` if it is a valid stream name.
pub fn split_subject(subject: &str) -> Option<(&str, &str)> {
    let (entity, key) = subject.split_once('/')?;
    if check_entity_name(entity).is_err() || key.is_empty() {
        return None;
    }
    Some((entity, key))
}
