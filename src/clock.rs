//! Wall-clock time as an injected dependency, so the simulator and the exporter can share a clock
//! that tests move forward instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time, unix seconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in unix seconds.
    fn now(&self) -> i64;
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock, optionally shifted by an offset that can be moved forward (tests, and the
/// simulator's `/_sim/advance`).
#[derive(Debug, Default)]
pub struct SystemClock {
    offset: AtomicI64,
}

impl SystemClock {
    /// The system clock, unshifted.
    pub fn new() -> Self {
        Self::default()
    }

    /// A shared, unshifted system clock.
    pub fn shared() -> Arc<SystemClock> {
        Arc::new(Self::new())
    }

    /// Moves this clock forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for SystemClock {
    // The one place that reads the system's time (clippy.toml keeps it so).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        real + self.offset.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_now() {
        let c = SystemClock::new();
        let before = c.now();
        c.advance(3600);
        let after = c.now();
        assert!((3600..3700).contains(&(after - before)), "{before} {after}");
    }
}
