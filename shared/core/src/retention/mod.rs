//! Retention (issue 7, "Retention"; docs/decisions/0021-retention.md):
//! activity events older than a configurable age (default
//! 90 days) are folded, per customer and UTC day, into one
//! `ActivityDaySummarized` event appended to the same `activity-<id>`
//! stream, and then expire (DynamoDB TTL on AWS, [`sweep`] locally). Orders,
//! consent and erasure proof are kept for a legal period (default 7 years).
//!
//! The fold is idempotent: a day is summarized once (the stream is read
//! first and the summaries are appended with `ExpectedVersion::Exactly`
//! of the version read, through the command path ([`RetentionFold`]), so two
//! folds racing conflict and the loser finds the days already summarized), and each summary's event id is derived
//! from the stream and the day. The summary holds no personal data: counts
//! by event type, product ids and category slugs with their view counts,
//! logins and the last login time, the number of sessions.

use crate::aggregate::{AggregateError, Executed};
use crate::customer::activity::{activity_stream_id, max_lateness, ACTIVITY_EVENT_TYPES};
use crate::event::{Actor, CommandMeta};
use crate::event::{DomainEvent, EventCodecError, EventEnvelope};
use crate::failure::{Classify, FailureKind};
use crate::ports::{EventExpiry, EventStore, StoreError};
use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod fold;
#[cfg(test)]
mod tests;

pub use fold::{ActivityDays, FoldRefusal, RetentionFold, SummarizeDaysBefore};

pub use crate::customer::day_summary::{ActivityDaySummarized, ACTIVITY_DAY_SUMMARIZED};

/// Default age after which activity is folded and expires.
pub const DEFAULT_ACTIVITY_DAYS: u32 = 90;
/// Default legal period for orders, consent and erasure proof.
pub const DEFAULT_LEGAL_YEARS: u32 = 7;
/// Environment variable (functions) and CLI env (crm-local): the activity age in days.
pub const ACTIVITY_DAYS_ENV: &str = "RETENTION_ACTIVITY_DAYS";
/// Environment variable (functions) and CLI env (crm-local): the legal period in years.
pub const LEGAL_YEARS_ENV: &str = "RETENTION_LEGAL_YEARS";

/// Time between the end of the activity age and the DynamoDB TTL: the
/// daily fold has this long (seven daily runs) to summarize a day before
/// its raw events may be deleted.
pub fn ttl_margin() -> Duration {
    Duration::days(7)
}

const PAGE: usize = 500;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetentionError {
    #[error("retention configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] EventCodecError),
    #[error("folding {stream_id}: {source}")]
    Fold {
        stream_id: String,
        #[source]
        source: AggregateError<FoldRefusal>,
    },
    #[error("{0}: the stream kept changing while it was folded")]
    KeptChanging(String),
}

impl Classify for RetentionError {
    fn kind(&self) -> FailureKind {
        match self {
            RetentionError::Config(_) | RetentionError::Codec(_) => FailureKind::Poison,
            RetentionError::Store(e) => e.kind(),
            RetentionError::Fold { source, .. } => source.kind(),
            RetentionError::KeptChanging(_) => FailureKind::Conflict,
        }
    }
}

/// How long what is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Activity older than this many days is folded into daily summaries, then expires.
    pub activity_days: u32,
    /// Orders, consent and erasure proof are kept this many years.
    pub legal_years: u32,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            activity_days: DEFAULT_ACTIVITY_DAYS,
            legal_years: DEFAULT_LEGAL_YEARS,
        }
    }
}

impl RetentionPolicy {
    /// The shortest activity age: a folded day must be beyond the lateness
    /// window, or a late event could arrive for a day already summarized.
    pub fn min_activity_days() -> u32 {
        max_lateness().num_days() as u32 + 1
    }

    /// A checked policy.
    pub fn new(activity_days: u32, legal_years: u32) -> Result<Self, RetentionError> {
        if activity_days < Self::min_activity_days() {
            return Err(RetentionError::Config(format!(
                "the activity age must be at least {} days (activity may arrive {} days late), not {activity_days}",
                Self::min_activity_days(),
                max_lateness().num_days()
            )));
        }
        if !(1..=100).contains(&legal_years) {
            return Err(RetentionError::Config(format!(
                "the legal period must be 1 to 100 years, not {legal_years}"
            )));
        }
        Ok(RetentionPolicy {
            activity_days,
            legal_years,
        })
    }

