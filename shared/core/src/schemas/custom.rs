//! Schemas of custom events (decision 0022): a custom (non-domain) event
//! name from ingestion may register a JSON Schema of its `properties`.
//! Each name has a stream `schema-custom-<name>` of
//! `CustomEventSchemaRegistered` events; a schema's version is the version
//! of its event there. Ingestion validates with [`CustomEventSchemas::validate`];
//! a name with no schema passes.

use crate::aggregate::{Aggregate, AggregateError, AggregateService, DecideContext, Executed};
use crate::clock::Clock;
use crate::event::{Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::failure::{Classify, FailureKind};
use crate::ports::{EventStore, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The stream of the schemas registered for custom event `name`.
pub fn stream_id(name: &str) -> String {
    format!("schema-custom-{name}")
}

/// The longest custom event name.
pub const MAX_NAME_CHARS: usize = 200;

/// The events of a `schema-custom-<name>` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum SchemaEvent {
    /// A new version of a custom event's schema (of its `properties`).
    CustomEventSchemaRegistered { name: String, schema: Value },
}

impl DomainEvent for SchemaEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// A registered schema, at one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomSchema {
    pub name: String,
    pub version: u64,
    pub schema: Value,
    pub registered_at: DateTime<Utc>,
}

/// Registering a schema failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CustomSchemaError {
    /// The name or the schema is not acceptable; `field` names it (`name`,
    /// `schema`, `schema.properties.price.type`, ...).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AggregateError<NoSchema>> for CustomSchemaError {
    fn from(e: AggregateError<NoSchema>) -> Self {
        match e {
            AggregateError::Store(s) => CustomSchemaError::Store(s),
            AggregateError::Contended { .. } => {
                CustomSchemaError::Conflict("the schema was registered concurrently; retry".to_string())
            }
            other => CustomSchemaError::Store(StoreError::Failed(other.to_string())),
        }
    }
}

impl Classify for CustomSchemaError {
    fn kind(&self) -> FailureKind {
        match self {
            CustomSchemaError::Invalid { .. } => FailureKind::Poison,
            CustomSchemaError::Conflict(_) => FailureKind::Conflict,
            CustomSchemaError::Store(e) => e.kind(),
        }
    }
}

/// What a custom event's schema stream can be asked.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaCommand {
    /// Register `schema` (checked before) as the name's next version.
    Register { schema: Value },
}

/// The schema after `event`, the `version`th of the stream, stored `at`.
pub fn evolve(event: &SchemaEvent, at: DateTime<Utc>, version: u64) -> CustomSchema {
    let SchemaEvent::CustomEventSchemaRegistered { name, schema } = event;
    CustomSchema {
        name: name.clone(),
        version,
        schema: schema.clone(),
        registered_at: at,
    }
}

/// A new version of `name`'s schema, unless it is the latest already.
pub fn decide(state: Option<&CustomSchema>, command: &SchemaCommand, name: &str) -> Vec<SchemaEvent> {
    let SchemaCommand::Register { schema } = command;
    if state.is_some_and(|s| &s.schema == schema) {
        return Vec::new();
    }
    vec![SchemaEvent::CustomEventSchemaRegistered {
        name: name.to_string(),
        schema: schema.clone(),
    }]
}

/// Registering is never refused once checked; this is the command path's
/// answer to a command that wrote nothing on a name with no schema (which
/// [`decide`] never does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no schema is registered for this name")]
pub struct NoSchema;

/// A custom event's schema stream for the shared command path: the
/// aggregate id is the custom event's name.
pub struct CustomSchemaStream;

