//! Jittered exponential backoff for redials and accept errors.

use std::time::Duration;

use rand::Rng;

/// Doubles the delay on each failure up to `max`; each delay is drawn uniformly from
/// [d/2, d] so a fleet restarted together does not redial in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max: max.max(base), current: base }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut prev_cap = Duration::from_millis(100);
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d >= prev_cap / 2 && d <= prev_cap, "{d:?} outside [{:?}, {prev_cap:?}]", prev_cap / 2);
            prev_cap = (prev_cap * 2).min(Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
