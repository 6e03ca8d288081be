//! The `Broadcast` aggregate (decision 0084): its definition, where its send
//! stands, and the events that move it, on `broadcast-<id>`. Its audience
//! pages live on their own streams (`broadcast-<id>-audience-<n>`), its
//! message requests on `broadcast-<id>-send-<bucket>-<page>`, so no stream
//! gets hot and a replay reproduces who was targeted.

use crate::aggregate::{Aggregate, DecideContext};
use crate::consent::Channel;
use crate::event::DomainEvent;
use crate::journey::experiment;
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
    /// A subject-line test (decision 0087), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_test: Option<SubjectTest>,
}

/// The experiment id under which a subject test's share is hashed: who is
/// in the test.
pub const TEST_SHARE_EXPERIMENT: &str = "subject-test";
/// The experiment id under which a test recipient's subject is hashed, and
/// the stats report the arms.
pub const SUBJECT_EXPERIMENT: &str = "subject";

/// A subject-line A/B test (decision 0087): `test_percent` of the audience
/// get one of the variants' subjects, in equal shares; after
/// `decide_after_minutes` the variant with the best `metric` goes to the
/// rest. Assignment hashes the customer and the broadcast (decision 0081).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectTest {
    /// 2 to 5 subjects, each with an id.
    pub variants: Vec<SubjectVariant>,
    /// The share of the audience in the test, 1 to 50 per cent.
    pub test_percent: u32,
    /// How long after the test's last message the winner is chosen (1 to
    /// 10 080 minutes, a week).
    pub decide_after_minutes: u32,
    pub metric: WinnerMetric,
}

/// One subject of a test: its id (`[a-z][a-z0-9_-]*`) and its text (Liquid,
/// with the template's variables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectVariant {
    pub id: String,
    pub subject: String,
}

/// What makes a variant win: the share of its sent messages opened, or
/// clicked (from the provider's feedback, once per message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WinnerMetric {
    Opened,
    Clicked,
}

impl WinnerMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            WinnerMetric::Opened => "opened",
            WinnerMetric::Clicked => "clicked",
        }
    }
}

impl SubjectTest {
    /// Whether `customer_id` is in the test share of broadcast `broadcast_id`.
    pub fn in_test(&self, broadcast_id: &str, customer_id: &str) -> bool {
        let bucket = experiment::bucket(customer_id, &stream_id(broadcast_id), TEST_SHARE_EXPERIMENT);
        bucket < u64::from(self.test_percent) * experiment::BUCKETS / 100
    }

    /// The variant a test recipient gets: equal shares by the hash.
    pub fn variant_for(&self, broadcast_id: &str, customer_id: &str) -> Option<&SubjectVariant> {
        let bucket = experiment::bucket(customer_id, &stream_id(broadcast_id), SUBJECT_EXPERIMENT);
        let index = bucket * self.variants.len() as u64 / experiment::BUCKETS;
        self.variants.get(index as usize)
    }

    pub fn variant(&self, id: &str) -> Option<&SubjectVariant> {
        self.variants.iter().find(|v| v.id == id)
    }

    /// The winner among `arms` (variant, sent, metric count): the highest
    /// rate, the earlier variant on a tie (none sent: the first).
    pub fn winner<'a>(&'a self, arms: &[ArmResult]) -> Option<&'a SubjectVariant> {
        let rate = |id: &str| arms.iter().find(|a| a.variant == id).map_or(0.0, ArmResult::rate);
        self.variants
            .iter()
            .fold(None, |best: Option<&SubjectVariant>, v| match best {
                Some(b) if rate(&v.id) <= rate(&b.id) => Some(b),
                _ => Some(v),
            })
    }
}

/// A test arm's figures when the winner was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArmResult {
    pub variant: String,
    pub sent: u64,
    /// Messages of the arm counted by the metric (opened or clicked).
    pub count: u64,
}

impl ArmResult {
    pub fn rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.count.min(self.sent) as f64 / self.sent as f64
        }
    }
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
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject_test: Option<SubjectTest>,
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
    /// The subject test's winner (decision 0087), from the arms' figures:
    /// the rest of the audience gets its subject.
    BroadcastWinnerChosen {
        broadcast_id: String,
        variant: String,
        metric: WinnerMetric,
        arms: Vec<ArmResult>,
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
    "BroadcastWinnerChosen",
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
    /// A subject test's winner, once chosen (the variant and the version
    /// of its `BroadcastWinnerChosen`), and when it is due to be.
    #[serde(default)]
    pub winner: Option<String>,
    #[serde(default)]
    pub winner_version: Option<u64>,
    #[serde(default)]
    pub decide_at: Option<DateTime<Utc>>,
    pub version: u64,
}

