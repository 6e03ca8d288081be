//! A paused campaign sends nothing more: its running instances are exited a
//! page at a time, each full page asking for the next with a
//! `CampaignPauseContinued` on the campaign's stream.

use super::stream::Cause;
use super::{
    campaign_partition, EngineError, EngineOutcome, IndexedInstance, JourneyEngine, JOURNEY_INDEX, MAX_ATTEMPTS,
};
use crate::event::{Actor, DomainEvent, EventEnvelope};
use crate::journey::catalog::{self as campaign_store, CampaignEvent};
use crate::journey::instance::{JourneyContext, JourneyInput};
use crate::ports::{AppendError, AppendRequest, ExpectedVersion};

/// How many running instances one pause step exits; a full page asks for the
/// next with a `CampaignPauseContinued`.
pub const PAUSE_PAGE: usize = 100;

impl JourneyEngine {
    /// A campaign was paused: exits the first page of its running instances
    /// (reason `campaign-paused`, pending timers deleted) and, if the page
    /// was full, appends a `CampaignPauseContinued` that asks the campaign
    /// function for the next one. The same step runs when the campaign
    /// function receives the `CampaignPaused` itself; the two chains meet at
    /// the continuation's expected version and one of them stops.
    pub async fn on_campaign_paused(&self, campaign_id: &str) -> Result<EngineOutcome, EngineError> {
        self.exit_paused_page(campaign_id, None).await
    }

    /// One pause step: at most [`PAUSE_PAGE`] index entries read, their
    /// instances exited; `step` is the campaign event that asked for it (the
    /// `CampaignPaused` or a `CampaignPauseContinued`), `None` from the API
    /// right after the pause.
    pub(super) async fn exit_paused_page(
        &self,
        campaign_id: &str,
        step: Option<&EventEnvelope>,
    ) -> Result<EngineOutcome, EngineError> {
        let mut outcome = EngineOutcome::default();
        let stream = campaign_store::stream_id(campaign_id);
        let history = self.events.read_stream(&stream, 0, usize::MAX).await?;
        let mut paused_by = None;
        for e in &history {
            match e.event_type.as_str() {
                "CampaignPaused" => paused_by = Some(e),
                "CampaignResumed" => paused_by = None,
                _ => {}
            }
        }
        // Resumed since (or never paused): nothing to exit.
        let Some(paused_by) = paused_by else {
            return Ok(outcome);
        };
        let step = step.unwrap_or(paused_by);
        let after = match CampaignEvent::from_envelope(step) {
            Ok(CampaignEvent::CampaignPauseContinued { after }) => Some(after),
            Ok(_) => None,
            Err(e) => return Err(EngineError::Poison(format!("{stream}: {e}"))),
        };
        let page = self
            .docs
            .list(
                JOURNEY_INDEX,
                &campaign_partition(campaign_id),
                "",
                after.as_deref(),
                PAUSE_PAGE,
            )
            .await?;
        let ctx = JourneyContext {
            now: self.clock.now(),
            timezone: chrono_tz::UTC,
            profile: None,
        };
        let catalog = self.catalog.current().await?;
        for (_, body) in &page {
            let indexed: IndexedInstance =
                serde_json::from_value(body.clone()).map_err(|e| EngineError::Poison(format!("journey index: {e}")))?;
            if self
                .advance(
                    &catalog,
                    &indexed.instance_id,
                    &JourneyInput::CampaignPaused,
                    &ctx,
                    Some(step),
                    Some(indexed.version),
                    &mut outcome,
                )
                .await?
            {
                outcome.advanced.push(indexed.instance_id);
            }
        }
        if page.len() == PAUSE_PAGE {
            if let Some((last, _)) = page.last() {
                self.continue_pause(campaign_id, step, last).await?;
            }
        }
        Ok(outcome)
    }

    /// Appends the `CampaignPauseContinued` after `step`, expecting the
    /// campaign stream where `step` left it: if a pause event came since
    /// (another chain's continuation, a resume, a new pause), that one
    /// carries on and this chain stops; an edit in between is stepped over.
    async fn continue_pause(&self, campaign_id: &str, step: &EventEnvelope, after: &str) -> Result<(), EngineError> {
        let stream = campaign_store::stream_id(campaign_id);
        let meta = Cause::of(step).meta(Actor::system("campaign"));
        let mut expected = step.version;
        for _ in 0..MAX_ATTEMPTS {
            let envelopes = crate::event::envelopes(
                &stream,
                None,
                &[CampaignEvent::CampaignPauseContinued {
                    after: after.to_string(),
                }],
                &meta,
                self.clock.now(),
            )
            .map_err(|e| EngineError::Poison(e.to_string()))?;
            match self
                .events
                .append(AppendRequest {
                    stream_id: stream.clone(),
                    expected: ExpectedVersion::Exactly(expected),
                    events: envelopes,
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(AppendError::Conflict { .. }) => {
                    let since = self.events.read_stream(&stream, expected, usize::MAX).await?;
                    if since.iter().any(|e| {
                        matches!(
                            e.event_type.as_str(),
                            "CampaignPaused" | "CampaignResumed" | "CampaignPauseContinued"
                        )
                    }) {
                        return Ok(());
                    }
                    match since.last() {
                        Some(e) => expected = e.version,
                        None => return Err(EngineError::Retry(format!("{stream} conflicted but did not move"))),
                    }
                }
                Err(AppendError::Store(e)) => return Err(e.into()),
                Err(other) => return Err(EngineError::Poison(other.to_string())),
            }
        }
        Err(EngineError::Retry(format!("{stream} kept changing")))
    }
}
