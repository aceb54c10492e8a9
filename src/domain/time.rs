//! Instants are milliseconds since the Unix epoch (`Millis`): the unit the
//! store's clock (Redis `TIME`) speaks, so scripts and Rust compare the same
//! numbers. RFC 3339 strings exist only at the API edge.

use chrono::{DateTime, SecondsFormat, Utc};

use super::InvalidField;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// This machine's clock. The store's clock decides a sale's window; this one
/// only stamps records and estimates the store's clock between reads.
pub fn system_now() -> Millis {
    Utc::now().timestamp_millis()
}

/// Formats an instant as an RFC 3339 UTC string with millisecond precision.
pub fn format_ms(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp (any offset) into `Millis`.
pub fn parse_rfc3339_ms(field: &'static str, text: &str) -> Result<Millis, InvalidField> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            InvalidField::new(
                field,
                "must be an RFC 3339 timestamp, e.g. 2026-11-11T00:00:00Z",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_utc_millis() {
        let ms = parse_rfc3339_ms("t", "2026-11-11T00:00:00.250Z").expect("valid");
        assert_eq!(format_ms(ms), "2026-11-11T00:00:00.250Z");
    }

    #[test]
    fn accepts_offsets_and_rejects_garbage() {
        let a = parse_rfc3339_ms("t", "2026-11-11T08:00:00+08:00").expect("valid");
        let b = parse_rfc3339_ms("t", "2026-11-11T00:00:00Z").expect("valid");
        assert_eq!(a, b);
        let err = parse_rfc3339_ms("starts_at", "tomorrow").unwrap_err();
        assert_eq!(err.field, "starts_at");
    }
}
