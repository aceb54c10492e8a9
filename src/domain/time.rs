//! Instants are milliseconds since the Unix epoch (`Millis`): the unit the
//! store's clock (Redis `TIME`) speaks, so scripts and Rust compare the same
//! numbers. RFC 3339 strings exist only at the API edge ([`Timestamp`]).

use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

use super::InvalidField;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// This machine's clock. The store's clock decides a sale's window; this one
/// only stamps records and estimates the store's clock between reads.
pub fn system_now() -> Millis {
    Utc::now().timestamp_millis()
}

/// An instant as the API writes it: RFC 3339 in UTC with milliseconds
/// (`2026-11-11T00:00:00.250Z`), as a JSON string or in text. Written where
/// it is shown, from a buffer on the stack: every order's answer carries
/// two, which chrono's `to_rfc3339_opts` would build as two `String`s,
/// character by character. chrono still does the calendar, and writes the
/// rare year outside 0 to 9999 (with its sign, as RFC 3339 has no such
/// years). An instant outside chrono's range reads as its earliest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub Millis);

impl Timestamp {
    /// Hands `show` the instant's text.
    fn with_text<R>(self, show: impl FnOnce(&str) -> R) -> R {
        let time = DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
            .naive_utc();
        let year = u32::try_from(time.year()).ok().filter(|year| *year <= 9999);
        let Some(year) = year else {
            return show(&time.and_utc().to_rfc3339_opts(SecondsFormat::Millis, true));
        };
        let mut text = *b"0000-00-00T00:00:00.000Z";
        for (at, width, value) in [
            (0, 4, year),
            (5, 2, time.month()),
            (8, 2, time.day()),
            (11, 2, time.hour()),
            (14, 2, time.minute()),
            (17, 2, time.second()),
            (20, 3, time.nanosecond() / 1_000_000),
        ] {
            let mut value = value;
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        show(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|text| f.pad(text))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_text(|text| serializer.serialize_str(text))
    }
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
        assert_eq!(Timestamp(ms).to_string(), "2026-11-11T00:00:00.250Z");
        assert_eq!(
            serde_json::to_string(&Timestamp(ms)).expect("json"),
            r#""2026-11-11T00:00:00.250Z""#
        );
    }

    /// What chrono writes for the same instant.
    fn chrono_text(ms: Millis) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    #[test]
    fn writes_what_chrono_writes_at_the_edges() {
        let edges = [
            0,
            -1,
            1,
            951_782_400_000,     // 2000-02-29
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            253_402_300_800_000, // year 10000
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001, // year -1
            Millis::MAX,
            Millis::MIN,
        ];
        for ms in edges {
            assert_eq!(Timestamp(ms).to_string(), chrono_text(ms), "{ms}");
        }
    }

    proptest::proptest! {
        #[test]
        fn writes_what_chrono_writes(ms in -70_000_000_000_000i64..300_000_000_000_000) {
            proptest::prop_assert_eq!(Timestamp(ms).to_string(), chrono_text(ms));
        }
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
