//! Message templates as data, with versions (issue 19 item 9, decision 0077).
//!
//! A template written through the API (`PUT /templates/{id}`) has a stream
//! `template-<id>` of `TemplatePublished` events, one per version: its
//! parts (subject, MJML, text, as [`TemplateParts`]), its channel and the
//! sample variables it was checked with. A template's version is the stream
//! version of its `TemplatePublished` (the stream holds nothing else, so
//! versions are 1, 2, 3, ...); the event carries it too.
//!
//! - **Shipped templates are version 1 while they have no stream**, as
//!   shipped campaigns are (decision 0009): the compiled-in folders
//!   `templates/<id>/` are the fallback. The first write to a shipped id
//!   stores the shipped parts as version 1 in the same append, so version 1
//!   keeps meaning "as shipped" and the first edit is version 2.
//! - **Checked by rendering the sample**: a version is stored only if every
//!   part parses and renders with its sample (strict variables), so a
//!   template that reads a variable its sample lacks is refused; the error
//!   names the part and the line. A channel never changes (campaigns send
//!   a template on its channel). Putting the current version again writes
//!   nothing.
//! - **Ids** are listed in the `templates` stream
//!   ([`crate::journey::templates::INDEX_STREAM`]): campaigns may name them.
//! - **At send time** the channel asks a [`TemplateSource`] for the current
//!   version: [`StoredTemplates`] reads the template's stream past the
//!   version it holds (one read, usually empty) and keeps the compiled
//!   template of each id at its latest version.

use crate::aggregate::{Aggregate, AggregateError, AggregateService, DecideContext, Executed};
use crate::clock::Clock;
use crate::consent::Channel;
use crate::event::{Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::failure::{Classify, Failure, FailureKind};
use crate::journey::templates::{self as registry, TemplateIndexEvent, INDEX_STREAM, KNOWN_TEMPLATES};
use crate::messaging::render::{self, CompiledTemplate, RenderError, Rendered, TemplateParts};
use crate::ports::{append_unordered, AppendError, EventStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The most a version's parts and sample may weigh together (bytes of
/// JSON): its event goes on the bus, which takes 256 KB an entry, and a
/// first edit of a shipped template stores two versions in one append.
pub const MAX_TEMPLATE_BYTES: usize = 100_000;

pub fn stream_id(template_id: &str) -> String {
    format!("template-{template_id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum TemplateEvent {
    /// Version `version` of a template (the stream version of this event):
    /// its parts as written (Liquid; the email body MJML), checked by
    /// rendering `sample`. Email has `subject`, `mjml` and `text`; SMS
    /// `text`; push `subject` (the title) and `text` (the body).
    TemplatePublished {
        template_id: String,
        version: u64,
        channel: Channel,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mjml: Option<String>,
        text: String,
        /// The variables it was checked with, and previews start from.
        sample: Value,
    },
}

impl DomainEvent for TemplateEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// Every event type on a template stream and the template index.
pub const TEMPLATE_EVENT_TYPES: &[&str] = &["TemplatePublished", "TemplateRegistered"];

/// One version of a template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateVersion {
    pub parts: TemplateParts,
    pub sample: Value,
    /// When it was published (`None`: the shipped version, never stored).
    pub published_at: Option<DateTime<Utc>>,
}

/// A template's stream as its events fold it.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateState {
    /// Every version: its stream version → the version.
    pub versions: BTreeMap<u64, TemplateVersion>,
    /// The stream's version.
    pub version: u64,
}

/// What is asked of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateCommand {
    /// A new version (nothing if it is the current one).
    Publish { parts: TemplateParts, sample: Value },
}

/// Why a template was not stored or read; nothing was written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// A field of the request is refused: a part that does not parse or
    /// render with the sample (with its line, 1-based, when known), a
    /// channel that is not the template's, a sample that is not an object.
    #[error("{field}{}: {message}", .line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        field: String,
        line: Option<usize>,
        message: String,
    },
    #[error("template not found")]
    NotFound,
    /// A version the template does not have.
    #[error("the template has no version {0}")]
    UnknownVersion(u64),
    /// Another writer changed the template between its read and this
    /// append (the caller retries the request).
    #[error("the template was changed concurrently; retry")]
    ChangedConcurrently,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Failed(Failure),
}

impl TemplateError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        TemplateError::Invalid {
            field: field.to_string(),
            line: None,
            message: message.into(),
        }
    }
}

