//! Campaign definitions as data: the YAML files under `campaigns/`
//! (ARCHITECTURE.md §7), their types, and a loader that validates everything
//! and reports every problem with its path.
//!
//! The format is published as a JSON Schema in `schemas/campaign.schema.json`;
//! [`Campaign::from_yaml`] checks more than the schema can (patterns,
//! template ids, the step graph, consent for marketing sends).

mod load;

use super::condition::Condition;
use super::duration::{Duration, LocalTime};
use crate::consent::{Channel, Purpose};
use crate::pattern::EventPattern;
pub use crate::vocabulary::{Category, MarketingKind};
use load::Loader;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The step target that ends the journey.
pub const END: &str = "exit";

/// A campaign: when a journey starts, who may enter, what ends it early, and
/// the steps it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// A slug: lowercase letters, digits and single dashes.
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What its marketing sends are to the customer (decision 0064):
    /// `lifecycle` (they follow up the customer's own action and count only
    /// against the caps) or `promotional` (the default: the customer's
    /// email frequency governs them).
    #[serde(default)]
    pub kind: MarketingKind,
    pub trigger: Trigger,
    #[serde(default)]
    pub entry: EntryRules,
    /// Events that end a running journey, even in the middle of a wait.
    #[serde(default)]
    pub exit_on: Vec<ExitRule>,
    /// Events that count as the campaign's success; they end the journey too.
    #[serde(default)]
    pub goals: Vec<Goal>,
    pub steps: Vec<Step>,
    /// A campaign whose first version says so is paused until resumed: a
    /// shipped campaign a shop must choose to run (the consent renewal).
    /// Later versions do not change whether it is paused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starts_paused: bool,
}

/// What starts a journey: an event matching `pattern` for which every
/// condition holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub pattern: EventPattern,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A named event rule: an exit event or a goal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRule {
    pub name: String,
    pub pattern: EventPattern,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

pub type ExitRule = EventRule;
pub type Goal = EventRule;

/// Who may enter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRules {
    /// Consent the customer must have in force to enter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentRequirement>,
    /// A segment the customer must be in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    #[serde(default)]
    pub reentry: Reentry,
    /// A path into the trigger event (`event.detail.data.cart_id`) naming
    /// what one journey is about; by default the event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    /// Browse abandonment (decision 0069): the trigger counts only if the
    /// customer viewed enough distinct products, and touched no cart, in
    /// the time before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browsed: Option<BrowseRule>,
}

/// The most distinct products a [`BrowseRule`] may ask for.
pub const MAX_DISTINCT_PRODUCTS: u32 = 100;

/// Seed 000's "viewed multiple products, no cart" (decision 0069): at the
/// trigger, the customer has viewed (`ProductViewed`) at least
/// `min_distinct_products` distinct products within `within` before it
/// (the trigger's own view included), and neither created a cart nor added
/// an item to one in that time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowseRule {
    /// At least this many distinct product ids (1 to 100; 2 by default).
    #[serde(default = "BrowseRule::default_min")]
    pub min_distinct_products: u32,
    /// How far back from the trigger the views and carts count.
    pub within: Duration,
}

impl BrowseRule {
    /// The number of distinct products a rule that names none asks for.
    pub const DEFAULT_MIN_DISTINCT_PRODUCTS: u32 = 2;

    fn default_min() -> u32 {
        Self::DEFAULT_MIN_DISTINCT_PRODUCTS
    }
}

/// A consent purpose over a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequirement {
    pub purpose: Purpose,
    pub channel: Channel,
}

/// Whether a customer may enter the campaign again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reentry {
    /// Once ever.
    #[default]
    Once,
    /// Again once `window` has passed since the last entry.
    OncePerWindow { window: Duration },
    /// Every time the trigger fires (with a distinct dedupe key).
    EveryTime,
}

/// One step of a journey. Every step has a unique `id`; unless it says
/// otherwise (`next`), a step is followed by the one after it, and the last
/// step ends the journey. The target [`END`] (`exit`) ends it too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    Wait(WaitStep),
    WaitUntil(WaitUntilStep),
    Branch(BranchStep),
    Send(SendStep),
    UpdateSegment(UpdateSegmentStep),
    Emit(EmitStep),
    Exit(ExitStep),
}

/// Waits for a duration, or until the next local time of day (in the
/// customer's time zone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitStep {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_local_time: Option<LocalTime>,
}

/// Waits for an event (going on to `next`), or for `timeout` (going to
/// `on_timeout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitUntilStep {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    pub pattern: EventPattern,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    pub timeout: Duration,
    pub on_timeout: String,
}

/// Goes to `then` if every condition holds, else to `else`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchStep {
    pub id: String,
    pub conditions: Vec<Condition>,
    pub then: String,
    #[serde(rename = "else")]
    pub otherwise: String,
}

/// Requests a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendStep {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    pub channel: Channel,
    /// A template id from [`templates::KNOWN_TEMPLATES`].
    pub template: String,
    pub category: Category,
    /// The consent purpose checked (for this channel) when sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
}

