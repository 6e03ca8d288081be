//! The [`Pause`] port on tokio's timer: the wait between attempts in the
//! functions (the relay's retries, the channel's backoff when a provider
//! throttles). crm-core has no runtime of its own (decision 0059).

use crm_core::relay::Pause;

/// Waits with tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioPause;

#[async_trait::async_trait]
impl Pause for TokioPause {
    async fn pause(&self, delay: std::time::Duration) {
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_waits_at_least_as_long_as_asked() {
        let before = std::time::Instant::now();
        TokioPause.pause(std::time::Duration::from_millis(30)).await;
        assert!(before.elapsed() >= std::time::Duration::from_millis(30));
    }
}
