//! Timestamps: RFC 3339 text to and from microseconds since the Unix epoch.

/// Parses an RFC 3339 timestamp to microseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<i64, chrono::ParseError> {
    let t = chrono::DateTime::parse_from_rfc3339(text)?;
    Ok(t.timestamp_micros())
}

/// Formats microseconds since the Unix epoch as RFC 3339 in UTC with microseconds.
pub fn format_time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