impl Classify for TemplateError {
    fn kind(&self) -> FailureKind {
        match self {
            TemplateError::Invalid { .. } | TemplateError::NotFound | TemplateError::UnknownVersion(_) => {
                FailureKind::Poison
            }
            TemplateError::ChangedConcurrently => FailureKind::Conflict,
            TemplateError::Store(e) => e.kind(),
            TemplateError::Failed(f) => f.kind(),
        }
    }
}

impl From<AggregateError<TemplateError>> for TemplateError {
    fn from(e: AggregateError<TemplateError>) -> Self {
        match e {
            AggregateError::Rejected(e) => e,
            AggregateError::Store(e) => TemplateError::Store(e),
            AggregateError::Contended { .. } => TemplateError::ChangedConcurrently,
            AggregateError::TooLarge(reason) => TemplateError::invalid("text", reason),
            other => TemplateError::Failed(Failure::from_error("template", other)),
        }
    }
}

/// A render error of the sample as the field of the request at fault.
fn from_render(e: RenderError) -> TemplateError {
    match e {
        RenderError::Invalid {
            part, line, message, ..
        } => TemplateError::Invalid {
            field: part.to_string(),
            line,
            message,
        },
        RenderError::MissingVariable {
            variable, part, line, ..
        } => TemplateError::Invalid {
            field: part.to_string(),
            line,
            message: format!(
                "reads the variable {variable}, which the sample does not have: add it to the sample, or test it \
                 with {{% if %}}"
            ),
        },
        RenderError::InvalidVariables { .. } => TemplateError::invalid("sample", "must be a JSON object"),
        RenderError::UnknownTemplate(_) => TemplateError::NotFound,
    }
}

/// Checks a version: its size, its parts for its channel, and that it
/// renders with its sample. Returns the sample rendered.
pub fn check(template_id: &str, parts: &TemplateParts, sample: &Value) -> Result<Rendered, TemplateError> {
    if !registry::is_valid_id(template_id) {
        return Err(TemplateError::invalid(
            "id",
            format!(
                "\"{template_id}\" is not a template id: lowercase letters, digits and single dashes, at most {} \
                 characters",
                registry::MAX_ID_LEN
            ),
        ));
    }
    if !sample.is_object() {
        return Err(TemplateError::invalid(
            "sample",
            "must be a JSON object: the variables the template is checked with",
        ));
    }
    let sizes = [
        ("subject", parts.subject.as_deref().map_or(0, str::len)),
        ("mjml", parts.mjml.as_deref().map_or(0, str::len)),
        ("text", parts.text.len()),
        ("sample", sample.to_string().len()),
    ];
    let total: usize = sizes.iter().map(|(_, n)| n).sum();
    if total > MAX_TEMPLATE_BYTES {
        let largest = sizes.iter().max_by_key(|(_, n)| *n).map_or("text", |(f, _)| f);
        return Err(TemplateError::invalid(
            largest,
            format!("the template weighs {total} bytes (parts and sample); at most {MAX_TEMPLATE_BYTES}"),
        ));
    }
    let compiled = render::compile_template(template_id, 0, parts).map_err(from_render)?;
    render::render_compiled(&compiled, sample).map_err(from_render)
}

/// The template aggregate: stream `template-<id>`, input the shipped parts
/// and sample of the id (if it is a shipped template).
pub struct TemplateAggregate;