    /// Reads [`ACTIVITY_DAYS_ENV`] and [`LEGAL_YEARS_ENV`] through `lookup`
    /// (unset or empty: the defaults).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, RetentionError> {
        let number = |name: &str, default: u32| -> Result<u32, RetentionError> {
            match lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| RetentionError::Config(format!("{name} must be a whole number, not {v:?}"))),
            }
        };
        Self::new(
            number(ACTIVITY_DAYS_ENV, DEFAULT_ACTIVITY_DAYS)?,
            number(LEGAL_YEARS_ENV, DEFAULT_LEGAL_YEARS)?,
        )
    }

    pub fn activity_age(&self) -> Duration {
        Duration::days(i64::from(self.activity_days))
    }

    /// Days before this one (UTC) are older than the activity age as a whole: they are folded.
    pub fn first_kept_day(&self, now: DateTime<Utc>) -> NaiveDate {
        (now - self.activity_age()).date_naive()
    }

    /// Orders, consent and erasure proof whose newest event is older than this may go.
    pub fn legal_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_sub_months(Months::new(self.legal_years * 12))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// When the events of a stream kept for the legal period may go, its
    /// newest event having occurred at `newest`: the legal period after it,
    /// rounded up to the first instant of the next UTC month (decision 0078).
    /// The rounding lets the events of one order written within a month
    /// share one expiry, so the DynamoDB store rarely rewrites earlier items;
    /// DynamoDB itself deletes days after the expiry anyway. The local
    /// [`sweep`] deletes on the same instant.
    pub fn legal_expires_at(&self, newest: DateTime<Utc>) -> DateTime<Utc> {
        let Some(end) = newest.checked_add_months(Months::new(self.legal_years * 12)) else {
            return DateTime::<Utc>::MAX_UTC;
        };
        NaiveDate::from_ymd_opt(end.year(), end.month(), 1)
            .and_then(|first| first.checked_add_months(Months::new(1)))
            .and_then(|next| next.and_hms_opt(0, 0, 0))
            .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc())
    }

    /// When DynamoDB may delete an activity event that occurred at `occurred_at`
    /// (epoch seconds of occurred_at + the activity age + [`ttl_margin`]).
    pub fn activity_expires_at(&self, occurred_at: DateTime<Utc>) -> DateTime<Utc> {
        occurred_at + self.activity_age() + ttl_margin()
    }
}

/// The events that put a customer stream on the legal period: once the
/// erasure is requested, the stream is proof only (decision 0078).
pub const ERASURE_EVENT_TYPES: &[&str] = &["CustomerErasureRequested", "CustomerErased"];

/// Whether the events of `stream_id` expire, all together, the legal period
/// after its newest event ([`RetentionPolicy::legal_expires_at`]; decision
/// 0078): an order stream always; a customer stream once it holds the
/// customer's erasure (`erased`). Every other stream is kept (activity has
/// its own expiry, [`is_activity`]).
pub fn expires_after_legal_period(stream_id: &str, erased: bool) -> bool {
    stream_id.starts_with("order-") || (stream_id.starts_with("customer-") && erased)
}

