//! The local bus: it tails the stored events (the outbox) from a persisted
//! cursor per target and hands each event to the targets whose rule matches.
//! The rules are read from `template.yaml`, so local routing is deployed
//! routing. A delivery that keeps failing is retried with backoff, then
//! parked in the dead-letter table; nothing is lost and nothing blocks.

use crate::adapters::db::{failed, sql, Db};
use crate::adapters::store::SqliteEventStore;
use async_trait::async_trait;
use chrono::Utc;
use crm_core::bus::BusEntry;
use crm_core::consumer::EventHandler;
use crm_core::event::EventEnvelope;
use crm_core::pattern::EventPattern;
use crm_core::ports::{
    ConsumerHealth, ConsumerStatus, DeadLetter, DeadLetterAdmin, DeadLetterQueue, ParkedLetter, ParkedPage, Redriven,
    StoreError,
};
use crm_core::scheduler::{TimerHandler, TimerPayload, TIMER_FIRED, TIMER_SOURCE};
use rusqlite::{params, OptionalExtension};
use serde_yaml::Value as Yaml;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The repository's template, built in; `crm-local serve --template` reads another.
pub const BUILT_IN_TEMPLATE: &str = include_str!("../../../../template.yaml");

/// A template file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read template {path}: {source}")]
pub struct TemplateFileError {
    pub path: String,
    pub source: std::io::Error,
}

/// The text of the template at `path` (`--template`), else the built-in one.
pub fn read_template(path: Option<&std::path::Path>) -> Result<String, TemplateFileError> {
    match path {
        Some(p) => std::fs::read_to_string(p).map_err(|source| TemplateFileError {
            path: p.display().to_string(),
            source,
        }),
        None => Ok(BUILT_IN_TEMPLATE.to_string()),
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bus_cursors (
    target   TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer  TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    payload   TEXT    NOT NULL,
    failed_at TEXT    NOT NULL,
    attempts  INTEGER NOT NULL
);
";

/// A rule of the template: which function receives which events.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The function's binary (`Metadata.BuildProperties.Binary`): `projector`, `consent`.
    pub target: String,
    pub pattern: EventPattern,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("template is not YAML: {0}")]
    Yaml(String),
    #[error("{function}: event {event}: {message}")]
    Invalid {
        function: String,
        event: String,
        message: String,
    },
}

/// Strips CloudFormation tags (`!Ref`, `!GetAtt` ...) so the YAML reads as plain data.
fn untag(v: &Yaml) -> Yaml {
    match v {
        Yaml::Tagged(t) => untag(&t.value),
        Yaml::Sequence(s) => Yaml::Sequence(s.iter().map(untag).collect()),
        Yaml::Mapping(m) => Yaml::Mapping(m.iter().map(|(k, v)| (untag(k), untag(v))).collect()),
        other => other.clone(),
    }
}

/// The binary a function resource builds (`Metadata.BuildProperties.Binary`,
/// else its logical id).
fn binary_of(logical_id: &str, resource: &Yaml) -> String {
    resource
        .get("Metadata")
        .and_then(|m| m.get("BuildProperties"))
        .and_then(|b| b.get("Binary"))
        .and_then(Yaml::as_str)
        .unwrap_or(logical_id)
        .to_string()
}

/// The events of a function resource (`Properties.Events`), by name.
fn function_events(resource: &Yaml) -> impl Iterator<Item = (&Yaml, &Yaml)> {
    resource
        .get("Properties")
        .and_then(|p| p.get("Events"))
        .and_then(Yaml::as_mapping)
        .into_iter()
        .flat_map(|events| events.iter())
}

/// The logical id of the queue an untagged `!GetAtt Queue.Arn` names.
fn queue_of(arn: &Yaml) -> Option<&str> {
    arn.as_str().and_then(|a| a.strip_suffix(".Arn"))
}

