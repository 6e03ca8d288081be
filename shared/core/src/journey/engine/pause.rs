//! A paused campaign sends nothing more: its running instances are exited a
//! page at a time, each full page asking for the next with a
//! `CampaignPauseContinued` on the campaign's stream.

use super::stream::Cause;
use super::{campaign_partition, EngineError, EngineOutcome, IndexedInstance, JourneyEngine, JOURNEY_INDEX};
use crate::event::{Actor, DomainEvent, EventEnvelope};
use crate::journey::catalog::{self as campaign_store, CampaignCommand, CampaignEvent, CampaignState};
use crate::journey::instance::JourneyInput;

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
            Err(e) => return Err(EngineError::unreadable(stream, e)),
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
        let context = self.no_customer();
        let catalog = self.catalog.current().await?;
        for (_, body) in &page {
            let indexed: IndexedInstance =
                serde_json::from_value(body.clone()).map_err(|e| EngineError::unreadable("journey index", e))?;
            if self
                .advance(
                    &catalog,
                    &indexed.instance_id,
                    &JourneyInput::CampaignPaused,
                    &context,
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

    /// Appends the `CampaignPauseContinued` after `step` through the
    /// campaign's command path: if a pause event came since `step` (another
    /// chain's continuation, a resume, a new pause), that one carries on and
    /// this chain stops (nothing is appended); an edit in between is stepped
    /// over. A stream that kept changing is a conflict: the step comes again.
    async fn continue_pause(&self, campaign_id: &str, step: &EventEnvelope, after: &str) -> Result<(), EngineError> {
        let meta = Cause::of(step).meta(Actor::system("campaign"));
        let command = CampaignCommand::ContinuePause {
            after: after.to_string(),
            step_version: step.version,
        };
        let no_answer = |_: &CampaignState, _: &[EventEnvelope]| (200, serde_json::Value::Null);
        self.campaigns
            .execute(
                campaign_id,
                &command,
                &campaign_store::CampaignInput::default(),
                &meta,
                None,
                &no_answer,
            )
            .await
            .map_err(|source| EngineError::Campaign {
                stream: campaign_store::stream_id(campaign_id),
                source,
            })?;
        Ok(())
    }
}
