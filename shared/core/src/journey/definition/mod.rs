//! Campaign definitions as data: the YAML files under `campaigns/`
//! (ARCHITECTURE.md §7), their types, and a loader that validates everything
//! and reports every problem with its path.
//!
//! The format is published as a JSON Schema in `schemas/campaign.schema.json`;
//! [`Campaign::from_yaml`] checks more than the schema can (patterns,
//! template ids, the step graph, consent for marketing sends).

mod load;
#[cfg(test)]
mod tests;

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
    /// Experiments (decision 0081): the share of the customers who enter
    /// that are held out of every send of the campaign, so that its effect
    /// can be measured against them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<Holdout>,
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
    /// A path into the event (`event.detail.data.order_id`): the rule
    /// matches only an event whose value there equals the value at the
    /// same path in the journey's trigger (decision 0073 addendum). A
    /// trigger without a value there is matched by no event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same: Option<String>,
}

impl EventRule {
    /// Whether `event` is about the same thing as `trigger` (the journey's
    /// triggering event), as `same` asks; true for a rule without `same`.
    pub fn same_as_trigger(&self, event: &Value, trigger: &Value) -> bool {
        let Some(path) = &self.same else { return true };
        let Ok((_, segments)) = super::condition::parse_path(path) else {
            return false;
        };
        match (
            super::condition::lookup(event, &segments),
            super::condition::lookup(trigger, &segments),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
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
    Split(SplitStep),
}

/// The most a holdout may hold out, in percent (decision 0081).
pub const MAX_HOLDOUT_PERCENT: u8 = 50;

/// A campaign's `holdout: {percent: 10}` (decision 0081): that share of the
/// customers who enter (1 to [`MAX_HOLDOUT_PERCENT`] percent, by a hash of
/// customer and campaign) are recorded and exit without any send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holdout {
    pub percent: u8,
}

/// An experiment (decision 0081): each customer goes to one variant's
/// `next`, chosen by a hash of customer, campaign and `experiment` against
/// the variants' weights, and always the same one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitStep {
    pub id: String,
    /// The experiment's id, a slug; what the assignment is recorded under.
    pub experiment: String,
    pub variants: Vec<Variant>,
}

/// One arm of a [`SplitStep`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// A step id-like name (`a`, `subject-short`), unique in the split.
    pub id: String,
    /// Its share against the other variants' weights (1 to 10 000).
    pub weight: u32,
    pub next: String,
}

/// The most one variant may weigh.
pub const MAX_VARIANT_WEIGHT: u32 = 10_000;

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
    /// One channel, or `preferred` (decision 0076): the channel function
    /// picks one of `fallback` for the customer at delivery.
    pub channel: SendChannel,
    /// A template id from [`templates::KNOWN_TEMPLATES`]: the message's, or
    /// with `channel: preferred` the one of each channel `templates` does
    /// not name.
    pub template: String,
    /// `channel: preferred`: the channels it may take, in the order tried
    /// after the customer's preferred one (decision 0076).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<Channel>,
    /// `channel: preferred`: the template of a channel, instead of `template`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub templates: std::collections::BTreeMap<Channel, String>,
    pub category: Category,
    /// The consent purpose checked (for this channel) when sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    /// A discount code the message carries (decision 0074).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<DiscountStep>,
}

/// A send step's `discount: {percent: 10, valid_for: 72h}` (decision
/// 0074): the channel mints a code worth `percent` off (1 to 100), valid
/// for `valid_for` from when the message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscountStep {
    pub percent: u8,
    pub valid_for: Duration,
}

impl DiscountStep {
    /// What the journey asks the channel for.
    pub fn offer(self) -> crate::vocabulary::DiscountOffer {
        crate::vocabulary::DiscountOffer {
            percent: self.percent,
            valid_for_seconds: self.valid_for.as_seconds(),
        }
    }
}

/// The channel of a send step: one, or the customer's preferred one among
/// the step's `fallback` (decision 0076).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SendChannel {
    Email,
    Sms,
    Push,
    Preferred,
}

impl SendChannel {
    /// The one channel of a send on one channel.
    pub fn fixed(self) -> Option<Channel> {
        match self {
            SendChannel::Email => Some(Channel::Email),
            SendChannel::Sms => Some(Channel::Sms),
            SendChannel::Push => Some(Channel::Push),
            SendChannel::Preferred => None,
        }
    }
}

impl From<Channel> for SendChannel {
    fn from(channel: Channel) -> Self {
        match channel {
            Channel::Email => SendChannel::Email,
            Channel::Sms => SendChannel::Sms,
            Channel::Push => SendChannel::Push,
        }
    }
}

impl SendStep {
    /// The channels the send may go on: its one channel, or its fallback
    /// list in order.
    pub fn channels(&self) -> Vec<Channel> {
        match self.channel.fixed() {
            Some(channel) => vec![channel],
            None => self.fallback.clone(),
        }
    }

    /// The template of the message on `channel`.
    pub fn template_for(&self, channel: Channel) -> &str {
        self.templates.get(&channel).unwrap_or(&self.template)
    }

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

const STEP_TYPES: [&str; 8] = [
    "wait",
    "wait_until",
    "branch",
    "send",
    "update_segment",
    "emit",
    "exit",
    "split",
];

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
            Step::Split(s) => &s.id,
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
            Step::Split(_) => "split",
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
            Step::Branch(_) | Step::Exit(_) | Step::Split(_) => None,
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
            // Each variant's `next`, checked with its own path by the loader.
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
        sends.peek().is_some()
            && sends.all(|s| s.channels().iter().all(|c| *c == channel) && s.consent_purpose() == Some(purpose))
    }

    /// The segments its conditions test (`segments.<segment-id>`, decision
    /// 0086): the trigger's, the exits' and goals', the branches' and the
    /// `wait_until` steps'. The engine reads the customer's membership only
    /// for a campaign that names one.
    pub fn segments_named(&self) -> std::collections::BTreeSet<&str> {
        let steps = self.steps.iter().flat_map(|s| match s {
            Step::Branch(b) => b.conditions.as_slice(),
            Step::WaitUntil(w) => w.conditions.as_slice(),
            _ => &[],
        });
        self.trigger
            .conditions
            .iter()
            .chain(self.exit_on.iter().chain(&self.goals).flat_map(|r| &r.conditions))
            .chain(steps)
            .filter_map(Condition::segment)
            .collect()
    }

    /// Loads and validates a definition. On failure, every problem found is
    /// returned, each with the path of the offending part.
    pub fn from_yaml(text: &str) -> Result<Campaign, Vec<DefinitionError>> {
        let raw: Value =
            serde_yaml::from_str(text).map_err(|e| vec![DefinitionError::new("", format!("invalid YAML: {e}"))])?;
        Self::from_value(&raw)
    }

    /// Validates a definition given as JSON (the API's form of the same
    /// document); its sends may name the shipped templates.
    pub fn from_value(raw: &Value) -> Result<Campaign, Vec<DefinitionError>> {
        Self::from_value_with(raw, &crate::journey::templates::KnownTemplates::Shipped)
    }

    /// [`Campaign::from_value`], its sends naming any of `known` (decision 0077).
    pub fn from_value_with(
        raw: &Value,
        known: &crate::journey::templates::KnownTemplates,
    ) -> Result<Campaign, Vec<DefinitionError>> {
        let mut loader = Loader::default();
        loader.templates = known.clone();
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
            Step::Branch(_) | Step::Exit(_) | Step::Split(_) => None,
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
