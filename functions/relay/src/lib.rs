//! The relay function (ARCHITECTURE.md §2): the events table's DynamoDB
//! stream is the outbox; every stored event goes onto the EventBridge bus.
//!
//! The library holds the handler ([`handler::handle`]) and the wiring helpers
//! the binary and the tests share; the publishing algorithm itself is
//! [`crm_core::relay`].

pub mod handler;
pub mod image;

pub use crm_aws::lambda::ConfigError;
pub use handler::handle;

use async_trait::async_trait;
use crm_aws::lambda::required;
use crm_core::clock::SystemClock;
use crm_core::ports::{DeadLetterQueue, EventBus};
use crm_core::relay::{Pause, Relay, RetryPolicy};
use std::sync::Arc;
use std::time::Duration;

/// Waits with tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioPause;

#[async_trait]
impl Pause for TokioPause {
    async fn pause(&self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}

/// The relay as the function runs it: the wall clock, the default retry
/// policy and real pauses between attempts.
pub fn relay(bus: Arc<dyn EventBus>, dead_letters: Arc<dyn DeadLetterQueue>) -> Relay {
    Relay::new(bus, dead_letters, Arc::new(SystemClock)).with_retry(RetryPolicy::default(), Arc::new(TokioPause))
}

/// The function's configuration, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `EVENT_BUS_NAME`: the bus to publish to (name or ARN).
    pub event_bus_name: String,
    /// `DEAD_LETTER_QUEUE_URL`: where records that cannot be relayed go.
    pub dead_letter_queue_url: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name| required(&lookup, name);
        Ok(Config {
            event_bus_name: get("EVENT_BUS_NAME")?,
            dead_letter_queue_url: get("DEAD_LETTER_QUEUE_URL")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_needs_both_settings() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(
            Config::from_lookup(env(&[
                ("EVENT_BUS_NAME", "crm"),
                ("DEAD_LETTER_QUEUE_URL", "https://sqs/q")
            ])),
            Ok(Config {
                event_bus_name: "crm".into(),
                dead_letter_queue_url: "https://sqs/q".into()
            })
        );
        assert_eq!(
            Config::from_lookup(env(&[("EVENT_BUS_NAME", "crm")])),
            Err(ConfigError("DEAD_LETTER_QUEUE_URL"))
        );
        assert_eq!(
            Config::from_lookup(env(&[("EVENT_BUS_NAME", " "), ("DEAD_LETTER_QUEUE_URL", "u")])),
            Err(ConfigError("EVENT_BUS_NAME"))
        );
    }
}