/// The EventBridge rules of a SAM template that reach a function on the
/// application's own bus: an `AWS::Events::Rule` whose target is an SQS
/// queue a function reads through an `SQS` event (decision 0029), and a
/// function's own `EventBridgeRule` events. Rules on the default bus (no
/// `EventBusName`), where AWS services such as SES publish, never see a
/// local event and are left out.
pub fn rules_from_template(text: &str) -> Result<Vec<Rule>, RuleError> {
    let doc: Yaml = serde_yaml::from_str(text).map_err(|e| RuleError::Yaml(e.to_string()))?;
    let doc = untag(&doc);
    let mut rules = Vec::new();
    let Some(resources) = doc.get("Resources").and_then(Yaml::as_mapping) else {
        return Ok(rules);
    };
    let is = |resource: &Yaml, kind: &str| resource.get("Type").and_then(Yaml::as_str) == Some(kind);
    // Which function reads each queue.
    let mut readers: Vec<(String, String)> = Vec::new();
    for (logical_id, resource) in resources {
        if !is(resource, "AWS::Serverless::Function") {
            continue;
        }
        let binary = binary_of(logical_id.as_str().unwrap_or_default(), resource);
        for (_, event) in function_events(resource) {
            if event.get("Type").and_then(Yaml::as_str) != Some("SQS") {
                continue;
            }
            if let Some(queue) = event.get("Properties").and_then(|p| p.get("Queue")).and_then(queue_of) {
                readers.push((queue.to_string(), binary.clone()));
            }
        }
    }
    let pattern_of = |owner: &str, event: &str, pattern: Option<&Yaml>| -> Result<EventPattern, RuleError> {
        let invalid = |message: String| RuleError::Invalid {
            function: owner.to_string(),
            event: event.to_string(),
            message,
        };
        let pattern = pattern.ok_or_else(|| invalid("has no pattern".into()))?;
        let json = serde_json::to_value(pattern).map_err(|e| invalid(e.to_string()))?;
        EventPattern::from_value(&json).map_err(|e| invalid(e.to_string()))
    };
    for (logical_id, resource) in resources {
        let logical_id = logical_id.as_str().unwrap_or_default();
        if is(resource, "AWS::Events::Rule") {
            let Some(properties) = resource.get("Properties") else {
                continue;
            };
            if properties.get("EventBusName").is_none() {
                continue;
            }
            let targets = properties
                .get("Targets")
                .and_then(Yaml::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("Arn").and_then(queue_of))
                .filter_map(|queue| {
                    readers
                        .iter()
                        .find(|(q, _)| q == queue)
                        .map(|(_, binary)| binary.clone())
                });
            for target in targets {
                let pattern = pattern_of(logical_id, "EventPattern", properties.get("EventPattern"))?;
                rules.push(Rule { target, pattern });
            }
            continue;
        }
        if !is(resource, "AWS::Serverless::Function") {
            continue;
        }
        let target = binary_of(logical_id, resource);
        for (name, event) in function_events(resource) {
            if event.get("Type").and_then(Yaml::as_str) != Some("EventBridgeRule") {
                continue;
            }
            let Some(properties) = event.get("Properties") else {
                continue;
            };
            if properties.get("EventBusName").is_none() {
                continue;
            }
            let pattern = pattern_of(logical_id, name.as_str().unwrap_or_default(), properties.get("Pattern"))?;
            rules.push(Rule {
                target: target.clone(),
                pattern,
            });
        }
    }
    Ok(rules)
}

/// Dead letters in the local database.
#[derive(Clone)]
pub struct SqliteDeadLetters {
    db: Db,
}

/// A parked letter with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadLetter {
    pub id: i64,
    pub letter: DeadLetter,
}

