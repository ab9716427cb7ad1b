//! The API's clock as this host sees it (docs/semantics.md#clock-skew). The API rejects a signature whose
//! timestamp is more than five minutes from its own clock, and its task times are on that clock
//! too. Every answer carries a `Date` header; its offset from the local clock is the skew, and
//! signing, windows and the baseline use the local clock corrected by it.

use crate::clock::SharedClock;
use std::sync::Mutex;

/// A skew beyond this is logged at warn level (once per change).
pub const WARN_SKEW_SECS: i64 = 60;

/// The `Date` header has whole seconds and the local reading is taken after the answer
/// arrived: estimates of one steady offset differ by a second or so. A smaller move is noise.
const NOISE_SECS: i64 = 1;

/// One endpoint's clock offset, learnt from its answers; shared by the clones of a client.
#[derive(Debug)]
pub struct ApiClock {
    local: SharedClock,
    /// API clock minus local clock, once an answer had a `Date`.
    offset: Mutex<Option<i64>>,
    /// Names the endpoint in the log.
    endpoint: String,
    /// Held by the one request in flight while no offset is known, so that the first answer
    /// teaches the clock before other requests are signed (a host 15 minutes off then costs
    /// one refused request, not one per concurrent caller).
    first: tokio::sync::Mutex<()>,
}

impl ApiClock {
    /// The clock of the API at `endpoint`, read through `local`; no offset until an answer.
    pub fn new(local: SharedClock, endpoint: &str) -> Self {
        ApiClock {
            local,
            offset: Mutex::new(None),
            endpoint: endpoint.to_string(),
            first: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits, while no offset is known, for the request in flight to bring one; the guard
    /// returned (if any) is to be held through this caller's request.
    pub async fn await_first_answer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.offset().is_some() {
            return None;
        }
        let guard = self.first.lock().await;
        self.offset().is_none().then_some(guard)
    }

    /// API clock minus local clock, seconds, once learnt.
    pub fn offset(&self) -> Option<i64> {
        *self.offset.lock().expect("lock")
    }

    /// Now on the API's clock, as far as known (the local clock before any answer).
    pub fn now(&self) -> i64 {
        self.local.now() + self.offset().unwrap_or(0)
    }

    /// Learns from an answer's `Date` header (an HTTP date, `Sun, 06 Nov 1994 08:49:37 GMT`),
    /// read just after it arrived. Returns whether the offset moved (beyond the noise of a
    /// second); a header that is no HTTP date teaches nothing.
    pub fn observe(&self, date: &str) -> bool {
        let Ok(api) = chrono::DateTime::parse_from_rfc2822(date.trim()) else {
            return false;
        };
        let estimate = api.timestamp() - self.local.now();
        // Clocks a second apart agree, as far as whole seconds can tell.
        let estimate = if estimate.abs() <= NOISE_SECS {
            0
        } else {
            estimate
        };
        let mut offset = self.offset.lock().expect("lock");
        let before = *offset;
        if before.is_some_and(|b| (b - estimate).abs() <= NOISE_SECS) {
            return false;
        }
        *offset = Some(estimate);
        drop(offset);
        let was_large = before.is_some_and(|b| b.abs() > WARN_SKEW_SECS);
        if estimate.abs() > WARN_SKEW_SECS {
            tracing::warn!(endpoint = %self.endpoint, skew_seconds = estimate, "the API's clock differs from this host's; signing and windows follow the API's clock (fix NTP on this host if it is this one)");
        } else if was_large {
            tracing::info!(endpoint = %self.endpoint, skew_seconds = estimate, "the API's clock agrees with this host's again");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use std::sync::Arc;

    #[derive(Debug)]
    struct Fixed(i64);

    impl Clock for Fixed {
        fn now(&self) -> i64 {
            self.0
        }
    }

    fn http_date(t: i64) -> String {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string()
    }

    #[test]
    fn the_offset_follows_the_date_header_beyond_a_second_of_noise() {
        let local = 1_800_000_000;
        let c = ApiClock::new(Arc::new(Fixed(local)), "https://cdb.example/");
        assert_eq!(c.offset(), None);
        assert_eq!(c.now(), local);
        assert!(c.observe(&http_date(local - 900)));
        assert_eq!(c.offset(), Some(-900));
        assert_eq!(c.now(), local - 900);
        // The same clock a second later or earlier is noise.
        assert!(!c.observe(&http_date(local - 899)));
        assert!(!c.observe(&http_date(local - 901)));
        assert_eq!(c.offset(), Some(-900));
        // A second either way from this host's clock is no offset.
        let near = ApiClock::new(Arc::new(Fixed(local)), "https://cdb.example/");
        assert!(near.observe(&http_date(local - 1)));
        assert_eq!(near.offset(), Some(0));
        // A real change is taken.
        assert!(c.observe(&http_date(local + 900)));
        assert_eq!(c.offset(), Some(900));
        // Not a date: nothing learnt.
        assert!(!c.observe("yesterday"));
        assert!(!c.observe(""));
        assert_eq!(c.offset(), Some(900));
        assert_eq!(
            http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "the format of RFC 9110"
        );
    }
}