/// Whether `event_type` is raw activity (what expires).
pub fn is_activity(event_type: &str) -> bool {
    ACTIVITY_EVENT_TYPES.contains(&event_type)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum RetentionEvent {
    ActivityDaySummarized(ActivityDaySummarized),
}

impl DomainEvent for RetentionEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// The summary's event id: the same for the same stream and day, always.
pub fn summary_event_id(stream_id: &str, day: NaiveDate) -> uuid::Uuid {
    let digest = Sha256::digest(format!("crm:{ACTIVITY_DAY_SUMMARIZED}:{stream_id}:{day}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Every event of a stream, in order.
pub async fn read_whole_stream(store: &dyn EventStore, stream_id: &str) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut out: Vec<EventEnvelope> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.version);
        let page = store.read_stream(stream_id, after, PAGE).await?;
        let done = page.len() < PAGE;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// What folding one activity stream did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fold {
    /// Summaries appended now.
    pub appended: Vec<NaiveDate>,
    /// Raw activity events whose day is summarized (now or before): they may expire.
    pub expirable: Vec<u64>,
}

/// Folds `customer_id`'s activity older than the policy's age into daily
/// summaries (days already summarized are skipped), and says which raw
/// events those summaries cover: [`RetentionFold`] through the command
/// path, one append of at most 50 summaries a round, until a round has
/// nothing left to summarize.
pub async fn fold_activity(
    store: &dyn EventStore,
    customer_id: &str,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<Fold, RetentionError> {
    let service = fold::service(store, now);
    let command = fold::command(policy, now);
    let meta = CommandMeta::new(Actor::system("retention"));
    let no_answer = |_: &ActivityDays, _: &[EventEnvelope]| (200, serde_json::Value::Null);
    let mut appended = Vec::new();
    loop {
        match service
            .execute(customer_id, &command, &(), &meta, None, &no_answer)
            .await
        {
            Ok(Executed::Applied { state, events, .. }) => {
                if events.is_empty() {
                    return Ok(Fold {
                        appended,
                        expirable: state.versions_before(command.first_kept),
                    });
                }
                for e in &events {
                    appended.push(ActivityDaySummarized::from_envelope(e)?.day);
                }
            }
            Ok(Executed::Replayed { .. }) => return Err(unreachable_receipt(customer_id)),
            Err(AggregateError::Rejected(FoldRefusal::NoActivity)) => return Ok(Fold::default()),
            Err(AggregateError::Contended { .. }) => {
                return Err(RetentionError::KeptChanging(activity_stream_id(customer_id)))
            }
            Err(source) => {
                return Err(RetentionError::Fold {
                    stream_id: activity_stream_id(customer_id),
                    source,
                })
            }
        }
    }
}

/// A fold asks for no receipt, so none can answer it.
fn unreachable_receipt(customer_id: &str) -> RetentionError {
    RetentionError::Store(StoreError::Failed(format!(
        "{}: answered from a receipt the fold never asked for",
        activity_stream_id(customer_id)
    )))
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub activity_streams: u64,
    pub summaries_appended: u64,
    pub activity_events_deleted: u64,
    /// Order streams and erased customers' streams past the legal period, deleted whole.
    pub legal_streams_deleted: u64,
    pub legal_events_deleted: u64,
}

async fn each_stream(expiry: &dyn EventExpiry, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let page = expiry.streams(prefix, out.last().map(String::as_str), PAGE).await?;
        let done = page.len() < PAGE;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// Folds every customer's activity older than the age into daily summaries
/// and deletes nothing: on AWS the table's TTL expires the raw events
/// (`RetentionPolicy::activity_expires_at`, which leaves [`ttl_margin`] for
/// this daily fold). Returns how many summaries were appended.
pub async fn fold_all_activity(
    store: &dyn EventStore,
    streams: &dyn EventExpiry,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<u64, RetentionError> {
    let mut appended = 0;
    for stream in each_stream(streams, "activity-").await? {
        if let Some(customer_id) = stream.strip_prefix("activity-") {
            appended += fold_activity(store, customer_id, policy, now).await?.appended.len() as u64;
        }
    }
    Ok(appended)
}

/// Folds every customer's old activity, then deletes the raw events whose
/// day is summarized ([`fold_activity`] first, so never before the summary
/// is stored); deletes order streams and erased customers' streams whose
/// newest event is older than the legal period. Consent lives in the
/// customer stream: a customer who was not erased keeps it.
pub async fn sweep(
    store: &dyn EventStore,
    expiry: &dyn EventExpiry,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<SweepReport, RetentionError> {
    let mut report = SweepReport::default();
    for stream in each_stream(expiry, "activity-").await? {
        let Some(customer_id) = stream.strip_prefix("activity-") else {
            continue;
        };
        report.activity_streams += 1;
        let fold = fold_activity(store, customer_id, policy, now).await?;
        report.summaries_appended += fold.appended.len() as u64;
        if !fold.expirable.is_empty() {
            report.activity_events_deleted += expiry.delete_events(&stream, &fold.expirable).await?;
        }
    }
    for prefix in ["order-", "customer-"] {
        for stream in each_stream(expiry, prefix).await? {
            let events = read_whole_stream(store, &stream).await?;
            let Some(newest) = events.iter().map(|e| e.occurred_at).max() else {
                continue;
            };
            let erased = events.iter().any(|e| e.event_type == "CustomerErased");
            if policy.legal_expires_at(newest) <= now && expires_after_legal_period(&stream, erased) {
                report.legal_streams_deleted += 1;
                report.legal_events_deleted += expiry.delete_stream(&stream).await?;
            }
        }
    }
    Ok(report)
}