impl SqliteDeadLetters {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(SqliteDeadLetters {
            db: Db::open(path, SCHEMA)?,
        })
    }

    pub async fn list(&self) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.db
            .run(|conn| {
                let mut stmt = conn
                    .prepare("SELECT id, consumer, reason, payload, failed_at, attempts FROM dead_letters ORDER BY id")
                    .map_err(sql)?;
                let rows = stmt.query_map([], letter_row).map_err(sql)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(stored_letter(row.map_err(sql)?)?);
                }
                Ok(out)
            })
            .await
    }

    /// Up to `limit` letters after id `after`, in id order (`dlq list`, `GET /dead-letters`).
    pub async fn page(&self, after: i64, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .run(move |conn| {
                let mut stmt = conn
                    .prepare(
                        "SELECT id, consumer, reason, payload, failed_at, attempts FROM dead_letters
                         WHERE id > ?1 ORDER BY id LIMIT (0 + ?2)",
                    )
                    .map_err(sql)?;
                let rows = stmt.query_map(params![after, limit], letter_row).map_err(sql)?;
                rows.map(|row| row.map_err(sql).and_then(stored_letter)).collect()
            })
            .await
    }

    /// Letter `id`, if parked.
    pub async fn get(&self, id: i64) -> Result<Option<StoredDeadLetter>, StoreError> {
        self.db
            .run(move |conn| {
                conn.query_row(
                    "SELECT id, consumer, reason, payload, failed_at, attempts FROM dead_letters WHERE id = ?1",
                    [id],
                    letter_row,
                )
                .optional()
                .map_err(sql)?
                .map(stored_letter)
                .transpose()
            })
            .await
    }

    /// How many letters are parked.
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.db
            .run(|conn| {
                conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get::<_, i64>(0))
                    .map(|n| u64::try_from(n).unwrap_or(0))
                    .map_err(sql)
            })
            .await
    }

    pub async fn remove(&self, id: i64) -> Result<bool, StoreError> {
        self.db
            .run(move |conn| {
                conn.execute("DELETE FROM dead_letters WHERE id = ?1", [id])
                    .map(|n| n > 0)
                    .map_err(sql)
            })
            .await
    }
}

type LetterRow = (i64, String, String, String, String, i64);

fn letter_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LetterRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn stored_letter(
    (id, consumer, reason, payload, failed_at, attempts): LetterRow,
) -> Result<StoredDeadLetter, StoreError> {
    Ok(StoredDeadLetter {
        id,
        letter: DeadLetter {
            consumer,
            reason,
            payload: serde_json::from_str(&payload).map_err(failed)?,
            failed_at: chrono::DateTime::parse_from_rfc3339(&failed_at)
                .map_err(failed)?
                .with_timezone(&Utc),
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        },
    })
}

/// The event a letter's payload carries, by id: an envelope's `event_id`,
/// or that of a bus event's `detail` (both in clear once sealed). None for
/// what holds no event (a timer, a message request, provider feedback).
fn letter_event_id(payload: &serde_json::Value) -> Option<&str> {
    payload
        .get("event_id")
        .or_else(|| payload.get("detail").and_then(|d| d.get("event_id")))
        .and_then(serde_json::Value::as_str)
}

/// SQL for the id of the letter `?1` (a consumer) holds for the event `?2`.
const LETTER_OF_EVENT: &str = "SELECT id FROM dead_letters
     WHERE consumer = ?1
       AND coalesce(json_extract(payload, '$.event_id'), json_extract(payload, '$.detail.event_id')) = ?2
     ORDER BY id LIMIT 1";

#[async_trait]
impl DeadLetterQueue for SqliteDeadLetters {
    /// Parks `letter`; one letter per consumer and event: when the consumer
    /// already has a letter for the same event (a failed redrive, a replay,
    /// the bus delivering it again), that letter is kept, under its id and
    /// with its payload, and takes the new reason and time, its attempts
    /// added up.
    async fn park(&self, letter: DeadLetter) -> Result<(), StoreError> {
        self.db
            .run(move |conn| {
                let payload = serde_json::to_string(&letter.payload).map_err(failed)?;
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(sql)?;
                let existing = match letter_event_id(&letter.payload) {
                    Some(event_id) => tx
                        .query_row(LETTER_OF_EVENT, params![letter.consumer, event_id], |r| {
                            r.get::<_, i64>(0)
                        })
                        .optional()
                        .map_err(sql)?,
                    None => None,
                };
                match existing {
                    Some(id) => tx.execute(
                        "UPDATE dead_letters SET reason = ?2, failed_at = ?3, attempts = attempts + ?4 WHERE id = ?1",
                        params![id, letter.reason, letter.failed_at.to_rfc3339(), letter.attempts],
                    ),
                    None => tx.execute(
                        "INSERT INTO dead_letters (consumer, reason, payload, failed_at, attempts) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            letter.consumer,
                            letter.reason,
                            payload,
                            letter.failed_at.to_rfc3339(),
                            letter.attempts
                        ],
                    ),
                }
                .map_err(sql)?;
                tx.commit().map_err(sql)
            })
            .await
    }
}

