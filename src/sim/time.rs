//! Apple epoch nanoseconds ↔ ISO-8601 strings, the only two time formats of chat.db and `imsg`.
//!
//! chat.db stores `message.date` (and `date_read`, `date_delivered`, `message_date`) as nanoseconds
//! since 2001-01-01T00:00:00Z. `imsg` prints UTC with exactly three fractional digits and `Z`, and
//! accepts RFC 3339 with or without fractional seconds on input.

use chrono::{DateTime, SecondsFormat, Utc};

/// Seconds between the Unix epoch and Apple's reference date 2001-01-01T00:00:00Z.
pub const APPLE_EPOCH_OFFSET_SECS: i64 = 978_307_200;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Apple nanoseconds for a point in time (truncated toward zero, like imsg's writer).
pub fn apple_ns_from(t: DateTime<Utc>) -> i64 {
    let secs = t.timestamp() - APPLE_EPOCH_OFFSET_SECS;
    secs.saturating_mul(NANOS_PER_SEC)
        .saturating_add(i64::from(t.timestamp_subsec_nanos()))
}

/// Apple nanoseconds for the current instant.
pub fn apple_ns_now() -> i64 {
    apple_ns_from(Utc::now())
}

/// The point in time of an Apple nanosecond value; NULL dates mean the reference date itself.
pub fn from_apple_ns(ns: Option<i64>) -> DateTime<Utc> {
    let ns = ns.unwrap_or(0);
    let secs = ns.div_euclid(NANOS_PER_SEC) + APPLE_EPOCH_OFFSET_SECS;
    // rem_euclid keeps the nanoseconds in 0..1e9, so the cast cannot truncate.
    let nanos = ns.rem_euclid(NANOS_PER_SEC) as u32;
    DateTime::from_timestamp(secs, nanos).unwrap_or(DateTime::UNIX_EPOCH)
}

/// `2026-05-16T15:24:36.123Z` for an Apple nanosecond value (NULL → 2001-01-01T00:00:00.000Z).
pub fn iso_from_apple_ns(ns: Option<i64>) -> String {
    iso(from_apple_ns(ns))
}

/// `2026-05-16T15:24:36.123Z`: UTC, milliseconds, `Z`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse an RFC 3339 timestamp (fractional seconds optional, any offset) into Apple nanoseconds.
///
/// The error is the message imsg prints: `Invalid ISO8601 date: <value>`.
pub fn parse_iso_to_apple_ns(value: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| apple_ns_from(t.with_timezone(&Utc)))
        .map_err(|_| format!("Invalid ISO8601 date: {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_reference_example_both_ways() {
        // An example instant: 2026-05-16T15:24:36Z.
        let ns = 800_637_876_000_000_000;
        assert_eq!(iso_from_apple_ns(Some(ns)), "2026-05-16T15:24:36.000Z");
        assert_eq!(parse_iso_to_apple_ns("2026-05-16T15:24:36Z"), Ok(ns));
    }

    #[test]
    fn keeps_milliseconds_and_truncates_below_them() {
        let ns = 800_637_876_123_987_654;
        assert_eq!(iso_from_apple_ns(Some(ns)), "2026-05-16T15:24:36.123Z");
        assert_eq!(parse_iso_to_apple_ns("2026-05-16T15:24:36.123987654Z"), Ok(ns));
    }

    #[test]
    fn treats_a_null_date_as_the_reference_date() {
        assert_eq!(iso_from_apple_ns(None), "2001-01-01T00:00:00.000Z");
        assert_eq!(iso_from_apple_ns(Some(0)), "2001-01-01T00:00:00.000Z");
    }

    #[test]
    fn handles_dates_before_the_reference_date() {
        assert_eq!(
            iso_from_apple_ns(Some(-1_500_000_000)),
            "2000-12-31T23:59:58.500Z"
        );
    }

    #[test]
    fn accepts_offsets_and_rejects_other_formats() {
        assert_eq!(
            parse_iso_to_apple_ns("2026-05-16T17:24:36+02:00"),
            Ok(800_637_876_000_000_000)
        );
        assert_eq!(
            parse_iso_to_apple_ns("yesterday"),
            Err("Invalid ISO8601 date: yesterday".to_string())
        );
        assert!(parse_iso_to_apple_ns("2026-05-16").is_err());
    }

    #[test]
    fn round_trips_the_current_time_to_the_millisecond() {
        let now = Utc::now();
        let back = from_apple_ns(Some(apple_ns_from(now)));
        assert_eq!(iso(back), iso(now));
    }
}