impl Aggregate for CustomSchemaStream {
    type State = CustomSchema;
    type Command = SchemaCommand;
    type Event = SchemaEvent;
    type Error = NoSchema;
    type Input = ();

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }
    fn customer_id(_: &CustomSchema) -> Option<&str> {
        None
    }
    fn version(state: &CustomSchema) -> u64 {
        state.version
    }
    fn not_found() -> NoSchema {
        NoSchema
    }
    fn decide(
        state: Option<&CustomSchema>,
        command: &SchemaCommand,
        ctx: &DecideContext<'_, ()>,
    ) -> Result<Vec<SchemaEvent>, NoSchema> {
        Ok(decide(state, command, ctx.id))
    }
    fn evolve(_: Option<CustomSchema>, event: &SchemaEvent, at: DateTime<Utc>, version: u64) -> Option<CustomSchema> {
        Some(evolve(event, at, version))
    }
}

/// One way an event's properties fail its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaViolation {
    /// Where, as a dotted path from the event (`properties.price`,
    /// `properties.items.0.sku`; `properties` for the object itself).
    pub path: String,
    pub message: String,
}

/// A custom event does not match its registered schema, or the schema could
/// not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaCheckError {
    #[error("{name} does not match its schema (version {version}): {}", summary(.violations))]
    Invalid {
        name: String,
        version: u64,
        violations: Vec<SchemaViolation>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn summary(violations: &[SchemaViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.path, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Classify for SchemaCheckError {
    fn kind(&self) -> FailureKind {
        match self {
            SchemaCheckError::Invalid { .. } => FailureKind::Poison,
            SchemaCheckError::Store(e) => e.kind(),
        }
    }
}

impl SchemaCheckError {
    /// The failing paths and messages (none for a store error).
    pub fn violations(&self) -> &[SchemaViolation] {
        match self {
            SchemaCheckError::Invalid { violations, .. } => violations,
            SchemaCheckError::Store(_) => &[],
        }
    }

    /// The first failing path (for a problem's `field`).
    pub fn field(&self) -> Option<&str> {
        self.violations().first().map(|v| v.path.as_str())
    }
}

/// A JSON pointer (`/items/0/sku`) as a dotted path under `prefix`.
fn dotted(prefix: &str, pointer: &str) -> String {
    let mut out = prefix.to_string();
    for segment in pointer.split('/').skip(1) {
        out.push('.');
        out.push_str(&segment.replace("~1", "/").replace("~0", "~"));
    }
    out
}

/// The `$schema` values accepted (the drafts the validator knows).
const KNOWN_DRAFTS: &[&str] = &[
    "http://json-schema.org/draft-04/schema#",
    "http://json-schema.org/draft-06/schema#",
    "http://json-schema.org/draft-07/schema#",
    "https://json-schema.org/draft/2019-09/schema",
    "https://json-schema.org/draft/2020-12/schema",
];

fn invalid(field: impl Into<String>, message: impl Into<String>) -> CustomSchemaError {
    CustomSchemaError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks a custom event name.
pub fn check_name(name: &str) -> Result<(), CustomSchemaError> {
    if name.trim().is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid("name", format!("must be at most {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) || name.contains('/') {
        return Err(invalid("name", "must not contain control characters or '/'"));
    }
    if name != name.trim() {
        return Err(invalid("name", "must not start or end with white space"));
    }
    Ok(())
}

/// Compiles a schema, or says which part of it is wrong (`schema.<path>`).
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, CustomSchemaError> {
    let Value::Object(object) = schema else {
        return Err(invalid("schema", "must be a JSON Schema object"));
    };
    if let Some(draft) = object.get("$schema") {
        if !draft.as_str().is_some_and(|d| KNOWN_DRAFTS.contains(&d)) {
            return Err(invalid(
                "schema.$schema",
                format!("must be one of {}", KNOWN_DRAFTS.join(", ")),
            ));
        }
    }
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| invalid(dotted("schema", e.instance_path().as_str()), e.masked().to_string()))
}

/// A compiled schema, cached per name with the stream version it reflects.
struct Cached {
    /// The stream version read up to.
    read_up_to: u64,
    latest: Option<(u64, Arc<jsonschema::Validator>)>,
}

/// Registers, reads and checks custom event schemas.
pub struct CustomEventSchemas {
    store: Arc<dyn EventStore>,
    /// The command path registering goes through (with a clock only).
    registry: Option<AggregateService<CustomSchemaStream>>,
    cache: Mutex<HashMap<String, Cached>>,
}

fn corrupt(stream: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("{stream}: {e}"))
}

fn registered(e: &EventEnvelope) -> Result<CustomSchema, StoreError> {
    let SchemaEvent::CustomEventSchemaRegistered { name, schema } =
        SchemaEvent::from_envelope(e).map_err(|err| corrupt(&e.stream_id, err))?;
    Ok(CustomSchema {
        name,
        version: e.version,
        schema,
        registered_at: e.occurred_at,
    })
}

impl CustomEventSchemas {
    /// Over `store`; only checks (registering needs a clock: [`Self::with_clock`]).
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        CustomEventSchemas {
            store,
            registry: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        // One attempt: a concurrent registration is answered as a conflict
        // (409), not silently stacked on.
        self.registry = Some(AggregateService::new(self.store.clone(), clock).with_max_attempts(1));
        self
    }

    /// Every registered version of `name`'s schema, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<CustomSchema>, StoreError> {
        self.store
            .read_stream(&stream_id(name), 0, usize::MAX)
            .await?
            .iter()
            .map(registered)
            .collect()
    }

    /// The latest schema of `name`, if one was registered.
    pub async fn get(&self, name: &str) -> Result<Option<CustomSchema>, StoreError> {
        Ok(self.versions(name).await?.pop())
    }

    /// Registers `schema` for `name` as its next version; the same schema
    /// as the latest registers nothing and answers the latest.
    pub async fn register(&self, name: &str, schema: Value, actor: Actor) -> Result<CustomSchema, CustomSchemaError> {
        check_name(name)?;
        compile(&schema)?;
        let registry = self
            .registry
            .as_ref()
            .ok_or_else(|| StoreError::Failed("custom event schemas: no clock to register with".into()))?;
        let respond = |_: &CustomSchema, _: &[EventEnvelope]| (200, Value::Null);
        let command = SchemaCommand::Register { schema };
        match registry
            .execute(name, &command, &(), &CommandMeta::new(actor), None, &respond)
            .await?
        {
            Executed::Applied { state, .. } => Ok(*state),
            Executed::Replayed { .. } => {
                Err(StoreError::Failed("custom event schemas: unexpected replay".into()).into())
            }
        }
    }

    /// The latest compiled schema of `name` (cached; only newer events are read).
    async fn validator(&self, name: &str) -> Result<Option<(u64, Arc<jsonschema::Validator>)>, StoreError> {
        let read_up_to = self
            .cache
            .lock()
            .map_err(|_| StoreError::Failed("custom schema cache poisoned".into()))?
            .get(name)
            .map_or(0, |c| c.read_up_to);
        let newer = self.store.read_stream(&stream_id(name), read_up_to, usize::MAX).await?;
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| StoreError::Failed("custom schema cache poisoned".into()))?;
        let entry = cache.entry(name.to_string()).or_insert(Cached {
            read_up_to: 0,
            latest: None,
        });
        if let Some(last) = newer.last().filter(|e| e.version > entry.read_up_to) {
            let s = registered(last)?;
            let compiled = compile(&s.schema).map_err(|e| corrupt(&last.stream_id, e))?;
            entry.read_up_to = last.version;
            entry.latest = Some((s.version, Arc::new(compiled)));
        }
        Ok(entry.latest.clone())
    }

    /// Checks a custom event's `properties` against the latest schema of
    /// `name`; a name without a schema passes. Messages never quote the
    /// offending value (it may be personal data).
    pub async fn validate(&self, name: &str, properties: &Value) -> Result<(), SchemaCheckError> {
        let Some((version, validator)) = self.validator(name).await? else {
            return Ok(());
        };
        let violations: Vec<SchemaViolation> = validator
            .iter_errors(properties)
            .map(|e| SchemaViolation {
                path: dotted("properties", e.instance_path().as_str()),
                message: e.masked().to_string(),
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(SchemaCheckError::Invalid {
                name: name.to_string(),
                version,
                violations,
            })
        }
    }
}
