//! Time, as a port: the local runtime can run on a virtual clock.

use chrono::{DateTime, Utc};

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told: for the local runtime's demo and tests.
#[derive(Debug)]
pub struct VirtualClock {
    now: std::sync::Mutex<DateTime<Utc>>,
}

impl VirtualClock {
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        VirtualClock {
            now: std::sync::Mutex::new(start),
        }
    }

    /// Moves time forward by `by` (never backwards) and returns the new now.
    pub fn advance(&self, by: chrono::Duration) -> DateTime<Utc> {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        if by > chrono::Duration::zero() {
            *now += by;
        }
        *now
    }

    /// Jumps to `to` if it is later than now.
    pub fn set(&self, to: DateTime<Utc>) -> DateTime<Utc> {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        if to > *now {
            *now = to;
        }
        *now
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_only_moves_forward() {
        let start = DateTime::parse_from_rfc3339("2026-03-29T00:30:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let clock = VirtualClock::starting_at(start);
        assert_eq!(clock.now(), start);
        assert_eq!(
            clock.advance(chrono::Duration::minutes(90)),
            start + chrono::Duration::minutes(90)
        );
        assert_eq!(
            clock.advance(chrono::Duration::minutes(-10)),
            start + chrono::Duration::minutes(90)
        );
        assert_eq!(clock.set(start), start + chrono::Duration::minutes(90));
    }
}
