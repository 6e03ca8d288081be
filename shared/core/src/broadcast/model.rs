//! The `Broadcast` aggregate (decision 0084): its definition, where its send
//! stands, and the events that move it, on `broadcast-<id>`. Its audience
//! pages live on their own streams (`broadcast-<id>-audience-<n>`), its
//! message requests on `broadcast-<id>-send-<bucket>-<page>`, so no stream
//! gets hot and a replay reproduces who was targeted.

use crate::aggregate::{Aggregate, DecideContext};
use crate::consent::Channel;
use crate::event::DomainEvent;
use crate::vocabulary::Zone;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// The most messages per second a broadcast may ask for.
pub const MAX_RATE_PER_SECOND: u32 = 1000;

/// The zone furthest ahead of UTC (UTC+14, Kiribati): a local-time send
/// starts (snapshots its audience) when the first recipient anywhere may
/// reach the local time.
const EARLIEST_OFFSET_HOURS: i64 = 14;

/// The broadcast's stream.
pub fn stream_id(broadcast_id: &str) -> String {
    format!("broadcast-{broadcast_id}")
}

/// The stream of audience page `page` (0-based).
pub fn audience_stream(broadcast_id: &str, page: u64) -> String {
    format!("broadcast-{broadcast_id}-audience-{page}")
}

/// The stream of the message requests of `page` for due time `bucket`.
pub fn send_stream(broadcast_id: &str, bucket: usize, page: u64) -> String {
    format!("broadcast-{broadcast_id}-send-{bucket}-{page}")
}

/// The message id of the broadcast's message to `customer_id`: the same
/// for every step, retry and re-run, so the channel's claim sends it once.
pub fn message_id(broadcast_id: &str, customer_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(broadcast_id.as_bytes());
    hash.update([0]);
    hash.update(customer_id.as_bytes());
    format!("bc-{broadcast_id}-{}", &hex::encode(hash.finalize())[..20])
}

/// Whether `id` may name a broadcast: 1 to 64 of `[a-z0-9_-]`, starting
/// with a letter or digit, and never holding the suffixes of its page
/// streams.
pub fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && !id.contains("-audience-")
        && !id.contains("-send-")
}

/// Who gets the broadcast: the members of any of `segments`, minus the
/// members of any of `exclude`, when the send starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Audience {
    pub segments: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// When the broadcast goes out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SendTime {
    /// As soon as it is scheduled.
    Now,
    /// At a UTC time.
    At { at: DateTime<Utc> },
    /// At `time` (`HH:MM`) on `date` in each recipient's time zone
    /// (`preferences.timezone`, UTC when they chose none).
    Local { date: NaiveDate, time: String },
}

impl SendTime {
    /// The local time of a [`SendTime::Local`], if it reads.
    pub fn local_time(time: &str) -> Option<NaiveTime> {
        (time.len() == 5)
            .then(|| NaiveTime::parse_from_str(time, "%H:%M").ok())
            .flatten()
    }

    /// When the send starts (its audience is snapshotted): now, the UTC
    /// time, or the first moment any zone reaches the local time.
    pub fn start_at(&self, scheduled_at: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            SendTime::Now => scheduled_at,
            SendTime::At { at } => *at,
            SendTime::Local { date, time } => {
                let t = Self::local_time(time).unwrap_or_default();
                Utc.from_utc_datetime(&date.and_time(t)) - Duration::hours(EARLIEST_OFFSET_HOURS)
            }
        }
    }

    /// When the message to a recipient in `zone` is due, for a send that
    /// started at `start`. A local time that does not exist in the zone
    /// (skipped by a clock change) is taken an hour later; one that exists
    /// twice, the first time. An unknown zone is UTC.
    pub fn due_for(&self, start: DateTime<Utc>, zone: &str) -> DateTime<Utc> {
        match self {
            SendTime::Now | SendTime::At { .. } => start,
            SendTime::Local { date, time } => {
                let naive = date.and_time(Self::local_time(time).unwrap_or_default());
                let zone = Zone::named(zone).unwrap_or(Zone::UTC);
                zone.from_local_datetime(&naive)
                    .earliest()
                    .or_else(|| zone.from_local_datetime(&(naive + Duration::hours(1))).earliest())
                    .map(|d| d.with_timezone(&Utc))
                    .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
            }
        }
    }
}

/// What a broadcast sends, to whom, when and how fast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BroadcastDefinition {
    pub template: String,
    pub channel: Channel,
    pub audience: Audience,
    pub send: SendTime,
    /// Messages requested per second at most (1 to [`MAX_RATE_PER_SECOND`]).
    pub rate_per_second: u32,
}