/// One destination of the bus: a function's rule and the consumers it hosts.
pub struct Target {
    pub rule: Rule,
    pub group: Arc<dyn EventHandler>,
    /// What receives the `TimerFired` events the rule matches, if the function takes timers.
    pub timers: Option<Arc<dyn TimerHandler>>,
}

impl Target {
    pub fn new(rule: Rule, group: impl EventHandler + 'static) -> Self {
        Self::with_handler(rule, Arc::new(group))
    }

    pub fn with_handler(rule: Rule, group: Arc<dyn EventHandler>) -> Self {
        Target {
            rule,
            group,
            timers: None,
        }
    }

    pub fn with_timer_handler(mut self, handler: Arc<dyn TimerHandler>) -> Self {
        self.timers = Some(handler);
        self
    }
}

/// A fired timer as EventBridge Scheduler puts it on the bus.
pub fn timer_event(payload: &TimerPayload, time: chrono::DateTime<Utc>) -> Result<serde_json::Value, StoreError> {
    Ok(serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": TIMER_FIRED,
        "source": TIMER_SOURCE,
        "account": LOCAL_ACCOUNT,
        "region": LOCAL_REGION,
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "resources": [],
        "detail": serde_json::to_value(payload).map_err(failed)?,
    }))
}

/// The in-process bus.
pub struct LocalBus {
    events: Arc<SqliteEventStore>,
    db: Db,
    targets: Vec<Target>,
    dead_letters: SqliteDeadLetters,
    attempts: u32,
    first_backoff: Duration,
}

/// The account and region local events carry, as EventBridge would add them.
const LOCAL_ACCOUNT: &str = "000000000000";
const LOCAL_REGION: &str = "local";

impl LocalBus {
    pub fn new(events: Arc<SqliteEventStore>, path: &Path, targets: Vec<Target>) -> Result<Self, StoreError> {
        Ok(LocalBus {
            events,
            db: Db::open(path, SCHEMA)?,
            dead_letters: SqliteDeadLetters::open(path)?,
            targets,
            attempts: 4,
            first_backoff: Duration::from_millis(25),
        })
    }