impl Aggregate for TemplateAggregate {
    type State = TemplateState;
    type Command = TemplateCommand;
    type Event = TemplateEvent;
    type Error = TemplateError;
    type Input = Option<(TemplateParts, Value)>;

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }

    fn customer_id(_: &TemplateState) -> Option<&str> {
        None
    }

    fn version(state: &TemplateState) -> u64 {
        state.version
    }

    fn not_found() -> TemplateError {
        TemplateError::NotFound
    }

    /// The first write to a shipped id stores the shipped parts as version
    /// 1 first. The current version put again decides nothing.
    fn decide(
        state: Option<&TemplateState>,
        command: &TemplateCommand,
        ctx: &DecideContext<'_, Self::Input>,
    ) -> Result<Vec<TemplateEvent>, TemplateError> {
        let TemplateCommand::Publish { parts, sample } = command;
        let current = match state.and_then(|s| s.versions.values().next_back()) {
            Some(v) => Some((&v.parts, &v.sample)),
            None => ctx.input.as_ref().map(|(p, s)| (p, s)),
        };
        if let Some((current_parts, current_sample)) = current {
            if current_parts.channel != parts.channel {
                return Err(TemplateError::invalid(
                    "channel",
                    format!(
                        "the template is a {} template: a version cannot change its channel (campaigns send it on \
                         {}); use another id",
                        current_parts.channel, current_parts.channel
                    ),
                ));
            }
            if current_parts == parts && current_sample == sample {
                return Ok(Vec::new());
            }
        }
        check(ctx.id, parts, sample)?;
        let mut events = Vec::new();
        if let (None, Some((shipped_parts, shipped_sample))) = (state, ctx.input.as_ref()) {
            events.push(published(ctx.id, 1, shipped_parts, shipped_sample));
        }
        let version = state.map_or(0, |s| s.version) + events.len() as u64 + 1;
        events.push(published(ctx.id, version, parts, sample));
        Ok(events)
    }

    fn evolve(
        state: Option<TemplateState>,
        event: &TemplateEvent,
        at: DateTime<Utc>,
        version: u64,
    ) -> Option<TemplateState> {
        let mut s = state.unwrap_or(TemplateState {
            versions: BTreeMap::new(),
            version: 0,
        });
        s.version = version;
        let (parts, sample) = event_parts(event);
        s.versions.insert(
            version,
            TemplateVersion {
                parts,
                sample,
                published_at: Some(at),
            },
        );
        Some(s)
    }
}

fn published(template_id: &str, version: u64, parts: &TemplateParts, sample: &Value) -> TemplateEvent {
    TemplateEvent::TemplatePublished {
        template_id: template_id.to_string(),
        version,
        channel: parts.channel,
        subject: parts.subject.clone(),
        mjml: parts.mjml.clone(),
        text: parts.text.clone(),
        sample: sample.clone(),
    }
}

fn event_parts(event: &TemplateEvent) -> (TemplateParts, Value) {
    let TemplateEvent::TemplatePublished {
        channel,
        subject,
        mjml,
        text,
        sample,
        ..
    } = event;
    (
        TemplateParts {
            channel: *channel,
            subject: subject.clone(),
            mjml: mjml.clone(),
            text: text.clone(),
        },
        sample.clone(),
    )
}

/// Whether a version is what ships (`shipped`) or was written through the
/// API (`custom`): its parts compared with the compiled-in ones of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateOrigin {
    Shipped,
    Custom,
}

/// A template at one of its versions.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTemplate {
    pub id: String,
    /// The version shown.
    pub version: u64,
    /// The version the channel sends.
    pub current_version: u64,
    /// Every version, oldest first.
    pub versions: Vec<u64>,
    pub parts: TemplateParts,
    pub sample: Value,
    pub origin: TemplateOrigin,
    /// When this version was published (`None`: shipped, never stored).
    pub published_at: Option<DateTime<Utc>>,
}

/// One line of the template list: a template at its current version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateSummary {
    pub id: String,
    pub channel: Channel,
    pub version: u64,
    pub source: TemplateOrigin,
    /// When its current version was published (`None`: as shipped, never stored).
    pub updated_at: Option<DateTime<Utc>>,
}

/// Writes and reads templates.
pub struct TemplateService {
    events: Arc<dyn EventStore>,
    templates: AggregateService<TemplateAggregate>,
    clock: Arc<dyn Clock>,
}

impl TemplateService {
    pub fn new(events: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        TemplateService {
            templates: AggregateService::new(events.clone(), clock.clone()),
            events,
            clock,
        }
    }

    /// Checks and stores a new version of `id`, registering a new id first.
    /// Returns the template at its current version and whether a version
    /// was written (the current one put again writes nothing).
    pub async fn put(
        &self,
        id: &str,
        parts: TemplateParts,
        sample: Value,
        actor: Actor,
    ) -> Result<(StoredTemplate, bool), TemplateError> {
        let meta = CommandMeta::new(actor);
        let input = shipped(id)?;
        let command = TemplateCommand::Publish { parts, sample };
        let (state, _) = self.templates.load_stream(id).await?;
        if state.is_none() {
            // First write: refusals (and "nothing to write") first, then the
            // id is registered (reading deduplicates).
            let now = self.clock.now();
            let ctx = DecideContext { id, now, input: &input };
            if TemplateAggregate::decide(None, &command, &ctx)?.is_empty() {
                return Ok((self.get(id, None).await?, false));
            }
            self.register(id, &meta, now).await?;
        }
        let no_answer = |_: &TemplateState, _: &[EventEnvelope]| (200, Value::Null);
        let written = match self
            .templates
            .try_once(id, state, &command, &input, &meta, None, &no_answer)
            .await?
        {
            Some(Executed::Applied { events, .. }) => !events.is_empty(),
            None => return Err(TemplateError::ChangedConcurrently),
            // Only a command with an idempotency key is answered from a receipt.
            Some(Executed::Replayed { .. }) => {
                return Err(TemplateError::Store(StoreError::Failed(
                    "answered from a receipt it never asked for".into(),
                )))
            }
        };
        Ok((self.get(id, None).await?, written))
    }

