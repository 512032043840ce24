//! Reconnect schedule: 1 s doubling to 5 min with ±20 % jitter, back to 1 s after 5 min of health,
//! never giving up (docs/differences.md, C10: OpenClaw gave up after ten restarts over the process
//! lifetime).

use std::time::Duration;

use crate::util::backoff::Schedule;

pub const RECONNECT: Schedule = Schedule {
    first: Duration::from_secs(1),
    max: Duration::from_secs(300),
    jitter: 0.2,
    // A session that stayed up this long resets the schedule.
    healthy: Some(Duration::from_secs(300)),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::backoff::Backoff;

    #[test]
    fn doubles_from_one_second_to_five_minutes_and_stays_there() {
        let mut backoff = Backoff::with_random(RECONNECT, || 0.5);
        let delays: Vec<u64> = (0..12).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_reset_starts_over() {
        let mut low = Backoff::with_random(RECONNECT, || 0.0);
        assert_eq!(low.next_delay(), Duration::from_millis(800));
        let mut high = Backoff::with_random(RECONNECT, || 0.999_999);
        assert!(high.next_delay() < Duration::from_millis(1200));
        high.next_delay();
        high.reset();
        assert!(high.next_delay() < Duration::from_millis(1200));
    }
}
