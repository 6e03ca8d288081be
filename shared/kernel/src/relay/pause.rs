//! How often and how patiently the relay sends again, and the `Pause` port
//! it waits through.

use async_trait::async_trait;
use std::time::Duration;

/// How often and how patiently calls and entries the bus refused are sent
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls per entry in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The pause after the first failed attempt; it doubles after each.
    pub base_delay: Duration,
    /// The longest pause.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Waits between attempts (a runtime's sleep; a no-op in tests).
#[async_trait]
pub trait Pause: Send + Sync {
    async fn pause(&self, delay: Duration);
}

/// Retries at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPause;

#[async_trait]
impl Pause for NoPause {
    async fn pause(&self, _delay: Duration) {}
}

/// Waits with tokio's timer: the relay's retries and the channel's backoff
/// when a provider throttles, in the functions and the local runtime.
#[cfg(feature = "tokio-pause")]
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioPause;

#[cfg(feature = "tokio-pause")]
#[async_trait]
impl Pause for TokioPause {
    async fn pause(&self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}

#[cfg(all(test, feature = "tokio-pause"))]
mod tokio_pause_tests {
    use super::*;

    #[tokio::test]
    async fn it_waits_at_least_as_long_as_asked() {
        let before = std::time::Instant::now();
        TokioPause.pause(Duration::from_millis(30)).await;
        assert!(before.elapsed() >= Duration::from_millis(30));
    }
}