    /// The template `id` at `version` (its current one by default).
    pub async fn get(&self, id: &str, version: Option<u64>) -> Result<StoredTemplate, TemplateError> {
        let (versions, shipped_parts) = self.versions(id).await?;
        let current_version = versions.keys().next_back().copied().ok_or(TemplateError::NotFound)?;
        let version = version.unwrap_or(current_version);
        let v = versions.get(&version).ok_or(TemplateError::UnknownVersion(version))?;
        Ok(StoredTemplate {
            id: id.to_string(),
            version,
            current_version,
            versions: versions.keys().copied().collect(),
            origin: origin(shipped_parts.as_ref(), &v.parts),
            parts: v.parts.clone(),
            sample: v.sample.clone(),
            published_at: v.published_at,
        })
    }

    /// Every template (shipped and stored), in id order, at its current version.
    pub async fn list(&self) -> Result<Vec<TemplateSummary>, TemplateError> {
        let mut ids: BTreeSet<String> = KNOWN_TEMPLATES.iter().map(|s| s.to_string()).collect();
        ids.extend(registry::stored_ids(self.events.as_ref()).await?);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (versions, shipped_parts) = self.versions(&id).await?;
            // A registration whose first version was never appended names nothing.
            let Some((version, v)) = versions.iter().next_back() else {
                continue;
            };
            out.push(TemplateSummary {
                channel: v.parts.channel,
                version: *version,
                source: origin(shipped_parts.as_ref(), &v.parts),
                updated_at: v.published_at,
                id,
            });
        }
        Ok(out)
    }

    /// Every version of `id`: its stream's, or the shipped one as version 1
    /// (empty: no such template); and its shipped parts, if shipped.
    async fn versions(
        &self,
        id: &str,
    ) -> Result<(BTreeMap<u64, TemplateVersion>, Option<TemplateParts>), TemplateError> {
        if !registry::is_valid_id(id) {
            return Ok((BTreeMap::new(), None));
        }
        let input = shipped(id)?;
        let (state, _) = self.templates.load_stream(id).await?;
        let versions = match (state, &input) {
            (Some(state), _) => state.versions,
            (None, Some((parts, sample))) => BTreeMap::from([(
                1,
                TemplateVersion {
                    parts: parts.clone(),
                    sample: sample.clone(),
                    published_at: None,
                },
            )]),
            (None, None) => BTreeMap::new(),
        };
        Ok((versions, input.map(|(parts, _)| parts)))
    }

    /// Appends a `TemplateRegistered` of `id` to the `templates` stream.
    async fn register(&self, id: &str, meta: &CommandMeta, now: DateTime<Utc>) -> Result<(), TemplateError> {
        let register = [TemplateIndexEvent::TemplateRegistered {
            template_id: id.to_string(),
        }];
        match append_unordered(self.events.as_ref(), INDEX_STREAM, &register, meta, now).await {
            Ok(_) => Ok(()),
            Err(AppendError::Store(e)) => Err(TemplateError::Store(e)),
            Err(AppendError::Conflict { .. }) => Err(TemplateError::ChangedConcurrently),
            Err(other) => Err(TemplateError::Failed(Failure::from_error(INDEX_STREAM, other))),
        }
    }
}

/// The shipped parts and sample of `id`, if it is a shipped template.
fn shipped(id: &str) -> Result<Option<(TemplateParts, Value)>, TemplateError> {
    if !registry::is_known(id) {
        return Ok(None);
    }
    render::shipped_parts(id)
        .map(Some)
        .map_err(|e| TemplateError::Failed(Failure::poison("shipped template", e)))
}

fn origin(shipped: Option<&TemplateParts>, parts: &TemplateParts) -> TemplateOrigin {
    if shipped == Some(parts) {
        TemplateOrigin::Shipped
    } else {
        TemplateOrigin::Custom
    }
}

