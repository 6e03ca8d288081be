//! The message's timer: what it is for (a deferral's end or a settle
//! check), and its handler.

use super::{DeliveryError, MessageDelivery};
use crate::failure::{Classify, Failure};
use crate::messaging::events::{MessageRequest, RequestRef};
use crate::scheduler::{TimerKind, TimerPayload};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

/// What a message's timer (`TimerKind::MessageDeferral`) is for, read from
/// its data. The data names the message and where its request is stored
/// ([`RequestRef`]), never the request (decision 0041): the request is read
/// back from the journey stream when the timer fires.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageTimer {
    /// The end of a deferral (data `{"deferral": <RequestRef>}`).
    Deferral(RequestRef),
    /// A settle check (data `{"settle": <RequestRef>}`, see
    /// [`MessageDelivery::on_settle_timer`]).
    Settle(RequestRef),
    /// A deferral timer set before decision 0041, still in flight: its data
    /// is the request itself.
    DeferralWithRequest(Box<MessageRequest>),
}

/// A settle check set before decision 0041: the message and its journey instance.
#[derive(Deserialize)]
struct SettleCheckBefore0041 {
    message_id: String,
    instance_id: String,
}

impl MessageTimer {
    pub(super) const DEFERRAL: &'static str = "deferral";
    pub(super) const SETTLE: &'static str = "settle";

    /// What a fired timer is for, if it is a message's timer whose data reads.
    pub fn of(timer: &TimerPayload) -> Option<MessageTimer> {
        if timer.kind != TimerKind::MessageDeferral {
            return None;
        }
        if let Some(data) = timer.data.get(Self::DEFERRAL) {
            return serde_json::from_value(data.clone()).ok().map(MessageTimer::Deferral);
        }
        if let Some(data) = timer.data.get(Self::SETTLE) {
            if let Ok(check) = serde_json::from_value::<RequestRef>(data.clone()) {
                return Some(MessageTimer::Settle(check));
            }
            let before: SettleCheckBefore0041 = serde_json::from_value(data.clone()).ok()?;
            return Some(MessageTimer::Settle(RequestRef {
                message_id: before.message_id,
                stream_id: crate::journey::instance::stream_id(&before.instance_id),
                version: None,
            }));
        }
        serde_json::from_value(timer.data.clone())
            .ok()
            .map(|request| MessageTimer::DeferralWithRequest(Box::new(request)))
    }

    /// The timer a deferral timer set before decision 0041 becomes: the same
    /// timer whose data references the request (as [`Self::of`] reads it
    /// back) instead of holding it. `None` for every other timer. The
    /// migrations of stored timers (`crm-ops migrate-timers`, the local
    /// timers table) use it.
    pub fn without_request_copy(timer: &TimerPayload) -> Option<TimerPayload> {
        let MessageTimer::DeferralWithRequest(request) = MessageTimer::of(timer)? else {
            return None;
        };
        Some(TimerPayload {
            data: json!({ Self::DEFERRAL: RequestRef::of_request(&request) }),
            ..timer.clone()
        })
    }

    /// The data of a timer for `requested`: under `key` ([`Self::DEFERRAL`]
    /// or [`Self::SETTLE`]), what [`Self::of`] reads back.
    pub(super) fn data(key: &str, requested: &RequestRef) -> Result<Value, DeliveryError> {
        let value = serde_json::to_value(requested)
            .map_err(|e| DeliveryError::Step(Failure::poison("the message timer's data", e)))?;
        Ok(json!({ key: value }))
    }
}

#[async_trait]
impl crate::scheduler::TimerHandler for MessageDelivery {
    /// The message's timer ([`MessageTimer`]): a settle check or the end of
    /// a deferral.
    async fn on_timer(&self, payload: &TimerPayload) -> Result<(), crate::scheduler::SchedulerError> {
        if payload.kind != TimerKind::MessageDeferral {
            // Other timers belong to other functions.
            return Ok(());
        }
        let handled = match MessageTimer::of(payload) {
            Some(MessageTimer::Settle(check)) => self.on_settle_timer(payload, &check).await.map(|_| ()),
            Some(deferral) => self.on_deferral_timer(&deferral).await.map(|_| ()),
            None => Err(DeliveryError::unusable(format!(
                "timer {}: its data names no message",
                payload.name
            ))),
        };
        match handled {
            Ok(_) => Ok(()),
            Err(e) if e.retryable() => Err(crate::scheduler::SchedulerError::Unavailable(e.to_string())),
            Err(e) => Err(crate::scheduler::SchedulerError::Refused(e.to_string())),
        }
    }
}