    /// Retry each delivery `attempts` times, waiting `first_backoff`, then 4x longer each time.
    pub fn with_retries(mut self, attempts: u32, first_backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.first_backoff = first_backoff;
        self
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn dead_letters(&self) -> &SqliteDeadLetters {
        &self.dead_letters
    }

    async fn cursor(&self, target: &str) -> Result<i64, StoreError> {
        let target = target.to_string();
        self.db
            .run(move |conn| {
                conn.query_row("SELECT position FROM bus_cursors WHERE target = ?1", [target], |r| {
                    r.get(0)
                })
                .optional()
                .map(|p| p.unwrap_or(0))
                .map_err(sql)
            })
            .await
    }

    async fn save_cursor(&self, target: &str, position: i64) -> Result<(), StoreError> {
        let target = target.to_string();
        self.db
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO bus_cursors (target, position) VALUES (?1, ?2)
                     ON CONFLICT (target) DO UPDATE SET position = excluded.position",
                    params![target, position],
                )
                .map(|_| ())
                .map_err(sql)
            })
            .await
    }

    /// Sets a target's cursor (operators: replay a target from a position).
    pub async fn rewind(&self, target: &str, position: i64) -> Result<(), StoreError> {
        self.save_cursor(target, position).await
    }

    async fn deliver(&self, target: &Target, event: &EventEnvelope) -> Result<(), StoreError> {
        let mut wait = self.first_backoff;
        let mut last_error = String::new();
        for attempt in 1..=self.attempts {
            match target.group.handle(event, Utc::now()).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(target = %target.rule.target, attempt, event_id = %event.event_id, error = %e, "delivery failed");
                    last_error = e.to_string();
                }
            }
            if attempt < self.attempts {
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
        }
        self.dead_letters
            .park(DeadLetter {
                consumer: target.rule.target.clone(),
                reason: last_error,
                payload: serde_json::to_value(event).map_err(failed)?,
                failed_at: Utc::now(),
                attempts: self.attempts,
            })
            .await
    }

    /// Hands a fired timer to every target whose rule matches the `TimerFired`
    /// event and that takes timers, retrying like events; a timer that keeps
    /// failing is parked as a dead letter (the event, to redrive). Returns how
    /// many targets received it.
    pub async fn deliver_timer(&self, payload: &TimerPayload) -> Result<usize, StoreError> {
        let event = timer_event(payload, payload.due_at)?;
        let mut delivered = 0;
        for target in &self.targets {
            let Some(handler) = &target.timers else {
                continue;
            };
            if !target.rule.pattern.matches(&event) {
                continue;
            }
            let mut wait = self.first_backoff;
            let mut last_error = None;
            for attempt in 1..=self.attempts {
                match handler.on_timer(payload).await {
                    Ok(()) => {
                        last_error = None;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(target = %target.rule.target, attempt, timer = %payload.name, error = %e, "timer delivery failed");
                        last_error = Some(e.to_string());
                    }
                }
                if attempt < self.attempts {
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
            }
            if let Some(reason) = last_error {
                self.dead_letters
                    .park(DeadLetter {
                        consumer: target.rule.target.clone(),
                        reason,
                        payload: event.clone(),
                        failed_at: Utc::now(),
                        attempts: self.attempts,
                    })
                    .await?;
            }
            delivered += 1;
        }
        if delivered == 0 {
            tracing::debug!(timer = %payload.name, kind = ?payload.kind, "no target takes this timer");
        }
        Ok(delivered)
    }

    /// Hands every stored event not yet delivered to each matching target;
    /// returns how many (target, event) pairs it went through.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let mut handled = 0;
        for target in &self.targets {
            let name = target.rule.target.as_str();
            loop {
                let cursor = self.cursor(name).await?;
                let batch = self.events.read_after(cursor, 500).await?;
                if batch.is_empty() {
                    break;
                }
                let last = batch.last().map(|(position, _)| *position).unwrap_or(cursor);
                handled += batch.len();
                let matching: Vec<EventEnvelope> = batch
                    .into_iter()
                    .map(|(_, event)| BusEntry::for_event(event))
                    .filter(|entry| {
                        target
                            .rule
                            .pattern
                            .matches(&entry.to_event_json(LOCAL_ACCOUNT, LOCAL_REGION))
                    })
                    .map(|entry| entry.detail)
                    .collect();
                // The page at once; if that fails, event by event with
                // retries and dead letters (the checkpoints skip what the
                // page wrote).
                if let Err(e) = target.group.handle_page(&matching, Utc::now()).await {
                    tracing::warn!(target = %target.rule.target, error = %e, "page delivery failed; delivering one event at a time");
                    for event in &matching {
                        self.deliver(target, event).await?;
                    }
                }
                // The cursor moves after the effect: a crash in between
                // redelivers, and the consumers' checkpoints skip it.
                self.save_cursor(name, last).await?;
            }
        }
        Ok(handled)
    }

    /// Runs until every stored event reached every target.
    pub async fn settle(&self) -> Result<(), StoreError> {
        while self.run_once().await? > 0 {}
        Ok(())
    }

    /// Delivers continuously: on every wake-up, and at least every `poll`.
    pub async fn run(self: Arc<Self>, wake: Arc<tokio::sync::Notify>, poll: Duration) {
        loop {
            if let Err(e) = self.run_once().await {
                tracing::error!(error = %e, "local bus pass failed; retrying");
            }
            let _ = tokio::time::timeout(poll, wake.notified()).await;
        }
    }

    /// Redelivers dead letter `id` to the consumer it names alone (or the
    /// whole target, for a letter parked under the target's name); on
    /// success it is removed. A redrive that fails leaves that one letter,
    /// with the new reason (a refusal parks onto it: one letter per
    /// consumer and event), and no letter for the group's other consumers.
    /// Returns false if there is no such letter.
    pub async fn redrive(&self, id: i64) -> Result<bool, RedriveError> {
        let Some(stored) = self.dead_letters.get(id).await? else {
            return Ok(false);
        };
        if stored.letter.payload.get("source").and_then(serde_json::Value::as_str) == Some(TIMER_SOURCE) {
            return self.redrive_timer(id, &stored).await;
        }
        let event: EventEnvelope = serde_json::from_value(stored.letter.payload.clone())
            .map_err(|e| RedriveError::Unusable(format!("dead letter {id} holds no event: {e}")))?;
        let target = self
            .targets
            .iter()
            .find(|t| {
                t.rule.target == stored.letter.consumer
                    || t.group.consumer_names().contains(&stored.letter.consumer.as_str())
            })
            .ok_or_else(|| RedriveError::Unusable(format!("no target named {}", stored.letter.consumer)))?;
        let outcome = target
            .group
            .handle_for(&stored.letter.consumer, &event, Utc::now())
            .await
            .map_err(|e| RedriveError::Unusable(e.to_string()))?;
        if !outcome.parked.is_empty() {
            return Err(RedriveError::Unusable(format!(
                "dead letter {id} failed again: {:?} refused it; it stays parked",
                outcome.parked
            )));
        }
        self.dead_letters.remove(id).await?;
        Ok(true)
    }
}