/// Renders a version with its sample, `patch` applied over it as a JSON
/// Merge Patch: what `POST /templates/{id}/preview` shows.
pub fn preview(template: &StoredTemplate, patch: Option<&Value>) -> Result<Rendered, RenderError> {
    let compiled = render::compile_template(&template.id, template.version, &template.parts)?;
    let mut vars = template.sample.clone();
    if let Some(patch) = patch {
        render::merge_patch(&mut vars, patch);
    }
    render::render_compiled(&compiled, &vars)
}

// ---------------------------------------------------------------------------
// What the channel renders.

/// A template ready to render: shipped (compiled in, version 1) or a
/// stored version.
#[derive(Debug, Clone)]
pub enum CurrentTemplate {
    Shipped(&'static CompiledTemplate),
    Stored(Arc<CompiledTemplate>),
}

impl std::ops::Deref for CurrentTemplate {
    type Target = CompiledTemplate;

    fn deref(&self) -> &CompiledTemplate {
        match self {
            CurrentTemplate::Shipped(t) => t,
            CurrentTemplate::Stored(t) => t,
        }
    }
}

/// Why no template to render: the store failed (its kind says whether to
/// retry), or the template is unknown or does not compile (poison: the
/// message fails for good).
#[derive(Debug, thiserror::Error)]
pub enum TemplateSourceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Render(#[from] RenderError),
}

impl Classify for TemplateSourceError {
    fn kind(&self) -> FailureKind {
        match self {
            TemplateSourceError::Store(e) => e.kind(),
            TemplateSourceError::Render(e) => e.kind(),
        }
    }
}

/// Where the channel gets the template it renders (the port; decision 0077).
#[async_trait]
pub trait TemplateSource: Send + Sync {
    /// The current version of `template_id`, compiled.
    async fn current(&self, template_id: &str) -> Result<CurrentTemplate, TemplateSourceError>;
}

/// The compiled-in templates only (tests, tools without an event store).
pub struct ShippedTemplates;

#[async_trait]
impl TemplateSource for ShippedTemplates {
    async fn current(&self, template_id: &str) -> Result<CurrentTemplate, TemplateSourceError> {
        Ok(CurrentTemplate::Shipped(render::shipped_template(template_id)?))
    }
}

/// The templates as stored, the shipped ones as the fallback: each call
/// reads the template's stream past the version held (one read, usually
/// empty), and a newer version is compiled once and kept. Compiled
/// templates are kept per id at their latest version (a version never
/// changes once stored, so (id, version) names one compiled template).
pub struct StoredTemplates {
    events: Arc<dyn EventStore>,
    compiled: std::sync::Mutex<HashMap<String, Arc<CompiledTemplate>>>,
}

impl StoredTemplates {
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        StoredTemplates {
            events,
            compiled: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn held(&self, template_id: &str) -> Option<Arc<CompiledTemplate>> {
        match self.compiled.lock() {
            Ok(map) => map.get(template_id).cloned(),
            Err(poisoned) => poisoned.into_inner().get(template_id).cloned(),
        }
    }

    fn keep(&self, template: Arc<CompiledTemplate>) {
        let mut map = match self.compiled.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let newer = map
            .get(template.id())
            .is_none_or(|held| held.version() < template.version());
        if newer {
            map.insert(template.id().to_string(), template);
        }
    }
}

#[async_trait]
impl TemplateSource for StoredTemplates {
    async fn current(&self, template_id: &str) -> Result<CurrentTemplate, TemplateSourceError> {
        if !registry::is_valid_id(template_id) {
            return Err(RenderError::UnknownTemplate(template_id.to_string()).into());
        }
        let held = self.held(template_id);
        let seen = held.as_ref().map_or(0, |t| t.version());
        let stream = stream_id(template_id);
        let newer = self.events.read_stream(&stream, seen, usize::MAX).await?;
        let Some(latest) = newer.last() else {
            return match held {
                Some(t) => Ok(CurrentTemplate::Stored(t)),
                None => Ok(CurrentTemplate::Shipped(render::shipped_template(template_id)?)),
            };
        };
        let event = TemplateEvent::from_envelope(latest).map_err(|e| StoreError::Failed(format!("{stream}: {e}")))?;
        let (parts, _) = event_parts(&event);
        let compiled = Arc::new(render::compile_template(template_id, latest.version, &parts)?);
        self.keep(compiled.clone());
        Ok(CurrentTemplate::Stored(compiled))
    }
}

#[cfg(test)]
#[path = "templates_tests.rs"]
mod tests;
