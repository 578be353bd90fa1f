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