/// One recipient of the snapshot, with the moment their message is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Recipient {
    pub customer_id: String,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum BroadcastEvent {
    BroadcastScheduled {
        broadcast_id: String,
        template: String,
        channel: Channel,
        audience: Audience,
        send: SendTime,
        rate_per_second: u32,
    },
    /// The send started: the audience snapshot begins.
    BroadcastStarted {
        broadcast_id: String,
    },
    /// One snapshot step done: the cursor in the segments' member index,
    /// the pages written so far, the recipients in them, the due times seen.
    BroadcastAudienceProgressed {
        broadcast_id: String,
        segment: usize,
        #[serde(default)]
        after: Option<String>,
        pages: u64,
        size: u64,
        due: Vec<DateTime<Utc>>,
    },
    /// The snapshot is complete: `size` recipients in `pages` pages, due at
    /// the `due` times (one bucket each, in order).
    BroadcastAudienceSnapshotted {
        broadcast_id: String,
        pages: u64,
        size: u64,
        due: Vec<DateTime<Utc>>,
    },
    /// One page of one due bucket requested (`requested` messages); the next
    /// step is due at `next_at` (the rate).
    BroadcastPageSent {
        broadcast_id: String,
        bucket: usize,
        page: u64,
        requested: u64,
        next_at: DateTime<Utc>,
    },
    BroadcastPaused {
        broadcast_id: String,
    },
    BroadcastResumed {
        broadcast_id: String,
    },
    BroadcastCancelled {
        broadcast_id: String,
    },
    BroadcastCompleted {
        broadcast_id: String,
        requested: u64,
    },
    /// On `broadcast-<id>-audience-<page>`: who the page targets.
    BroadcastAudiencePage {
        broadcast_id: String,
        page: u64,
        recipients: Vec<Recipient>,
    },
}

impl DomainEvent for BroadcastEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// Every event type of a broadcast.
pub const BROADCAST_EVENT_TYPES: &[&str] = &[
    "BroadcastScheduled",
    "BroadcastStarted",
    "BroadcastAudienceProgressed",
    "BroadcastAudienceSnapshotted",
    "BroadcastPageSent",
    "BroadcastPaused",
    "BroadcastResumed",
    "BroadcastCancelled",
    "BroadcastCompleted",
    "BroadcastAudiencePage",
];

/// Where the send stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for its start time.
    Scheduled,
    /// Taking the audience, a page per step.
    Snapshotting,
    /// Requesting messages, a page per step.
    Sending,
    Completed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastState {
    pub id: String,
    pub definition: BroadcastDefinition,
    pub scheduled_at: DateTime<Utc>,
    pub phase: Phase,
    pub paused: bool,
    /// The snapshot's cursor: the segment being read and the last member taken.
    pub segment: usize,
    pub after: Option<String>,
    /// Audience pages written, and the recipients in them.
    pub pages: u64,
    pub size: u64,
    /// The due times of the recipients, in order: one bucket each.
    pub due: BTreeSet<DateTime<Utc>>,
    /// The fan-out's cursor: the next page of the bucket.
    pub bucket: usize,
    pub page: u64,
    /// Messages requested so far.
    pub requested: u64,
    /// When the next step may run (the rate, or the next bucket's time).
    pub next_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub version: u64,
}

impl BroadcastState {
    /// The due time of the bucket the fan-out stands at.
    pub fn bucket_due(&self) -> Option<DateTime<Utc>> {
        self.due.iter().nth(self.bucket).copied()
    }

    /// When the next step may run, or `None` when none will (finished,
    /// cancelled, paused).
    pub fn next_step_at(&self) -> Option<DateTime<Utc>> {
        if self.paused {
            return None;
        }
        match self.phase {
            Phase::Scheduled => Some(self.definition.send.start_at(self.scheduled_at)),
            Phase::Snapshotting => Some(self.next_at),
            Phase::Sending => Some(self.next_at.max(self.bucket_due().unwrap_or(self.next_at))),
            Phase::Completed | Phase::Cancelled => None,
        }
    }
}

/// A command refused, or a broadcast that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastRejected {
    #[error("broadcast not found")]
    NotFound,
    #[error("broadcast {0} already exists with another definition")]
    AlreadyExists(String),
    /// The command does not apply in the broadcast's state (pause a
    /// completed one, resume one that is not paused).
    #[error("{0}")]
    NotNow(String),
}

