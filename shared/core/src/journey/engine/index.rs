//! The journey index, the engine's read model: each customer's instances,
//! each campaign's running instances, and each requested message's journey.
//! Written after an instance's append (and, for a start, once before it).

use super::{EngineError, JourneyEngine};
use crate::journey::instance::{self, JourneyEvent, JourneyInstance};
use crate::ports::{ReadOp, StoreError};
use serde::{Deserialize, Serialize};

/// The read-model namespace of the engine's index: customer → instances.
pub use crate::vocabulary::streams::JOURNEY_INDEX;

/// The journey-index partition listing a campaign's running instances (an
/// instance leaves it when it exits, so pausing and sweeping walk only the
/// live ones).
pub fn campaign_partition(campaign_id: &str) -> String {
    format!("campaign:{campaign_id}")
}

/// How many instances of the campaign are running (its partition's lines:
/// started and not exited), counted a page of 1000 at a time.
pub async fn running_count(docs: &dyn crate::ports::ReadModelStore, campaign_id: &str) -> Result<u64, StoreError> {
    let partition = campaign_partition(campaign_id);
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let page = docs.list(JOURNEY_INDEX, &partition, "", after.as_deref(), 1000).await?;
        count += page.len() as u64;
        if page.len() < 1000 {
            return Ok(count);
        }
        after = page.last().map(|(k, _)| k.clone());
    }
}

/// The sort key of a message's entry in the journey index (partition: the message id).
pub const MESSAGE_SORT: &str = "message";

/// One line of the journey index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedInstance {
    pub instance_id: String,
    pub campaign_id: String,
    pub campaign_version: u64,
    pub status: instance::InstanceStatus,
    pub current_step: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The instance's stream version this line shows (0 in lines written
    /// before it was recorded).
    #[serde(default)]
    pub version: u64,
    /// Whose instance it is (absent in lines written before it was
    /// recorded): the sweep, meeting an orphaned start through its
    /// campaign's line, removes the customer's line too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
}

impl JourneyEngine {
    /// The customer's instances, as the index has them.
    pub async fn instances_of(&self, customer_id: &str) -> Result<Vec<IndexedInstance>, StoreError> {
        self.docs
            .list(JOURNEY_INDEX, customer_id, "", None, 1000)
            .await?
            .into_iter()
            .map(|(_, v)| serde_json::from_value(v).map_err(|e| StoreError::Failed(format!("journey index: {e}"))))
            .collect()
    }

    /// Writes the index lines of an instance about to start (its customer's
    /// line and, unless the start ends it at once, its campaign's), at
    /// version 0: "started, nothing applied yet". It runs before the start's
    /// append, so `on_event` (which finds running instances only through the
    /// index) hands the customer's next events to an instance whose start
    /// stopped after its append: [`JourneyEngine::advance`] then applies
    /// them, or heals the instance when they change nothing. Pausing and the
    /// sweep find it through the campaign's line.
    ///
    /// The lines are written only while the instance's index checkpoint is
    /// 0, so they never overwrite a line a finished start (or a later step)
    /// wrote: false then, the instance is started and indexed. A line whose
    /// stream does not exist (a crash between this write and the append) is
    /// harmless: steps on it find no instance and do nothing, and the
    /// redelivered trigger starts the instance (the append still expects no
    /// stream, so it starts once).
    ///
    /// Cost: one more index commit per journey start (a transaction of the
    /// checkpoint item and the two lines); a duplicate trigger of an indexed
    /// instance costs that commit's failed condition instead of an append
    /// and a checkpoint read.
    pub(super) async fn announce(
        &self,
        instance_id: &str,
        customer_id: &str,
        events: &[JourneyEvent],
    ) -> Result<bool, EngineError> {
        let now = self.clock.now();
        let mut state = None;
        for (version, e) in (1u64..).zip(events) {
            state = instance::evolve(state, e, now, version);
        }
        let Some(state) = state else {
            return Err(EngineError::refused(
                instance_id,
                crate::journey::instance::JourneyError::NotStarted(instance_id.to_string()),
            ));
        };
        let mut line = index_line(&state);
        line.version = 0;
        let body = serde_json::to_value(line).map_err(|e| EngineError::unreadable("journey index line", e))?;
        let mut ops = vec![ReadOp::Put {
            partition: customer_id.to_string(),
            sort: instance_id.to_string(),
            body: body.clone(),
        }];
        if state.status != instance::InstanceStatus::Exited {
            ops.push(ReadOp::Put {
                partition: campaign_partition(&state.campaign_id),
                sort: instance_id.to_string(),
                body,
            });
        }
        match self
            .docs
            .commit(JOURNEY_INDEX, &instance::stream_id(instance_id), 0, 0, ops)
            .await
        {
            Ok(()) => Ok(true),
            Err(crate::ports::CommitError::Conflict { .. }) => Ok(false),
            Err(e) => Err(EngineError::Index(e)),
        }
    }