impl LocalBus {
    async fn redrive_timer(&self, id: i64, stored: &StoredDeadLetter) -> Result<bool, RedriveError> {
        let detail = stored.letter.payload.get("detail").cloned().unwrap_or_default();
        let payload: TimerPayload = serde_json::from_value(detail)
            .map_err(|e| RedriveError::Unusable(format!("dead letter {id} holds no timer: {e}")))?;
        let handler = self
            .targets
            .iter()
            .find(|t| t.rule.target == stored.letter.consumer)
            .and_then(|t| t.timers.clone())
            .ok_or_else(|| RedriveError::Unusable(format!("no target {} takes timers", stored.letter.consumer)))?;
        handler
            .on_timer(&payload)
            .await
            .map_err(|e| RedriveError::Unusable(format!("dead letter {id} failed again: {e}")))?;
        self.dead_letters.remove(id).await?;
        Ok(true)
    }
}

fn parked(l: StoredDeadLetter) -> ParkedLetter {
    ParkedLetter {
        id: l.id.to_string(),
        letter: l.letter,
    }
}

/// The operator routes' view of the local dead letters (decision 0085):
/// the table, and [`LocalBus::redrive`] (the one `crm-local dlq redrive` runs).
#[async_trait]
impl DeadLetterAdmin for LocalBus {
    /// The local cursor is the last letter's id in the table.
    fn is_cursor(&self, cursor: &str) -> bool {
        cursor.parse::<i64>().is_ok_and(|id| id >= 0)
    }

    async fn list(&self, after: Option<&str>, limit: usize) -> Result<ParkedPage, StoreError> {
        let after = match after {
            None => 0,
            Some(a) => a
                .parse::<i64>()
                .map_err(|_| StoreError::Failed(format!("not a dead-letter cursor: {a}")))?,
        };
        let mut rows = self.dead_letters.page(after, limit.saturating_add(1)).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            rows.last().map(|l| l.id.to_string())
        } else {
            None
        };
        Ok(ParkedPage {
            items: rows.into_iter().map(parked).collect(),
            next,
        })
    }

    async fn get(&self, id: &str) -> Result<Option<ParkedLetter>, StoreError> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        Ok(self.dead_letters.get(id).await?.map(parked))
    }

    async fn redrive(&self, id: &str) -> Result<Redriven, StoreError> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(Redriven::NotFound);
        };
        match LocalBus::redrive(self, id).await {
            Ok(true) => Ok(Redriven::Done),
            Ok(false) => Ok(Redriven::NotFound),
            Err(RedriveError::Unusable(why)) => Ok(Redriven::Failed(why)),
            Err(RedriveError::Store(e)) => Err(e),
        }
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        self.dead_letters.count().await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unusable(String),
}

