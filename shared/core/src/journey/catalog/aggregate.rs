//! A campaign's stream as an [`Aggregate`]: publishes, pauses, resumes and
//! a pause's continuations are decided on the stream as its events fold
//! it, and stored through [`AggregateService`](crate::aggregate::AggregateService).

use super::{stream_id, CampaignError, CampaignEvent};
use crate::aggregate::{Aggregate, DecideContext};
use crate::journey::definition::{Campaign, DefinitionError};
use crate::journey::templates::KnownTemplates;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;

/// The campaign aggregate: stream `campaign-<id>`, input the shipped
/// definition of the id (if it is a shipped campaign) and the templates a
/// definition may name.
pub struct CampaignAggregate;

/// What a campaign's decision reads besides its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CampaignInput {
    /// The shipped definition of the id, if it is a shipped campaign.
    pub shipped: Option<Value>,
    /// The templates a published definition may name (decision 0077).
    pub templates: KnownTemplates,
}

/// A campaign's stream as its events fold it (definitions as stored, not
/// validated: the catalog validates them when it reads them).
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignState {
    /// Every published version: the stream version of its `CampaignPublished` → definition.
    pub versions: BTreeMap<u64, Value>,
    pub paused: bool,
    /// The stream version of the latest pause, resume or pause continuation (0: none).
    pub pause_step_at: u64,
    /// The stream's version.
    pub version: u64,
}

/// What is asked of a campaign.
#[derive(Debug, Clone, PartialEq)]
pub enum CampaignCommand {
    /// A new version; its id must be the campaign's.
    Publish {
        definition: Value,
    },
    Pause,
    Resume,
    /// Makes the definition published at version `to` current again, as a
    /// new `CampaignPublished` of it (decision 0070): a new version, so
    /// running instances keep theirs.
    Rollback {
        to: u64,
    },
    /// The next page of the pause whose latest step (the `CampaignPaused`
    /// or a `CampaignPauseContinued`) is at stream version `step_version`,
    /// after the instance id `after`. Nothing if a pause, resume or
    /// continuation came after that step: that one carries on.
    ContinuePause {
        after: String,
        step_version: u64,
    },
}

impl Aggregate for CampaignAggregate {
    type State = CampaignState;
    type Command = CampaignCommand;
    type Event = CampaignEvent;
    type Error = CampaignError;
    type Input = CampaignInput;

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }

    fn customer_id(_: &CampaignState) -> Option<&str> {
        None
    }

    fn version(state: &CampaignState) -> u64 {
        state.version
    }

    fn not_found() -> CampaignError {
        CampaignError::NotFound
    }

    /// The first write to a shipped id stores the shipped definition as
    /// version 1 first, so version 1 keeps meaning "as shipped".
    fn decide(
        state: Option<&CampaignState>,
        command: &CampaignCommand,
        ctx: &DecideContext<'_, CampaignInput>,
    ) -> Result<Vec<CampaignEvent>, CampaignError> {
        let shipped = match (state, &ctx.input.shipped) {
            (None, Some(definition)) => Some(CampaignEvent::CampaignPublished {
                definition: definition.clone(),
            }),
            _ => None,
        };
        let exists = state.is_some() || shipped.is_some();
        let paused = match (state, &shipped) {
            (Some(s), _) => s.paused,
            (None, Some(CampaignEvent::CampaignPublished { definition })) => starts_paused(definition),
            (None, _) => false,
        };
        let decided = match command {
            CampaignCommand::Publish { definition } => {
                let campaign =
                    Campaign::from_value_with(definition, &ctx.input.templates).map_err(CampaignError::Invalid)?;
                if campaign.id != ctx.id {
                    return Err(CampaignError::Invalid(vec![DefinitionError {
                        path: "id".to_string(),
                        message: format!("must equal the id in the path ({})", ctx.id),
                    }]));
                }
                CampaignEvent::CampaignPublished {
                    definition: definition.clone(),
                }
            }
            CampaignCommand::Pause if !exists => return Err(CampaignError::NotFound),
            CampaignCommand::Pause if paused => return Err(CampaignError::AlreadyPaused),
            CampaignCommand::Pause => CampaignEvent::CampaignPaused,
            CampaignCommand::Resume if !exists => return Err(CampaignError::NotFound),
            CampaignCommand::Resume if !paused => return Err(CampaignError::NotPaused),
            CampaignCommand::Resume => CampaignEvent::CampaignResumed,
            CampaignCommand::Rollback { to } => {
                // The published versions: the stream's, or the shipped one as version 1.
                let versions: BTreeMap<u64, &Value> = match (state, &shipped) {
                    (Some(s), _) => s.versions.iter().map(|(v, d)| (*v, d)).collect(),
                    (None, Some(CampaignEvent::CampaignPublished { definition })) => BTreeMap::from([(1, definition)]),
                    (None, _) => return Err(CampaignError::NotFound),
                };
                let Some(definition) = versions.get(to).copied() else {
                    return Err(CampaignError::UnknownVersion(*to));
                };
                if let Some((current, latest)) = versions.iter().next_back() {
                    if *current == *to || *latest == definition {
                        return Err(CampaignError::AlreadyCurrent {
                            to: *to,
                            current: *current,
                        });
                    }
                }
                // Stored versions were valid when published; one that no
                // longer is (the rules changed since) is refused, not stored again.
                Campaign::from_value_with(definition, &ctx.input.templates).map_err(CampaignError::Invalid)?;
                CampaignEvent::CampaignPublished {
                    definition: definition.clone(),
                }
            }
            CampaignCommand::ContinuePause { after, step_version } => {
                let Some(state) = state else {
                    return Err(CampaignError::NotFound);
                };
                if state.pause_step_at > *step_version {
                    return Ok(Vec::new());
                }
                CampaignEvent::CampaignPauseContinued { after: after.clone() }
            }
        };
        Ok(shipped.into_iter().chain([decided]).collect())
    }

    fn evolve(
        state: Option<CampaignState>,
        event: &CampaignEvent,
        _at: DateTime<Utc>,
        version: u64,
    ) -> Option<CampaignState> {
        let mut s = state.unwrap_or(CampaignState {
            versions: BTreeMap::new(),
            paused: false,
            pause_step_at: 0,
            version: 0,
        });
        s.version = version;
        match event {
            CampaignEvent::CampaignPublished { definition } => {
                // The first version decides whether the campaign starts paused.
                if s.versions.is_empty() && starts_paused(definition) {
                    s.paused = true;
                }
                s.versions.insert(version, definition.clone());
            }
            CampaignEvent::CampaignPaused => {
                s.paused = true;
                s.pause_step_at = version;
            }
            CampaignEvent::CampaignResumed => {
                s.paused = false;
                s.pause_step_at = version;
            }
            CampaignEvent::CampaignPauseContinued { .. } => s.pause_step_at = version,
        }
        Some(s)
    }
}

/// Whether a published definition asks to start paused (`starts_paused`).
fn starts_paused(definition: &Value) -> bool {
    definition
        .get("starts_paused")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}
