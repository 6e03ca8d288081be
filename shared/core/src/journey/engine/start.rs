//! A stored event of a customer: handed first to the customer's running
//! instances (an exit acts even if the event would also start something;
//! deactivation and erasure end every journey, a revoked consent those
//! that need it for every send),
//! then starting each active campaign whose trigger, conditions and entry
//! rules (consent, segment, dedupe key) it meets.

use super::lookback::{needs_lookback, Lookback};
use super::stream::Cause;
use super::{collect_messages, CatalogSnapshot, EngineError, EngineOutcome, JourneyEngine, JOURNEY_INDEX};
use crate::bus::BusEntry;
use crate::consent::{ledger, Channel, Purpose};
use crate::event::{Actor, EventEnvelope};
use crate::journey::instance::{self, JourneyInput, TriggerRef};
use serde_json::Value;

/// The event types the engine acts on whatever the campaigns say: they end
/// every running journey of the customer.
const ENDS_JOURNEYS: &[&str] = &["CustomerDeactivated", "CustomerErasureRequested", "CustomerErased"];

/// Revoking a consent ends the customer's journeys that need it for every
/// send ([`Campaign::sends_only_under`](crate::journey::definition::Campaign::sends_only_under)),
/// whatever the campaigns' exit rules say.
const CONSENT_REVOKED: &str = "ConsentRevoked";

/// The purpose and channel a `ConsentRevoked` event names.
fn revoked_consent(envelope: &EventEnvelope) -> Option<(Purpose, Channel)> {
    if envelope.event_type != CONSENT_REVOKED {
        return None;
    }
    let field = |name: &str| envelope.data.get(name).cloned().unwrap_or(Value::Null);
    Some((
        serde_json::from_value(field("purpose")).ok()?,
        serde_json::from_value(field("channel")).ok()?,
    ))
}

impl JourneyEngine {
    /// Handles one stored event of a customer, against the catalog as it is now.
    pub async fn on_event(&self, envelope: &EventEnvelope) -> Result<EngineOutcome, EngineError> {
        let catalog = self.catalog.current().await?;
        self.on_event_in(&catalog, envelope).await
    }