/// What may be done to a broadcast. The steps (`Start`, `RecordAudience`,
/// `RecordPage`) are the fan-out's, decided on the state it read: another
/// chain's step in between makes the append conflict, and that step stops.
#[derive(Debug, Clone, PartialEq)]
pub enum BroadcastCommand {
    Schedule(BroadcastDefinition),
    Start,
    RecordAudience {
        segment: usize,
        after: Option<String>,
        /// Whether a page was written this step.
        page_written: bool,
        added: u64,
        due: Vec<DateTime<Utc>>,
        /// The last member of the last segment was read.
        done: bool,
    },
    RecordPage {
        requested: u64,
        /// The last page scanned this step (pages without recipients of
        /// the bucket are scanned over).
        page: u64,
    },
    Pause,
    Resume,
    Cancel,
}

pub struct Broadcast;

impl Broadcast {
    fn page_sent(state: &BroadcastState, page: u64, requested: u64, now: DateTime<Utc>) -> Vec<BroadcastEvent> {
        let rate = u64::from(state.definition.rate_per_second.max(1));
        let wait_ms = (requested * 1000).div_ceil(rate);
        let next_at = now + Duration::milliseconds(wait_ms as i64);
        let mut events = vec![BroadcastEvent::BroadcastPageSent {
            broadcast_id: state.id.clone(),
            bucket: state.bucket,
            page,
            requested,
            next_at,
        }];
        let last_page = page + 1 >= state.pages;
        if last_page && state.bucket + 1 >= state.due.len() {
            events.push(BroadcastEvent::BroadcastCompleted {
                broadcast_id: state.id.clone(),
                requested: state.requested + requested,
            });
        }
        events
    }
}