impl SendStep {
    /// The consent the send needs: its `purpose`, else marketing for a
    /// marketing send and none for a transactional one.
    pub fn consent_purpose(&self) -> Option<Purpose> {
        self.purpose.or(match self.category {
            Category::Marketing => Some(Purpose::Marketing),
            Category::Transactional => None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SegmentAction {
    Add,
    Remove,
}

/// Adds the customer to a segment or removes them from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSegmentStep {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    pub segment: String,
    pub action: SegmentAction,
}

/// Emits a domain event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitStep {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    pub event_type: String,
    #[serde(default = "empty_object")]
    pub data: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Ends the journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitStep {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

const STEP_TYPES: [&str; 7] = ["wait", "wait_until", "branch", "send", "update_segment", "emit", "exit"];

impl Step {
    pub fn id(&self) -> &str {
        match self {
            Step::Wait(s) => &s.id,
            Step::WaitUntil(s) => &s.id,
            Step::Branch(s) => &s.id,
            Step::Send(s) => &s.id,
            Step::UpdateSegment(s) => &s.id,
            Step::Emit(s) => &s.id,
            Step::Exit(s) => &s.id,
        }
    }

    /// The `type` of the step as written.
    pub fn type_name(&self) -> &'static str {
        match self {
            Step::Wait(_) => "wait",
            Step::WaitUntil(_) => "wait_until",
            Step::Branch(_) => "branch",
            Step::Send(_) => "send",
            Step::UpdateSegment(_) => "update_segment",
            Step::Emit(_) => "emit",
            Step::Exit(_) => "exit",
        }
    }

    /// The explicit `next`, for the steps that have one.
    pub fn next(&self) -> Option<&str> {
        match self {
            Step::Wait(s) => s.next.as_deref(),
            Step::WaitUntil(s) => s.next.as_deref(),
            Step::Send(s) => s.next.as_deref(),
            Step::UpdateSegment(s) => s.next.as_deref(),
            Step::Emit(s) => s.next.as_deref(),
            Step::Branch(_) | Step::Exit(_) => None,
        }
    }

    /// Whether the step suspends the journey until time passes.
    pub fn waits(&self) -> bool {
        matches!(self, Step::Wait(_) | Step::WaitUntil(_))
    }

    /// The step ids this step names, with the field that names them.
    fn named_targets(&self) -> Vec<(&'static str, &str)> {
        let mut targets = Vec::new();
        if let Some(next) = self.next() {
            targets.push(("next", next));
        }
        match self {
            Step::WaitUntil(s) => targets.push(("on_timeout", s.on_timeout.as_str())),
            Step::Branch(s) => {
                targets.push(("then", s.then.as_str()));
                targets.push(("else", s.otherwise.as_str()));
            }
            _ => {}
        }
        targets
    }
}

impl Campaign {
    /// Whether the campaign sends, and every send needs the customer's
    /// consent for `purpose` on `channel`: without that consent a journey
    /// has nothing left to send them, so revoking it ends the journey
    /// (issue 19 item 3, decision 0067). A campaign that also sends on
    /// another channel, or transactional messages, runs on; the channel
    /// function still refuses each send that lacks consent.
    pub fn sends_only_under(&self, purpose: Purpose, channel: Channel) -> bool {
        let mut sends = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(send) => Some(send),
                _ => None,
            })
            .peekable();
        sends.peek().is_some() && sends.all(|s| s.channel == channel && s.consent_purpose() == Some(purpose))
    }

    /// Loads and validates a definition. On failure, every problem found is
    /// returned, each with the path of the offending part.
    pub fn from_yaml(text: &str) -> Result<Campaign, Vec<DefinitionError>> {
        let raw: Value =
            serde_yaml::from_str(text).map_err(|e| vec![DefinitionError::new("", format!("invalid YAML: {e}"))])?;
        Self::from_value(&raw)
    }

    /// Validates a definition given as JSON (the API's form of the same document).
    pub fn from_value(raw: &Value) -> Result<Campaign, Vec<DefinitionError>> {
        let mut loader = Loader::default();
        let campaign = loader.load(raw);
        match campaign {
            Some(campaign) if loader.errors.is_empty() => Ok(campaign),
            _ => Err(loader.errors),
        }
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id() == id)
    }

    /// Where the journey goes after step `id` completes normally: the
    /// explicit `next` or the following step; `None` when it ends (or for a
    /// branch, whose targets depend on its conditions).
    pub fn next_after(&self, id: &str) -> Option<&Step> {
        let index = self.steps.iter().position(|s| s.id() == id)?;
        let step = &self.steps[index];
        match step {
            Step::Branch(_) | Step::Exit(_) => None,
            _ => match step.next() {
                Some(END) => None,
                Some(target) => self.step(target),
                None => self.steps.get(index + 1),
            },
        }
    }
}

/// One problem in a definition: where (`steps[2].timeout`,
/// `trigger.pattern.detail`) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DefinitionError {
    pub path: String,
    pub message: String,
}

impl DefinitionError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        DefinitionError {
            path: path.into(),
            message: message.into(),
        }
    }
}
