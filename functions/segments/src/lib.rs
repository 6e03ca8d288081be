//! The daily segment re-evaluation and retention fold (see the function's
//! `main`): its settings ([`Settings`]) and one day's run ([`run_daily`]).

pub mod rule_segments;

use chrono::{DateTime, Utc};
use crm_aws::lambda::{required, ConfigError};
use crm_aws::stores::EventStoreTables;
use crm_core::failure::{Classify, FailureKind};
use crm_core::ports::{EventExpiry, EventStore, ReadModelStore};
use crm_core::retention::{fold_all_activity, RetentionError, RetentionPolicy};
use crm_core::segments::{reevaluate_buyers, SegmentError};

/// Why the settings cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub enum SettingsError {
    /// A required variable is unset or blank.
    Missing(ConfigError),
    /// `RETENTION_ACTIVITY_DAYS` or `RETENTION_LEGAL_YEARS` is not a valid policy.
    Retention(RetentionError),
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingsError::Missing(e) => e.fmt(f),
            SettingsError::Retention(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SettingsError {}

impl From<ConfigError> for SettingsError {
    fn from(e: ConfigError) -> Self {
        SettingsError::Missing(e)
    }
}

/// The segments function's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `EVENTS_TABLE`, `KEYS_TABLE`, `DATA_KEYS_KMS_KEY_ID`: the event store
    /// encrypts personal data at rest under the customers' data keys.
    pub event_store: EventStoreTables,
    /// `READ_MODELS_TABLE`.
    pub read_models_table: String,
    /// `RETENTION_ACTIVITY_DAYS`, `RETENTION_LEGAL_YEARS` (defaults 90, 7).
    pub retention: RetentionPolicy,
}

impl Settings {
    /// The variables [`Settings::from_lookup`] reads.
    pub const NAMES: &'static [&'static str] = &[
        "EVENTS_TABLE",
        "KEYS_TABLE",
        "DATA_KEYS_KMS_KEY_ID",
        "READ_MODELS_TABLE",
        crm_core::retention::ACTIVITY_DAYS_ENV,
        crm_core::retention::LEGAL_YEARS_ENV,
    ];

    /// The settings from `lookup` (the environment on Lambda); a missing
    /// required one is an error naming it.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        Ok(Settings {
            event_store: EventStoreTables {
                events_table: required(lookup, "EVENTS_TABLE")?,
                keys_table: required(lookup, "KEYS_TABLE")?,
                data_keys_kms_key_id: required(lookup, "DATA_KEYS_KMS_KEY_ID")?,
            },
            read_models_table: required(lookup, "READ_MODELS_TABLE")?,
            retention: RetentionPolicy::from_lookup(lookup).map_err(SettingsError::Retention)?,
        })
    }
}

/// What one day's run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyRun {
    /// Segment membership events appended.
    pub appended: usize,
    /// Daily activity summaries appended.
    pub summaries: u64,
}

/// Why a day's run must be retried.
#[derive(Debug)]
pub enum DailyError {
    Segments(SegmentError),
    Retention(RetentionError),
}

impl std::fmt::Display for DailyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DailyError::Segments(e) => write!(f, "segment re-evaluation: {e}"),
            DailyError::Retention(e) => write!(f, "activity fold: {e}"),
        }
    }
}

impl std::error::Error for DailyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DailyError::Segments(e) => Some(e),
            DailyError::Retention(e) => Some(e),
        }
    }
}

impl Classify for DailyError {
    fn kind(&self) -> FailureKind {
        match self {
            DailyError::Segments(e) => e.kind(),
            DailyError::Retention(e) => e.kind(),
        }
    }
}

/// One day's run at `now`: every buyer's segments re-evaluated, then every
/// customer's activity older than `retention`'s age folded into daily
/// summaries. Both run even if one fails; the run fails (and the invocation
/// is retried: both are idempotent) if either did.
pub async fn run_daily(
    events: &dyn EventStore,
    stored: &dyn EventExpiry,
    docs: &dyn ReadModelStore,
    retention: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<DailyRun, DailyError> {
    let segments = reevaluate_buyers(events, docs, now).await;
    let folded = fold_all_activity(events, stored, retention, now).await;
    Ok(DailyRun {
        appended: segments.map_err(DailyError::Segments)?,
        summaries: folded.map_err(DailyError::Retention)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    const REQUIRED: &[(&str, &str)] = &[
        ("EVENTS_TABLE", "events"),
        ("KEYS_TABLE", "keys"),
        ("DATA_KEYS_KMS_KEY_ID", "alias/data-keys"),
        ("READ_MODELS_TABLE", "read-models"),
    ];

    #[test]
    fn every_setting_and_the_defaults() {
        let settings = Settings::from_lookup(&lookup(REQUIRED)).unwrap();
        assert_eq!(
            settings.event_store,
            EventStoreTables {
                events_table: "events".into(),
                keys_table: "keys".into(),
                data_keys_kms_key_id: "alias/data-keys".into(),
            }
        );
        assert_eq!(settings.read_models_table, "read-models");
        assert_eq!(settings.retention, RetentionPolicy::new(90, 7).unwrap());
        let longer = Settings::from_lookup(&lookup(&[
            ("EVENTS_TABLE", "events"),
            ("KEYS_TABLE", "keys"),
            ("DATA_KEYS_KMS_KEY_ID", "alias/data-keys"),
            ("READ_MODELS_TABLE", "read-models"),
            ("RETENTION_ACTIVITY_DAYS", "120"),
            ("RETENTION_LEGAL_YEARS", "10"),
        ]))
        .unwrap();
        assert_eq!(longer.retention, RetentionPolicy::new(120, 10).unwrap());
    }

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(
            Settings::from_lookup(&lookup(&REQUIRED[..2])),
            Err(SettingsError::Missing(ConfigError("DATA_KEYS_KMS_KEY_ID")))
        );
        let bad = Settings::from_lookup(&lookup(&[
            ("EVENTS_TABLE", "events"),
            ("KEYS_TABLE", "keys"),
            ("DATA_KEYS_KMS_KEY_ID", "alias/data-keys"),
            ("READ_MODELS_TABLE", "read-models"),
            ("RETENTION_LEGAL_YEARS", "forever"),
        ]));
        assert!(
            matches!(&bad, Err(e @ SettingsError::Retention(_)) if e.to_string().contains("RETENTION_LEGAL_YEARS")),
            "{bad:?}"
        );
    }

    #[test]
    fn a_days_failure_says_its_kind_and_keeps_its_source() {
        use crm_core::ports::StoreError;
        let busy = DailyError::Segments(SegmentError::Store(StoreError::Unavailable("busy".into())));
        assert_eq!(busy.kind(), FailureKind::Retryable);
        assert_eq!(
            std::error::Error::source(&busy).map(|s| s.to_string()).as_deref(),
            Some("event store unavailable: busy")
        );
        let bad = DailyError::Retention(RetentionError::Config("bad".into()));
        assert_eq!(bad.kind(), FailureKind::Poison);
        assert_eq!(
            DailyError::Retention(RetentionError::KeptChanging("activity-c1".into())).kind(),
            FailureKind::Conflict
        );
    }

    #[test]
    fn the_names_are_the_ones_read() {
        let asked = std::cell::RefCell::new(Vec::new());
        let _ = Settings::from_lookup(&|name: &str| {
            asked.borrow_mut().push(name.to_string());
            Some("30".to_string())
        });
        assert_eq!(asked.into_inner(), Settings::NAMES);
    }
}