    /// Handles one stored event of a customer against `catalog` (the
    /// snapshot its page is handled against). An event no version of any
    /// campaign could act on ([`CatalogSnapshot::may_act_on`]), and that
    /// does not end journeys (deactivation, erasure), reads nothing more:
    /// neither the profile nor the journey index (decision 0043).
    pub async fn on_event_in(
        &self,
        catalog: &CatalogSnapshot,
        envelope: &EventEnvelope,
    ) -> Result<EngineOutcome, EngineError> {
        let mut outcome = EngineOutcome::default();
        // A pause, or the next page of one: exit a page of the campaign's instances.
        if let Some(campaign_id) = envelope.stream_id.strip_prefix("campaign-") {
            if matches!(
                envelope.event_type.as_str(),
                "CampaignPaused" | "CampaignPauseContinued"
            ) {
                return self.exit_paused_page(campaign_id, Some(envelope)).await;
            }
            return Ok(outcome);
        }
        let Some(customer_id) = envelope.customer_id.clone() else {
            return Ok(outcome);
        };
        if envelope.stream_id.starts_with("journey-") {
            return Ok(outcome);
        }
        let bus_event = BusEntry::for_event(envelope.clone()).to_event_json("000000000000", "local");
        let revoked = revoked_consent(envelope);
        if !ENDS_JOURNEYS.contains(&envelope.event_type.as_str())
            && revoked.is_none()
            && !catalog.may_act_on(&bus_event)
        {
            return Ok(outcome);
        }
        let customer = self.customer_context(&customer_id).await?;
        let now = customer.now;

        // Running instances first: an exit must act even if the same event
        // would also start something. Those of anonymous profiles merged into
        // the customer are theirs too (identity resolution).
        let merged: Vec<String> = customer
            .journey()
            .profile
            .and_then(|p| p.get("merged_profiles"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let mut running = self.instances_of(&customer_id).await?;
        for profile_id in &merged {
            running.extend(self.instances_of(profile_id).await?);
        }
        for indexed in running {
            if indexed.status == instance::InstanceStatus::Exited {
                continue;
            }
            let input = if envelope.event_type == "CustomerDeactivated" {
                JourneyInput::CustomerDeactivated {
                    event_id: envelope.event_id,
                }
            } else if matches!(
                envelope.event_type.as_str(),
                "CustomerErasureRequested" | "CustomerErased"
            ) {
                // Erasure ends every journey (and its timer) at once.
                JourneyInput::CustomerErased {
                    event_id: envelope.event_id,
                }
            } else if let Some((purpose, channel)) = revoked {
                JourneyInput::ConsentRevoked {
                    event_id: envelope.event_id,
                    purpose,
                    channel,
                    event: bus_event.clone(),
                }
            } else {
                JourneyInput::Event {
                    event_id: envelope.event_id,
                    event: bus_event.clone(),
                }
            };
            if self
                .advance(
                    catalog,
                    &indexed.instance_id,
                    &input,
                    &customer,
                    Some(envelope),
                    Some(indexed.version),
                    &mut outcome,
                )
                .await?
            {
                outcome.advanced.push(indexed.instance_id.clone());
            }
        }

        for (campaign, version) in catalog.active() {
            if !campaign.trigger.pattern.matches(&bus_event) {
                continue;
            }
            // The customer's segments, if this campaign's conditions name
            // one (decision 0086): read once for the event.
            self.read_segments_for(&customer, &campaign).await?;
            let ctx = customer.journey();
            if !campaign
                .trigger
                .conditions
                .iter()
                .all(|c| c.holds_in(&bus_event, ctx.profile, ctx.segments))
            {
                continue;
            }
            if let Some(required) = campaign.entry.consent {
                // An anonymous profile's consent is its customer's once merged;
                // before, there is no one to ask: the journey starts and the
                // channel function checks consent when it sends.
                let subject = crate::identity::resolve(self.events.as_ref(), &customer_id).await?;
                let ok = crate::identity::is_anonymous_profile(&subject)
                    || ledger::has_active_consent(
                        self.docs.as_ref(),
                        &subject,
                        required.purpose,
                        required.channel,
                        now,
                    )
                    .await?;
                if !ok {
                    continue;
                }
            }
            // Membership from the customer's segments stream, not the index
            // (which another consumer may not have caught up yet).
            if let Some(segment) = &campaign.entry.segment {
                if !crate::segments::is_member_now(self.events.as_ref(), segment, &customer_id).await? {
                    continue;
                }
            }
            // Browse abandonment (decision 0069): enough distinct products
            // viewed, and no cart touched, before the trigger.
            if let Some(rule) = &campaign.entry.browsed {
                if !self.browsed_without_cart(&customer_id, envelope, rule).await? {
                    continue;
                }
            }
            let dedupe = match &campaign.entry.dedupe_key {
                Some(path) => {
                    let segments: Vec<&str> = path.trim_start_matches("event.").split('.').collect();
                    crate::journey::condition::lookup(&bus_event, &segments)
                        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                        .unwrap_or_else(|| envelope.event_id.to_string())
                }
                None => envelope.event_id.to_string(),
            };
            let instance_id = instance::instance_id(&campaign, &customer_id, &dedupe, envelope.occurred_at);
            let trigger = TriggerRef {
                event_id: envelope.event_id,
                event_type: envelope.event_type.clone(),
                stream_id: envelope.stream_id.clone(),
                version: envelope.version,
                occurred_at: envelope.occurred_at,
            };
            let input = JourneyInput::Start {
                instance_id: instance_id.clone(),
                campaign_version: version,
                customer_id: customer_id.clone(),
                dedupe_key: dedupe,
                trigger: trigger.clone(),
                trigger_event: bus_event.clone(),
            };
            let events =
                instance::decide(None, &campaign, &input, &ctx).map_err(|e| EngineError::refused(&instance_id, e))?;
            let meta = Cause::of(envelope).meta(Actor::journey(&campaign.id, version));
            // The index first (at version 0), so that an event handled
            // between a crashed start and its redelivery finds the instance.
            if !self.announce(&instance_id, &customer_id, &events).await? {
                // Indexed past its start: started before, and the index
                // proves its timers were set. Nothing to do.
                continue;
            }
            // Then the lookback: the customer's events recorded after the
            // trigger, some of which may have reached the engine before this
            // start (a reordered delivery), are caught up on in the same
            // append. After the announce, so an event stored later finds the
            // index line. (The announced line may show a state the lookback
            // then changes; the index write after the append corrects it.)
            let mut facts = customer.facts(campaign.clone());
            if needs_lookback(&campaign, &events) {
                facts.lookback = self
                    .recorded_since_trigger(&customer_id, &trigger, &campaign, Lookback::Start)
                    .await?;
            }
            // The append expects no stream.
            match self.apply(&instance_id, None, &input, &facts, &meta).await? {
                Some((state, events)) => {
                    collect_messages(&events, &mut outcome);
                    outcome.started.push(state.id);
                }
                // Already started by this trigger (a duplicate or reordered
                // delivery) or, for `once`, by an earlier one. If that start
                // stopped after its append (its timer or index write failed,
                // and this is the retry), finish it now.
                None => {
                    let indexed_at = self
                        .docs
                        .checkpoint(JOURNEY_INDEX, &instance::stream_id(&instance_id))
                        .await?;
                    if indexed_at == 0 {
                        if let Some(loaded) = self.load_history(&instance_id).await? {
                            if self.heal(&loaded, indexed_at).await? {
                                outcome.healed.push(instance_id);
                            }
                        }
                    }
                }
            }
        }
        Ok(outcome)
    }
}
