//! The API's naive `YYYY-MM-DD HH:MM:SS` timestamps, read and written in a configured fixed offset.
//!
//! The zone of these strings is undocumented; Beijing time (`+08:00`) is the convention, so it is
//! the default, but it is configuration (`poll.api_timezone`).

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use std::fmt;
use std::str::FromStr;

const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// A fixed UTC offset in which the API's naive timestamps are interpreted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ApiZone(FixedOffset);

impl ApiZone {
    /// Beijing time, the API's convention.
    pub fn beijing() -> Self {
        ApiZone(FixedOffset::east_opt(8 * 3600).expect("valid offset"))
    }

    /// UTC.
    pub fn utc() -> Self {
        ApiZone(FixedOffset::east_opt(0).expect("valid offset"))
    }

    /// Offset east of UTC, in seconds.
    pub fn offset_seconds(&self) -> i32 {
        self.0.local_minus_utc()
    }

    /// Renders unix seconds as the API's naive format in this zone.
    pub fn format(&self, unix: i64) -> String {
        match DateTime::from_timestamp(unix, 0) {
            Some(t) => t.with_timezone(&self.0).format(FORMAT).to_string(),
            None => String::new(),
        }
    }

    /// Parses the API's naive format (or RFC 3339, which carries its own offset) into unix
    /// seconds. `None` for the "unset" forms (`0000-00-00 00:00:00`, empty) and for garbage.
    pub fn parse(&self, s: &str) -> Option<i64> {
        let s = s.trim();
        if s.is_empty() || s.starts_with("0000-00-00") {
            return None;
        }
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, FORMAT) {
            return self
                .0
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.timestamp());
        }
        DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp())
    }
}

impl FromStr for ApiZone {
    type Err = String;

    /// Accepts `+HH:MM`, `-HH:MM`, `Z` and `UTC`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid time zone offset {s:?} (expected +HH:MM, -HH:MM or UTC)");
        if s == "Z" || s.eq_ignore_ascii_case("utc") {
            return Ok(ApiZone::utc());
        }
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if h > 14 || m > 59 {
            return Err(bad());
        }
        FixedOffset::east_opt(sign * (h * 3600 + m * 60))
            .map(ApiZone)
            .ok_or_else(bad)
    }
}

impl fmt::Display for ApiZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for ApiZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiZone({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_round_trip() {
        let z = ApiZone::beijing();
        // 2024-06-10T06:13:20Z is 14:13:20 in Beijing.
        assert_eq!(z.format(1_718_000_000), "2024-06-10 14:13:20");
        assert_eq!(z.parse("2024-06-10 14:13:20"), Some(1_718_000_000));
        assert_eq!(z.parse("2024-06-10T06:13:20Z"), Some(1_718_000_000));
    }

    #[test]
    fn unset_forms_are_none() {
        let z = ApiZone::beijing();
        assert_eq!(z.parse("0000-00-00 00:00:00"), None);
        assert_eq!(z.parse(""), None);
        assert_eq!(z.parse("yesterday"), None);
    }

    #[test]
    fn offsets_parse_and_reject() {
        assert_eq!("+08:00".parse::<ApiZone>().unwrap(), ApiZone::beijing());
        assert_eq!("UTC".parse::<ApiZone>().unwrap(), ApiZone::utc());
        assert_eq!(
            "-05:30".parse::<ApiZone>().unwrap().offset_seconds(),
            -(5 * 3600 + 1800)
        );
        for bad in ["8", "+8:00", "+08", "+15:00", "Asia/Shanghai", ""] {
            assert!(bad.parse::<ApiZone>().is_err(), "{bad} accepted");
        }
    }
}