#[async_trait]
impl ConsumerHealth for LocalBus {
    async fn consumers(&self) -> Result<Vec<ConsumerStatus>, StoreError> {
        let head = self.events.head_position().await?;
        let letters = self.dead_letters.list().await?;
        let mut out = Vec::new();
        for target in &self.targets {
            let cursor = self.cursor(&target.rule.target).await?;
            let names = target.group.consumer_names();
            let dead = letters
                .iter()
                .filter(|l| l.letter.consumer == target.rule.target || names.contains(&l.letter.consumer.as_str()))
                .count();
            // How long the oldest event not yet handed to the target has waited.
            let oldest = self.events.read_after(cursor, 1).await?;
            let lag_seconds = oldest
                .first()
                .map(|(_, event)| u64::try_from((Utc::now() - event.recorded_at).num_seconds()).unwrap_or(0))
                .unwrap_or(0);
            out.push(ConsumerStatus {
                name: target.rule.target.clone(),
                lag: u64::try_from(head - cursor).unwrap_or(0),
                dead_letters: dead as u64,
                lag_seconds: Some(lag_seconds),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod template_rules {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_rule_into_a_queue_routes_to_the_function_reading_it_and_default_bus_rules_are_left_out() {
        let template = r#"
Resources:
  Bus:
    Type: AWS::Events::EventBus
  WorkerQueue:
    Type: AWS::SQS::Queue
  WorkerRule:
    Type: AWS::Events::Rule
    Properties:
      EventBusName: !Ref Bus
      EventPattern:
        source: [crm.customer]
      Targets:
        - Id: q
          Arn: !GetAtt WorkerQueue.Arn
  SesRule:
    Type: AWS::Events::Rule
    Properties:
      EventPattern:
        source: [aws.ses]
      Targets:
        - Id: q
          Arn: !GetAtt WorkerQueue.Arn
  OrphanRule:
    Type: AWS::Events::Rule
    Properties:
      EventBusName: !Ref Bus
      EventPattern:
        source: [crm.orders]
      Targets:
        - Id: q
          Arn: !GetAtt NobodysQueue.Arn
  WorkerFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: worker
    Properties:
      Events:
        Queue:
          Type: SQS
          Properties:
            Queue: !GetAtt WorkerQueue.Arn
"#;
        let rules = rules_from_template(template).expect("rules");
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(rules[0].target, "worker");
        assert!(rules[0]
            .pattern
            .matches(&json!({"source": "crm.customer", "detail-type": "X", "detail": {}})));
        assert!(!rules[0]
            .pattern
            .matches(&json!({"source": "aws.ses", "detail-type": "X", "detail": {}})));
        let bad = template.replace("source: [crm.customer]", "source: crm.customer");
        assert!(matches!(rules_from_template(&bad), Err(RuleError::Invalid { .. })));
    }

    #[test]
    fn one_local_rule_per_function_and_the_channel_rule_takes_requests_and_deferrals() {
        let template = include_str!("../../../../template.yaml");
        let rules = rules_from_template(template).expect("rules");
        let targets: Vec<&str> = rules.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(
            targets,
            vec!["projector", "consent", "campaign", "rule-segments", "channel"]
        );
        // Rule segments (decision 0083): what a definition reads, new versions, its own timers only.
        let rule_segments = &rules[3].pattern;
        for (source, detail_type) in [
            ("crm.customer", "ProductViewed"),
            ("crm.commerce", "OrderPlaced"),
            ("crm.messaging", "EmailOpened"),
            ("crm.segments", "SegmentDefined"),
            ("crm.segments", "CustomerSegmentAdded"),
        ] {
            assert!(rule_segments.matches(&json!({"source": source, "detail-type": detail_type, "detail": {}})));
        }
        assert!(rule_segments.matches(
            &json!({"source": "crm.scheduler", "detail-type": "TimerFired", "detail": {"kind": "segment-window"}})
        ));
        assert!(!rule_segments.matches(
            &json!({"source": "crm.scheduler", "detail-type": "TimerFired", "detail": {"kind": "journey-wait"}})
        ));
        // The campaign function takes every other timer, not the windows.
        let campaign = &rules[2].pattern;
        assert!(!campaign.matches(
            &json!({"source": "crm.scheduler", "detail-type": "TimerFired", "detail": {"kind": "segment-window"}})
        ));
        assert!(campaign.matches(
            &json!({"source": "crm.scheduler", "detail-type": "TimerFired", "detail": {"kind": "journey-wait"}})
        ));
        let channel = &rules[4].pattern;
        assert!(channel.matches(&json!({"source": "crm.messaging", "detail-type": "MessageRequested", "detail": {}})));
        assert!(!channel.matches(&json!({"source": "crm.messaging", "detail-type": "MessageSent", "detail": {}})));
        assert!(channel.matches(
            &json!({"source": "crm.scheduler", "detail-type": "TimerFired", "detail": {"kind": "message-deferral"}})
        ));
        assert!(!channel.matches(
            &json!({"source": "crm.scheduler", "detail-type": "TimerFired", "detail": {"kind": "journey-wait"}})
        ));
    }
}
