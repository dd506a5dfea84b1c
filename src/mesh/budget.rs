//! Budgets a link charges its peer against: a token bucket (sustained rate plus burst) and
//! a sliding count of violations. Pure: time is an argument, so both are unit-tested.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket in bytes (or any unit): `rate` per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket that starts with `initial` tokens (it may exceed `burst` once, e.g. for a
    /// peer's database dump on link-up).
    pub(crate) fn new(rate: u64, burst: u64, initial: u64, now: Instant) -> TokenBucket {
        TokenBucket { rate: rate as f64, burst: burst as f64, tokens: initial.max(burst) as f64, last: now }
    }

    /// Takes `cost` tokens if there are enough; refuses (and takes nothing) otherwise.
    pub(crate) fn take(&mut self, cost: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if self.tokens < self.burst {
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        let cost = cost as f64;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// Counts events within a sliding window (e.g. dropped advertisements per minute).
#[derive(Debug, Clone)]
pub(crate) struct WindowCount {
    window: Duration,
    at: VecDeque<Instant>,
    limit: usize,
}

impl WindowCount {
    pub(crate) fn new(window: Duration, limit: u32) -> WindowCount {
        WindowCount { window, at: VecDeque::new(), limit: limit as usize }
    }

    /// Records one event; true once `limit` events fell within the window.
    pub(crate) fn record(&mut self, now: Instant) -> bool {
        while self.at.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
            self.at.pop_front();
        }
        self.at.push_back(now);
        if self.at.len() > self.limit {
            self.at.pop_front();
        }
        self.at.len() >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 1000, 0, t0);
        assert!(b.take(1000, t0));
        assert!(!b.take(1, t0));
        assert!(b.take(50, t0 + Duration::from_millis(500)));
        assert!(!b.take(60, t0 + Duration::from_millis(500)));
        // Idle time refills only up to the burst.
        assert!(!b.take(1001, t0 + Duration::from_secs(3600)));
        assert!(b.take(1000, t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn an_initial_allowance_above_the_burst_is_spent_once() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 100, 10_000, t0);
        assert!(b.take(9_000, t0));
        assert!(b.take(1_000, t0));
        assert!(!b.take(50, t0));
        assert!(b.take(50, t0 + Duration::from_secs(5)));
    }

    #[test]
    fn the_window_counts_only_recent_events() {
        let t0 = Instant::now();
        let mut w = WindowCount::new(Duration::from_secs(60), 3);
        assert!(!w.record(t0));
        assert!(!w.record(t0 + Duration::from_secs(1)));
        assert!(!w.record(t0 + Duration::from_secs(70)));
        assert!(!w.record(t0 + Duration::from_secs(71)));
        assert!(w.record(t0 + Duration::from_secs(72)));
    }
}
