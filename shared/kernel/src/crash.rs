//! Crash points: a test-only hook that aborts the process at chosen steps,
//! as a Lambda crash or timeout does (issue 15, "Proof"): the invocation is
//! lost whole, nothing is answered, the queue gives its messages again after
//! their visibility timeout.
//!
//! [`point`] marks a step between two writes. Without the `crash-points`
//! cargo feature it is an empty function and the calls compile to nothing;
//! release builds (`cargo lambda build --release`) never enable it. With the
//! feature, the first call reads the environment once:
//!
//! - `CRM_CRASH_RATE`: the probability (0 to 1) that a pass through a point
//!   aborts; unset or 0, nothing ever crashes;
//! - `CRM_CRASH_POINTS`: the points that may crash, comma-separated names of
//!   [`POINTS`]; unset, empty or `all`: every point;
//! - `CRM_CRASH_SEED`: the seed of the draws (default 0), mixed with the
//!   execution environment's name (`AWS_LAMBDA_LOG_STREAM_NAME`, one per
//!   start of the function; the process id without it), so that a function
//!   started again after a crash does not crash at the same step of its
//!   first invocation again, and a run with the same seed and the same
//!   order of invocations crashes at the same steps.
//!
//! A crash logs the point (`crash_point` at level ERROR, the harness counts
//! them in the function logs), then calls [`std::process::abort`]. An
//! invalid setting is logged and crashes nothing.

/// After the channel appended `MessageClaimed`, before the provider call.
pub const CHANNEL_AFTER_CLAIM: &str = "channel-after-claim";
/// After the provider took the message, before `MessageSent` is appended.
pub const CHANNEL_AFTER_SEND: &str = "channel-after-send";
/// After a journey appended its instance events, before their timers are set.
pub const JOURNEY_AFTER_APPEND: &str = "journey-after-append";
/// After a journey set its timers, before its index is written.
pub const JOURNEY_AFTER_TIMER: &str = "journey-after-timer";
/// After a consumer group committed its page, before the batch is answered
/// (the queue's messages are not deleted).
pub const PAGE_AFTER_COMMIT: &str = "page-after-commit";

/// Every crash point, by name.
pub const POINTS: &[&str] = &[
    CHANNEL_AFTER_CLAIM,
    CHANNEL_AFTER_SEND,
    JOURNEY_AFTER_APPEND,
    JOURNEY_AFTER_TIMER,
    PAGE_AFTER_COMMIT,
];

/// Aborts the process here with the configured probability, if this build
/// has the `crash-points` feature; does nothing otherwise.
#[inline(always)]
pub fn point(name: &'static str) {
    #[cfg(feature = "crash-points")]
    enabled::point(name);
    #[cfg(not(feature = "crash-points"))]
    let _ = name;
}

/// A crash setting that cannot be used.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("CRM_CRASH_RATE {0:?} is not a number from 0 to 1")]
    Rate(String),
    #[error("CRM_CRASH_SEED {0:?} is not an unsigned integer")]
    Seed(String),
    #[error("CRM_CRASH_POINTS names {0:?}, which is no crash point (known: {POINTS:?})")]
    Point(String),
}

/// Where and how often to crash, as the environment says.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashPlan {
    /// The points that may crash; `None`: every point.
    pub points: Option<Vec<&'static str>>,
    /// Probability of a crash per pass through a chosen point.
    pub rate: f64,
    /// The seed of the draws.
    pub seed: u64,
}

