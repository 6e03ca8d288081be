//! The discount code a message carries (issue 19 item 4, decision 0074):
//! minted when the message is sent, never for a suppressed or deferred one.

use super::{DeliveryError, MessageDelivery};
use crate::aggregate::{AggregateError, AggregateService, Executed};
use crate::commerce::discount::{Discount, DiscountAggregate, DiscountError, IssueDiscount};
use crate::event::{CommandMeta, EventEnvelope};
use crate::failure::Failure;
use crate::messaging::events::MessageRequest;
use serde_json::{json, Value};

impl MessageDelivery {
    /// The discount of `request`, if its step asked for one: the code is
    /// the HMAC of the message id under the unsubscribe-link secret, and
    /// `DiscountIssued` is stored on `discount-<code>` before the message
    /// is claimed. A retried send finds the code issued and uses it as it
    /// was (its expiry too). A collision of two messages' codes (60 bits)
    /// sends the second message without one.
    pub(super) async fn issue_discount(
        &self,
        request: &MessageRequest,
        recipient: &str,
        meta: &CommandMeta,
    ) -> Result<Option<Discount>, DeliveryError> {
        let Some(offer) = request.discount else {
            return Ok(None);
        };
        let code = self.signer.discount_code(&request.message_id);
        let command = IssueDiscount {
            code: code.clone(),
            percent: offer.percent,
            expires_at: self.now() + chrono::Duration::seconds(offer.valid_for_seconds),
            campaign_id: request.campaign_id.clone(),
            campaign_version: request.campaign_version,
            message_id: request.message_id.clone(),
            customer_id: recipient.to_string(),
        };
        let discounts = AggregateService::<DiscountAggregate>::new(self.events.clone(), self.clock.clone());
        let respond = |_: &Discount, _: &[EventEnvelope]| (200, Value::Null);
        match discounts.execute(&code, &command, &(), meta, None, &respond).await {
            Ok(Executed::Applied { state, .. }) => Ok(Some(*state)),
            Ok(Executed::Replayed { .. }) => Err(DeliveryError::unusable("a discount issued without a key replayed")),
            Err(AggregateError::Rejected(DiscountError::Collision(code))) => {
                tracing::error!(message_id = %request.message_id, %code, "discount code collision: the message goes without a code");
                Ok(None)
            }
            Err(e) if e.is_retryable() => Err(DeliveryError::Step(Failure::retryable("issuing the discount code", e))),
            Err(e) => Err(DeliveryError::Step(Failure::poison("issuing the discount code", e))),
        }
    }
}

/// The template's `discount` variable: `code`, `percent` and `expires_at`
/// (`2026-12-03 18:05 UTC`); an empty object for a message without one.
pub(super) fn discount_variable(discount: Option<&Discount>) -> Value {
    match discount {
        Some(d) => json!({
            "code": d.issued.code,
            "percent": d.issued.percent,
            "expires_at": d.issued.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        }),
        None => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commerce::discount::Discount;
    use crate::messaging::render::{render, sample_data};
    use chrono::TimeZone;

    #[test]
    fn the_offers_show_the_code_and_read_well_without_one() {
        let expires_at = chrono::Utc
            .with_ymd_and_hms(2026, 12, 3, 18, 5, 0)
            .single()
            .expect("time");
        let discount = Discount {
            issued: IssueDiscount {
                code: "7KQ2-M9XD-4HBT".into(),
                percent: 15,
                expires_at,
                campaign_id: "abandoned-cart".into(),
                campaign_version: 1,
                message_id: "m-1".into(),
                customer_id: "c-1".into(),
            },
            issued_at: expires_at,
            version: 1,
        };
        for template in [
            "abandoned-cart-reminder",
            "abandoned-cart-final-offer",
            "checkout-abandonment-sms",
        ] {
            let mut vars = sample_data(template).expect("sample");
            vars["discount"] = discount_variable(Some(&discount));
            let with = render(template, &vars).expect("renders with a code");
            assert!(with.text.contains("15% off"), "{template}: {}", with.text);
            assert!(with.text.contains("7KQ2-M9XD-4HBT"), "{template}: {}", with.text);
            if let Some(html) = &with.html {
                assert!(html.contains("7KQ2-M9XD-4HBT"), "{template}");
                assert!(html.contains("2026-12-03 18:05 UTC"), "{template}");
            }
            vars["discount"] = discount_variable(None);
            let without = render(template, &vars).expect("renders without a code");
            assert!(!without.text.contains("% off"), "{template}: {}", without.text);
            assert!(!without.text.contains("code"), "{template}: {}", without.text);
        }
    }
}