impl Aggregate for Broadcast {
    type State = BroadcastState;
    type Command = BroadcastCommand;
    type Event = BroadcastEvent;
    type Error = BroadcastRejected;
    type Input = ();

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }

    fn customer_id(_state: &BroadcastState) -> Option<&str> {
        None
    }

    fn version(state: &BroadcastState) -> u64 {
        state.version
    }

    fn not_found() -> BroadcastRejected {
        BroadcastRejected::NotFound
    }

    fn decide(
        state: Option<&BroadcastState>,
        command: &BroadcastCommand,
        ctx: &DecideContext<'_, ()>,
    ) -> Result<Vec<BroadcastEvent>, BroadcastRejected> {
        let id = ctx.id.to_string();
        let Some(s) = state else {
            return match command {
                BroadcastCommand::Schedule(d) => Ok(vec![BroadcastEvent::BroadcastScheduled {
                    broadcast_id: id,
                    template: d.template.clone(),
                    channel: d.channel,
                    audience: d.audience.clone(),
                    send: d.send.clone(),
                    rate_per_second: d.rate_per_second,
                }]),
                _ => Err(BroadcastRejected::NotFound),
            };
        };
        let finished = matches!(s.phase, Phase::Completed | Phase::Cancelled);
        let not_now = |what: &str| BroadcastRejected::NotNow(format!("the broadcast is {what}"));
        let phase = |p: Phase| match p {
            Phase::Completed => "completed",
            Phase::Cancelled => "cancelled",
            _ => "running",
        };
        match command {
            // The same definition again is a retry: nothing new.
            BroadcastCommand::Schedule(d) if *d == s.definition => Ok(vec![]),
            BroadcastCommand::Schedule(_) => Err(BroadcastRejected::AlreadyExists(id)),
            BroadcastCommand::Start => Ok(if s.phase == Phase::Scheduled && !s.paused {
                vec![BroadcastEvent::BroadcastStarted { broadcast_id: id }]
            } else {
                vec![]
            }),
            BroadcastCommand::RecordAudience {
                segment,
                after,
                page_written,
                added,
                due,
                done,
            } => {
                if s.phase != Phase::Snapshotting || s.paused {
                    return Ok(vec![]);
                }
                let pages = s.pages + u64::from(*page_written);
                let size = s.size + added;
                let mut all = s.due.clone();
                all.extend(due.iter().copied());
                let due: Vec<_> = all.into_iter().collect();
                if *done {
                    let mut events = vec![BroadcastEvent::BroadcastAudienceSnapshotted {
                        broadcast_id: id.clone(),
                        pages,
                        size,
                        due,
                    }];
                    if pages == 0 {
                        events.push(BroadcastEvent::BroadcastCompleted {
                            broadcast_id: id,
                            requested: 0,
                        });
                    }
                    return Ok(events);
                }
                Ok(vec![BroadcastEvent::BroadcastAudienceProgressed {
                    broadcast_id: id,
                    segment: *segment,
                    after: after.clone(),
                    pages,
                    size,
                    due,
                }])
            }
            BroadcastCommand::RecordPage { requested, page } => {
                if s.phase != Phase::Sending || s.paused || *page < s.page {
                    return Ok(vec![]);
                }
                Ok(Broadcast::page_sent(s, *page, *requested, ctx.now))
            }
            BroadcastCommand::Pause if finished => Err(not_now(phase(s.phase))),
            BroadcastCommand::Pause if s.paused => Ok(vec![]),
            BroadcastCommand::Pause => Ok(vec![BroadcastEvent::BroadcastPaused { broadcast_id: id }]),
            BroadcastCommand::Resume if finished => Err(not_now(phase(s.phase))),
            BroadcastCommand::Resume if !s.paused => Err(not_now("not paused")),
            BroadcastCommand::Resume => Ok(vec![BroadcastEvent::BroadcastResumed { broadcast_id: id }]),
            BroadcastCommand::Cancel if s.phase == Phase::Cancelled => Ok(vec![]),
            BroadcastCommand::Cancel if finished => Err(not_now(phase(s.phase))),
            BroadcastCommand::Cancel => Ok(vec![BroadcastEvent::BroadcastCancelled { broadcast_id: id }]),
        }
    }

    fn evolve(
        state: Option<BroadcastState>,
        event: &BroadcastEvent,
        at: DateTime<Utc>,
        version: u64,
    ) -> Option<BroadcastState> {
        let mut s = match (state, event) {
            (
                None,
                BroadcastEvent::BroadcastScheduled {
                    broadcast_id,
                    template,
                    channel,
                    audience,
                    send,
                    rate_per_second,
                },
            ) => BroadcastState {
                id: broadcast_id.clone(),
                definition: BroadcastDefinition {
                    template: template.clone(),
                    channel: *channel,
                    audience: audience.clone(),
                    send: send.clone(),
                    rate_per_second: *rate_per_second,
                },
                scheduled_at: at,
                phase: Phase::Scheduled,
                paused: false,
                segment: 0,
                after: None,
                pages: 0,
                size: 0,
                due: BTreeSet::new(),
                bucket: 0,
                page: 0,
                requested: 0,
                next_at: at,
                started_at: None,
                finished_at: None,
                version,
            },
            (None, _) => return None,
            (Some(mut s), e) => {
                match e {
                    BroadcastEvent::BroadcastScheduled { .. } | BroadcastEvent::BroadcastAudiencePage { .. } => {}
                    BroadcastEvent::BroadcastStarted { .. } => {
                        s.phase = Phase::Snapshotting;
                        s.started_at = Some(at);
                        s.next_at = at;
                    }
                    BroadcastEvent::BroadcastAudienceProgressed {
                        segment,
                        after,
                        pages,
                        size,
                        due,
                        ..
                    } => {
                        s.segment = *segment;
                        s.after = after.clone();
                        s.pages = *pages;
                        s.size = *size;
                        s.due = due.iter().copied().collect();
                        s.next_at = at;
                    }
                    BroadcastEvent::BroadcastAudienceSnapshotted { pages, size, due, .. } => {
                        s.phase = Phase::Sending;
                        s.pages = *pages;
                        s.size = *size;
                        s.due = due.iter().copied().collect();
                        s.bucket = 0;
                        s.page = 0;
                        s.next_at = at;
                    }
                    BroadcastEvent::BroadcastPageSent {
                        page,
                        requested,
                        next_at,
                        ..
                    } => {
                        s.requested += requested;
                        s.next_at = *next_at;
                        if page + 1 >= s.pages {
                            s.bucket += 1;
                            s.page = 0;
                        } else {
                            s.page = page + 1;
                        }
                    }
                    BroadcastEvent::BroadcastPaused { .. } => s.paused = true,
                    BroadcastEvent::BroadcastResumed { .. } => {
                        s.paused = false;
                        s.next_at = s.next_at.max(at);
                    }
                    BroadcastEvent::BroadcastCancelled { .. } => {
                        s.phase = Phase::Cancelled;
                        s.finished_at = Some(at);
                    }
                    BroadcastEvent::BroadcastCompleted { .. } => {
                        s.phase = Phase::Completed;
                        s.finished_at = Some(at);
                    }
                }
                s
            }
        };
        s.version = version;
        Some(s)
    }

    const SNAPSHOT_SCHEMA: Option<u32> = Some(1);

    fn to_snapshot(state: &BroadcastState) -> Option<serde_json::Value> {
        serde_json::to_value(state).ok()
    }

    fn from_snapshot(value: serde_json::Value) -> Option<BroadcastState> {
        serde_json::from_value(value).ok()
    }
}

#[cfg(test)]
mod tests;
