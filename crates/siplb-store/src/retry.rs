//! Connecting at startup to a database that may not be up yet.

use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::table::TableName;
use crate::target::Target;
use crate::{DEFAULT_CONNECT_TIMEOUT, Store};

/// How [`connect_with_retry`] retries: up to `max_attempts` connections, each limited to
/// `attempt_timeout`, separated by delays that start at `initial_delay` and double up to
/// `max_delay`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Connections tried in all, at least 1 (0 counts as 1).
    pub max_attempts: u32,
    /// Delay after the first failure.
    pub initial_delay: Duration,
    /// Cap on any delay.
    pub max_delay: Duration,
    /// Limit on one connection attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts, delays 0.5 s, 1 s, 2 s, 4 s, then 5 s: about 23 s of waiting, enough
    /// for a database container started alongside siplb.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
            attempt_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based), or `None` after the last one.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts.max(1) {
            return None;
        }
        let doublings = attempt.saturating_sub(1).min(31);
        let delay = self
            .initial_delay
            .checked_mul(1 << doublings)
            .unwrap_or(Duration::MAX);
        Some(delay.min(self.max_delay))
    }
}

/// One failed attempt, as handed to the callback of [`connect_with_retry`].
#[derive(Debug)]
pub struct RetryEvent<'a> {
    /// 1-based number of the attempt that failed.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// Why it failed.
    pub error: &'a StoreError,
    /// When the next attempt starts, or `None` if this was the last.
    pub retry_in: Option<Duration>,
}

impl std::fmt::Display for RetryEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "database attempt {}/{} failed: {}",
            self.attempt, self.max_attempts, self.error
        )?;
        if let Some(delay) = self.retry_in {
            write!(f, "; retrying in {delay:?}")?;
        }
        Ok(())
    }
}

/// [`Store::connect`] with retries, for startup: a database that is down or still starting
/// is tried again per `policy`, and `on_failure` sees every failed attempt (to log it). A bad
/// table name or URL fails at once. When every attempt fails the error is
/// [`StoreError::GaveUp`], carrying the last reason.
pub async fn connect_with_retry(
    url: &str,
    table: &str,
    policy: &RetryPolicy,
    mut on_failure: impl FnMut(&RetryEvent<'_>),
) -> Result<Store, StoreError> {
    let table = TableName::new(table)?;
    let target = Target::parse(url)?;
    let max_attempts = policy.max_attempts.max(1);
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        let error = match Store::connect_target(&target, &table, policy.attempt_timeout).await {
            Ok(store) => return Ok(store),
            Err(error) => error,
        };
        let retry_in = if error.is_retryable() {
            policy.delay_after(attempt)
        } else {
            None
        };
        on_failure(&RetryEvent {
            attempt,
            max_attempts,
            error: &error,
            retry_in,
        });
        match retry_in {
            Some(delay) => tokio::time::sleep(delay).await,
            None if !error.is_retryable() => return Err(error),
            None => {
                return Err(StoreError::GaveUp {
                    attempts: attempt,
                    elapsed: started.elapsed(),
                    last: Box::new(error),
                });
            }
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RetryPolicy;

    #[test]
    fn delays_double_up_to_the_cap_and_stop_after_the_last_attempt() {
        let policy = RetryPolicy {
            max_attempts: 6,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(1),
        };
        let delays: Vec<_> = (1..=6).map(|n| policy.delay_after(n)).collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500), None]);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay_after(1000), Some(policy.max_delay));
        let once = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(once.delay_after(1), None);
    }

    #[test]
    fn default_waits_about_23_seconds() {
        let policy = RetryPolicy::default();
        let total: Duration = (1..policy.max_attempts)
            .filter_map(|n| policy.delay_after(n))
            .sum();
        assert_eq!(total, Duration::from_millis(22_500));
    }
}