impl BroadcastState {
    /// The status the API shows: scheduled, snapshotting, sending, paused,
    /// completed or cancelled.
    pub fn status(&self) -> &'static str {
        match self.phase {
            Phase::Completed => "completed",
            Phase::Cancelled => "cancelled",
            _ if self.paused => "paused",
            Phase::Scheduled => "scheduled",
            Phase::Snapshotting => "snapshotting",
            Phase::Sending => "sending",
        }
    }

    /// The due time of the bucket the fan-out stands at.
    pub fn bucket_due(&self) -> Option<DateTime<Utc>> {
        self.bucket_due_of(self.bucket)
    }

    /// The due time of bucket `bucket`. With a subject test the fan-out
    /// goes over the due times twice (decision 0087): buckets `0..n` send
    /// the test share, `n..2n` the rest.
    pub fn bucket_due_of(&self, bucket: usize) -> Option<DateTime<Utc>> {
        if bucket >= self.buckets() {
            return None;
        }
        self.due.iter().nth(bucket % self.due.len().max(1)).copied()
    }

    /// The buckets of the fan-out: one per due time, twice with a subject test.
    pub fn buckets(&self) -> usize {
        let rounds = if self.definition.subject_test.is_some() { 2 } else { 1 };
        self.due.len() * rounds
    }

    /// Whether `bucket` sends a subject test's share (`Some(true)`), the
    /// rest (`Some(false)`), or everyone (`None`: no test).
    pub fn test_round(&self, bucket: usize) -> Option<bool> {
        self.definition.subject_test.as_ref().map(|_| bucket < self.due.len())
    }

    /// Whether the next step chooses the subject test's winner.
    pub fn needs_winner(&self) -> bool {
        self.phase == Phase::Sending && self.test_round(self.bucket) == Some(false) && self.winner.is_none()
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
    /// Choose the subject test's winner from the arms' figures.
    ChooseWinner {
        arms: Vec<ArmResult>,
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
        let mut next_at = now + Duration::milliseconds(wait_ms as i64);
        let last_page = page + 1 >= state.pages;
        if let (Some(test), true, Some(true), Some(false)) = (
            &state.definition.subject_test,
            last_page,
            state.test_round(state.bucket),
            state.test_round(state.bucket + 1),
        ) {
            // The test share is sent: the winner is chosen after the wait.
            next_at = next_at.max(now + Duration::minutes(i64::from(test.decide_after_minutes)));
        }
        let mut events = vec![BroadcastEvent::BroadcastPageSent {
            broadcast_id: state.id.clone(),
            bucket: state.bucket,
            page,
            requested,
            next_at,
        }];
        if last_page && state.bucket + 1 >= state.buckets() {
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
                    subject_test: d.subject_test.clone(),
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
                if s.phase != Phase::Sending || s.paused || *page < s.page || s.needs_winner() {
                    return Ok(vec![]);
                }
                Ok(Broadcast::page_sent(s, *page, *requested, ctx.now))
            }
            BroadcastCommand::ChooseWinner { arms } => {
                let Some(test) = &s.definition.subject_test else {
                    return Ok(vec![]);
                };
                if s.paused || !s.needs_winner() {
                    return Ok(vec![]);
                }
                let Some(winner) = test.winner(arms) else {
                    return Ok(vec![]);
                };
                Ok(vec![BroadcastEvent::BroadcastWinnerChosen {
                    broadcast_id: id,
                    variant: winner.id.clone(),
                    metric: test.metric,
                    arms: arms.clone(),
                }])
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
                    subject_test,
                },
            ) => BroadcastState {
                id: broadcast_id.clone(),
                definition: BroadcastDefinition {
                    template: template.clone(),
                    channel: *channel,
                    audience: audience.clone(),
                    send: send.clone(),
                    rate_per_second: *rate_per_second,
                    subject_test: subject_test.clone(),
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
                winner: None,
                winner_version: None,
                decide_at: None,
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
                            if s.test_round(s.bucket) == Some(true) && s.test_round(s.bucket + 1) == Some(false) {
                                s.decide_at = Some(*next_at);
                            }
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
                    BroadcastEvent::BroadcastWinnerChosen { variant, .. } => {
                        s.winner = Some(variant.clone());
                        s.winner_version = Some(version);
                        s.next_at = s.next_at.max(at);
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
