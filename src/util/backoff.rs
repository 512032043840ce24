//! One retry schedule for everything that tries again: delays double from `first` up to `max`,
//! optionally jittered, and start over after an attempt that stayed up long enough. Each user names
//! its own numbers (the gateway's reconnects, the exec agent's restarts, the webhook's retries;
//! README.md and docs/agents.md state them).

use std::time::Duration;

/// The numbers of one schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// The first delay, and the one after a reset.
    pub first: Duration,
    /// Doubling stops here.
    pub max: Duration,
    /// Each delay is scaled by a random factor in `[1 - jitter, 1 + jitter)` (then capped at
    /// `max`); 0 keeps the delays exact.
    pub jitter: f64,
    /// An attempt that stayed up this long starts the schedule over; `None`: it never does.
    pub healthy: Option<Duration>,
}

/// Where one retrying loop is in its schedule.
#[derive(Debug, Clone)]
pub struct Backoff {
    schedule: Schedule,
    next: Duration,
    random: fn() -> f64,
}

impl Backoff {
    pub fn new(schedule: Schedule) -> Self {
        Self::with_random(schedule, fastrand::f64)
    }

    /// `random` returns a value in [0, 1) for the jitter; tests inject a fixed one.
    pub fn with_random(schedule: Schedule, random: fn() -> f64) -> Self {
        Self {
            next: schedule.first,
            schedule,
            random,
        }
    }

    /// The delay before the next attempt; the one after is twice as long, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.schedule.max);
        if self.schedule.jitter == 0.0 {
            return base;
        }
        // Many bridges (or agents) restarted together must not retry in lockstep.
        let factor = 1.0 - self.schedule.jitter + 2.0 * self.schedule.jitter * (self.random)();
        base.mul_f64(factor).min(self.schedule.max)
    }

    /// Back to the first step.
    pub fn reset(&mut self) {
        self.next = self.schedule.first;
    }

    /// The attempt that just ended stayed up for `uptime`: start over when that counts as healthy.
    pub fn record_uptime(&mut self, uptime: Duration) {
        if self.schedule.healthy.is_some_and(|healthy| uptime >= healthy) {
            self.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXACT: Schedule = Schedule {
        first: Duration::from_secs(1),
        max: Duration::from_secs(30),
        jitter: 0.0,
        healthy: Some(Duration::from_secs(60)),
    };

    #[test]
    fn an_unjittered_schedule_doubles_exactly_up_to_its_maximum() {
        let mut backoff = Backoff::with_random(EXACT, || 0.999);
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn only_a_healthy_uptime_starts_the_schedule_over() {
        let mut backoff = Backoff::new(EXACT);
        backoff.next_delay();
        backoff.next_delay();
        backoff.record_uptime(Duration::from_secs(59));
        assert_eq!(backoff.next_delay(), Duration::from_secs(4));
        backoff.record_uptime(Duration::from_secs(60));
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
        let mut never = Backoff::new(Schedule {
            healthy: None,
            ..EXACT
        });
        never.next_delay();
        never.record_uptime(Duration::from_secs(3600));
        assert_eq!(never.next_delay(), Duration::from_secs(2));
    }
}
