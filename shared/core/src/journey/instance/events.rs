//! What a journey instance's stream holds.

use crate::consent::{Channel, Purpose};
use crate::event::DomainEvent;
use crate::journey::definition::Category;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Why an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExitReason {
    Goal,
    ExitEvent,
    Completed,
    ExitStep,
    CustomerDeactivated,
    CampaignPaused,
    /// The customer was erased (GDPR Art. 17).
    CustomerErased,
    /// The customer revoked the consent every send of the journey needs
    /// (the seed's `CampaignsPaused`, decision 0067).
    ConsentRevoked,
    /// The campaign's holdout took the customer (decision 0081): recorded,
    /// sent nothing.
    Holdout,
}

/// What triggered an instance: enough to explain it later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TriggerRef {
    pub event_id: Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub version: u64,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum JourneyEvent {
    JourneyStarted {
        instance_id: String,
        campaign_id: String,
        campaign_version: u64,
        customer_id: String,
        dedupe_key: String,
        trigger: TriggerRef,
        /// The triggering bus event: what conditions and messages read.
        trigger_event: Value,
    },
    JourneyStepEntered {
        step_id: String,
        step_type: String,
        visit: u32,
    },
    JourneyWaitScheduled {
        step_id: String,
        timer_name: String,
        due_at: DateTime<Utc>,
        /// A `wait_until`: an event can end the wait before the timer.
        waiting_for_event: bool,
    },
    TimerFired {
        timer_name: String,
        step_id: String,
        due_at: DateTime<Utc>,
    },
    JourneyWaitEnded {
        step_id: String,
        #[serde(default)]
        event_id: Option<Uuid>,
        timed_out: bool,
    },
    MessageRequested {
        message_id: String,
        instance_id: String,
        campaign_id: String,
        campaign_version: u64,
        step_id: String,
        /// A `channel: preferred` send (decision 0076): the channels the
        /// channel function chooses among, in the step's fallback order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        candidates: Vec<crate::vocabulary::ChannelOption>,
        customer_id: String,
        channel: Channel,
        template: String,
        category: Category,
        #[serde(default)]
        purpose: Option<Purpose>,
        /// The campaign's kind, on marketing sends (decision 0064).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<crate::vocabulary::MarketingKind>,
        /// The discount code the step asks for (decision 0074).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        discount: Option<crate::vocabulary::DiscountOffer>,
        data: Value,
    },
    SegmentMembershipRequested {
        step_id: String,
        segment: String,
        action: crate::journey::definition::SegmentAction,
    },
    JourneyEventEmitted {
        step_id: String,
        event_type: String,
        data: Value,
    },
    /// A `split` step assigned the customer to a variant of its experiment
    /// (decision 0081), the first time the instance reached it.
    JourneyVariantAssigned {
        campaign_id: String,
        step_id: String,
        experiment: String,
        variant: String,
        /// The customer's bucket in [0, 10 000) (`journey::experiment`).
        bucket: u64,
    },
    /// The campaign's holdout took the customer (decision 0081): the
    /// instance exits next, without a send.
    JourneyHoldoutAssigned {
        campaign_id: String,
        /// The holdout's percent.
        percent: u8,
        /// The customer's bucket in [0, 10 000) (`journey::experiment`).
        bucket: u64,
    },
    JourneyExited {
        reason: ExitReason,
        #[serde(default)]
        rule: Option<String>,
        #[serde(default)]
        event_id: Option<Uuid>,
    },
}

impl DomainEvent for JourneyEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}