impl CrashPlan {
    /// The plan from the three settings as read (`None`: unset). No rate, or
    /// a rate of 0, is no plan.
    pub fn parse(points: Option<&str>, rate: Option<&str>, seed: Option<&str>) -> Result<Option<Self>, PlanError> {
        let rate = match rate.map(str::trim).filter(|r| !r.is_empty()) {
            None => return Ok(None),
            Some(text) => match text.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => return Err(PlanError::Rate(text.to_string())),
            },
        };
        if rate == 0.0 {
            return Ok(None);
        }
        let seed = match seed.map(str::trim).filter(|s| !s.is_empty()) {
            None => 0,
            Some(text) => text.parse::<u64>().map_err(|_| PlanError::Seed(text.to_string()))?,
        };
        let points = match points.map(str::trim).filter(|p| !p.is_empty() && *p != "all") {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        POINTS
                            .iter()
                            .copied()
                            .find(|known| *known == p)
                            .ok_or_else(|| PlanError::Point(p.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Some(CrashPlan { points, rate, seed }))
    }

    /// Whether a pass through `point` whose draw is `draw` (uniform in
    /// [0, 1)) crashes.
    pub fn crashes(&self, point: &str, draw: f64) -> bool {
        let chosen = self.points.as_ref().is_none_or(|points| points.contains(&point));
        chosen && draw < self.rate
    }
}

/// A seed from an execution environment's name (FNV-1a): the same name, the
/// same seed, whatever the platform.
pub fn environment_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `n`-th draw (uniform in [0, 1)) of the sequence of `seed`: splitmix64.
pub fn draw(seed: u64, n: u64) -> f64 {
    let mut z = seed.wrapping_add((n.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // The top 53 bits, as an f64 in [0, 1).
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(feature = "crash-points")]
mod enabled {
    use super::{draw, CrashPlan};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static PLAN: OnceLock<Option<(CrashPlan, u64)>> = OnceLock::new();
    static DRAWS: AtomicU64 = AtomicU64::new(0);

    fn plan() -> Option<&'static (CrashPlan, u64)> {
        PLAN.get_or_init(|| {
            let var = |name: &str| std::env::var(name).ok();
            match CrashPlan::parse(
                var("CRM_CRASH_POINTS").as_deref(),
                var("CRM_CRASH_RATE").as_deref(),
                var("CRM_CRASH_SEED").as_deref(),
            ) {
                Ok(Some(plan)) => {
                    let environment =
                        std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_else(|_| std::process::id().to_string());
                    let seed = plan.seed ^ super::environment_seed(&environment);
                    tracing::warn!(?plan.points, plan.rate, plan.seed, "crash points armed (a test build)");
                    Some((plan, seed))
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(error = %e, "crash points not armed");
                    None
                }
            }
        })
        .as_ref()
    }

    pub(super) fn point(name: &'static str) {
        let Some((plan, seed)) = plan() else {
            return;
        };
        let n = DRAWS.fetch_add(1, Ordering::Relaxed);
        if plan.crashes(name, draw(*seed, n)) {
            tracing::error!(crash_point = name, "crash point reached: aborting the process");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rate_or_a_zero_rate_is_no_plan() {
        assert_eq!(CrashPlan::parse(Some("all"), None, Some("7")), Ok(None));
        assert_eq!(CrashPlan::parse(None, Some(" "), None), Ok(None));
        assert_eq!(CrashPlan::parse(None, Some("0"), None), Ok(None));
    }

    #[test]
    fn unset_empty_or_all_points_mean_every_point() {
        for points in [None, Some(""), Some("all")] {
            let plan = CrashPlan::parse(points, Some("0.05"), None).unwrap().unwrap();
            assert_eq!(plan.points, None);
            assert_eq!(plan.rate, 0.05);
            assert_eq!(plan.seed, 0);
            assert!(POINTS.iter().all(|p| plan.crashes(p, 0.01)));
        }
    }

    #[test]
    fn a_list_of_points_chooses_them_only() {
        let plan = CrashPlan::parse(
            Some("channel-after-claim, journey-after-append"),
            Some("0.5"),
            Some("7"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(plan.points, Some(vec![CHANNEL_AFTER_CLAIM, JOURNEY_AFTER_APPEND]));
        assert_eq!(plan.seed, 7);
        assert!(plan.crashes(CHANNEL_AFTER_CLAIM, 0.49));
        assert!(!plan.crashes(CHANNEL_AFTER_CLAIM, 0.5));
        assert!(!plan.crashes(JOURNEY_AFTER_TIMER, 0.0));
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert_eq!(
            CrashPlan::parse(None, Some("1.5"), None),
            Err(PlanError::Rate("1.5".into()))
        );
        assert_eq!(
            CrashPlan::parse(None, Some("often"), None),
            Err(PlanError::Rate("often".into()))
        );
        assert_eq!(
            CrashPlan::parse(None, Some("0.1"), Some("-1")),
            Err(PlanError::Seed("-1".into()))
        );
        assert_eq!(
            CrashPlan::parse(Some("channel-after-claim,nowhere"), Some("0.1"), None),
            Err(PlanError::Point("nowhere".into()))
        );
    }

    #[test]
    fn a_rate_of_one_always_crashes() {
        let plan = CrashPlan::parse(None, Some("1"), None).unwrap().unwrap();
        assert!((0..1000).all(|n| plan.crashes(PAGE_AFTER_COMMIT, draw(3, n))));
    }

    #[test]
    fn draws_are_uniform_in_the_unit_interval_and_follow_the_seed() {
        let draws: Vec<f64> = (0..10_000).map(|n| draw(7, n)).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below = draws.iter().filter(|d| **d < 0.05).count();
        // 500 expected; 4 standard deviations (about 22 each) either side.
        assert!((410..=590).contains(&below), "{below} of 10000 draws below 0.05");
        assert_eq!(draw(7, 42), draw(7, 42));
        assert_ne!(draw(7, 42), draw(8, 42));
    }

    #[test]
    fn each_execution_environment_draws_its_own_sequence() {
        assert_eq!(environment_seed("campaign/1"), environment_seed("campaign/1"));
        assert_ne!(environment_seed("campaign/1"), environment_seed("campaign/2"));
        assert_ne!(environment_seed("campaign/1"), environment_seed("channel/1"));
    }
}
