//! Reconnect schedule: 1 s doubling to 5 min with ±20 % jitter, back to 1 s after 5 min of health,
//! never giving up (DESIGN §7 fix 10: upstream gave up after ten restarts over the process lifetime).

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_secs(1);
pub const MAX: Duration = Duration::from_secs(300);
/// A session that stayed up this long resets the schedule.
pub const HEALTHY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    jitter: fn() -> f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::with_jitter(fastrand::f64)
    }
}

impl Backoff {
    /// `jitter` returns a value in [0, 1); tests inject a fixed one.
    pub fn with_jitter(jitter: fn() -> f64) -> Self {
        Self {
            next: INITIAL,
            jitter,
        }
    }

    /// The delay before the next attempt; the one after is twice as long, up to `MAX`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX);
        // ±20 %, so many bridges restarted together do not reconnect in lockstep.
        let factor = 0.8 + 0.4 * (self.jitter)();
        base.mul_f64(factor).min(MAX)
    }

    /// Back to the first step (after a healthy session).
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_to_five_minutes_and_stays_there() {
        let mut backoff = Backoff::with_jitter(|| 0.5);
        let delays: Vec<u64> = (0..12).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_reset_starts_over() {
        let mut low = Backoff::with_jitter(|| 0.0);
        assert_eq!(low.next_delay(), Duration::from_millis(800));
        let mut high = Backoff::with_jitter(|| 0.999_999);
        assert!(high.next_delay() < Duration::from_millis(1200));
        high.next_delay();
        high.reset();
        assert!(high.next_delay() < Duration::from_millis(1200));
    }
}