    /// Writes the instance's index lines as of `state`, moving the index's
    /// checkpoint from `indexed_at`: the customer's line, the campaign's
    /// (removed once the instance exits), and a pointer for each message
    /// requested after `indexed_at` (`events` with their versions). A later
    /// writer's update wins.
    pub(super) async fn write_index(
        &self,
        state: &JourneyInstance,
        events: &[(JourneyEvent, u64)],
        indexed_at: u64,
    ) -> Result<(), EngineError> {
        if indexed_at >= state.version {
            return Ok(());
        }
        let stream = instance::stream_id(&state.id);
        let body =
            serde_json::to_value(index_line(state)).map_err(|e| EngineError::unreadable("journey index line", e))?;
        let mut ops = vec![ReadOp::Put {
            partition: state.customer_id.clone(),
            sort: state.id.clone(),
            body: body.clone(),
        }];
        // The campaign's partition lists its running instances, for pausing and sweeping.
        ops.push(if state.status == instance::InstanceStatus::Exited {
            ReadOp::Delete {
                partition: campaign_partition(&state.campaign_id),
                sort: state.id.clone(),
            }
        } else {
            ReadOp::Put {
                partition: campaign_partition(&state.campaign_id),
                sort: state.id.clone(),
                body,
            }
        });
        // Each requested message points back at its journey, for `explain`.
        for (e, version) in events.iter().filter(|(_, v)| *v > indexed_at) {
            if let JourneyEvent::MessageRequested { message_id, .. } = e {
                ops.push(ReadOp::Put {
                    partition: message_id.clone(),
                    sort: MESSAGE_SORT.into(),
                    body: serde_json::json!({ "instance_id": state.id, "version": version }),
                });
            }
        }
        match self
            .docs
            .commit(JOURNEY_INDEX, &stream, indexed_at, state.version, ops)
            .await
        {
            Ok(()) | Err(crate::ports::CommitError::Conflict { .. }) => Ok(()),
            Err(e) => Err(EngineError::Index(e)),
        }
    }

    /// Removes a campaign-partition line of an exited instance whose index
    /// is otherwise current (lines written before exits removed them).
    pub(super) async fn tidy(&self, state: &JourneyInstance, indexed_at: u64) -> Result<(), EngineError> {
        let ops = vec![ReadOp::Delete {
            partition: campaign_partition(&state.campaign_id),
            sort: state.id.clone(),
        }];
        match self
            .docs
            .commit(
                JOURNEY_INDEX,
                &instance::stream_id(&state.id),
                indexed_at,
                indexed_at,
                ops,
            )
            .await
        {
            Ok(()) | Err(crate::ports::CommitError::Conflict { .. }) => Ok(()),
            Err(e) => Err(EngineError::Index(e)),
        }
    }
}

/// The index line of an instance.
fn index_line(state: &JourneyInstance) -> IndexedInstance {
    IndexedInstance {
        instance_id: state.id.clone(),
        campaign_id: state.campaign_id.clone(),
        campaign_version: state.campaign_version,
        status: state.status,
        current_step: state.current_step.clone(),
        started_at: state.started_at,
        updated_at: state.updated_at,
        version: state.version,
        customer_id: Some(state.customer_id.clone()),
    }
}
