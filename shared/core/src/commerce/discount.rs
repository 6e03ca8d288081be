//! Discount codes (issue 19 item 4, decision 0074).
//!
//! A campaign's send step may ask for one (`discount: {percent, valid_for}`).
//! The channel mints it when the message is sent: the code is an HMAC of
//! the message id under the deployment's signing secret (the one that signs
//! unsubscribe links), so a retried send mints the same code, and a
//! suppressed message mints none. The code is stored as `DiscountIssued`
//! on its own stream `discount-<code>`.
//!
//! An order redeems it (`POST /orders` with `discount_code`, or a shop's
//! coupon): the code must exist, be unexpired, be the ordering customer's,
//! and be unused. The order records `DiscountRedeemed` on its own stream,
//! in the same append as `OrderPlaced`, with a reservation on the code so
//! that a second order with it is refused atomically.

use crate::aggregate::{Aggregate, DecideContext};
use crate::event::DomainEvent;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Characters of a code, without its dashes.
pub const CODE_LEN: usize = 12;
/// Crockford's base32: no I, L, O or U, so a code read aloud or retyped
/// survives.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Domain separation from the unsubscribe tokens signed with the same secret.
const DOMAIN: &[u8] = b"crm-discount-code\0";

/// The code of message `message_id`'s discount under `secret`: the first
/// 60 bits of HMAC-SHA256(domain ‖ message id) in Crockford base32, as
/// `XXXX-XXXX-XXXX`. Deterministic: the same message always gets the same
/// code; without the secret a code cannot be guessed from the message id.
pub fn mint_code(secret: &[u8], message_id: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(DOMAIN);
    mac.update(message_id.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let bits = u64::from_be_bytes(head);
    let chars: String = (0..CODE_LEN)
        .map(|i| ALPHABET[((bits >> (59 - 5 * i)) & 0x1f) as usize] as char)
        .collect();
    format_code(&chars)
}

fn format_code(chars: &str) -> String {
    format!("{}-{}-{}", &chars[..4], &chars[4..8], &chars[8..])
}

/// A code as a customer may type it (any case, with or without dashes or
/// spaces, `O` for `0`, `I` or `L` for `1`) in its canonical form; `None`
/// when it cannot be one of ours.
pub fn normalize_code(raw: &str) -> Option<String> {
    let mut chars = String::with_capacity(CODE_LEN);
    for c in raw.trim().chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || chars.len() == CODE_LEN {
            return None;
        }
        chars.push(c);
    }
    (chars.len() == CODE_LEN).then(|| format_code(&chars))
}

/// The stream of discount `code` (canonical form).
pub fn stream_id(code: &str) -> String {
    format!("discount-{code}")
}

/// The reservation the order that redeems `code` holds: a code is used once.
pub fn reservation_key(code: &str) -> String {
    format!("discount-code#{code}")
}

/// `DiscountIssued`: what the channel mints (and the command that mints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IssueDiscount {
    pub code: String,
    /// 1 to 100.
    pub percent: u8,
    pub expires_at: DateTime<Utc>,
    pub campaign_id: String,
    pub campaign_version: u64,
    pub message_id: String,
    /// The customer the message went to: only they may redeem it.
    pub customer_id: String,
}

/// The events of a discount stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum DiscountEvent {
    DiscountIssued(IssueDiscount),
}

impl DomainEvent for DiscountEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// A discount as issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    #[serde(flatten)]
    pub issued: IssueDiscount,
    pub issued_at: DateTime<Utc>,
    pub version: u64,
}

impl Discount {
    /// What the code takes off `subtotal_minor`: `percent` of it, rounded
    /// down to the minor unit.
    pub fn amount_off(&self, subtotal_minor: i64) -> i64 {
        subtotal_minor.max(0).saturating_mul(i64::from(self.issued.percent)) / 100
    }
}

/// Why a discount was not issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscountError {
    /// Two messages minted the same code (a 60-bit collision): the second
    /// goes without one.
    #[error("discount code {0} was already issued for another message")]
    Collision(String),
    #[error("no such discount code")]
    NotFound,
}

/// The discount aggregate: issued once per code; issuing it again for the
/// same message changes nothing (a retried send).
pub struct DiscountAggregate;

impl Aggregate for DiscountAggregate {
    type State = Discount;
    type Command = IssueDiscount;
    type Event = DiscountEvent;
    type Error = DiscountError;
    type Input = ();

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }
    fn customer_id(state: &Discount) -> Option<&str> {
        Some(&state.issued.customer_id)
    }
    fn version(state: &Discount) -> u64 {
        state.version
    }
    fn not_found() -> DiscountError {
        DiscountError::NotFound
    }
    fn decide(
        state: Option<&Discount>,
        command: &IssueDiscount,
        _ctx: &DecideContext<'_, ()>,
    ) -> Result<Vec<DiscountEvent>, DiscountError> {
        issue(state, command)
    }
    fn evolve(state: Option<Discount>, event: &DiscountEvent, at: DateTime<Utc>, version: u64) -> Option<Discount> {
        match (state, event) {
            (None, DiscountEvent::DiscountIssued(issued)) => Some(Discount {
                issued: issued.clone(),
                issued_at: at,
                version,
            }),
            (Some(mut d), _) => {
                d.version = version;
                Some(d)
            }
        }
    }
}

/// Issues `command` unless the code exists: for the same message that is
/// a retry (nothing new), for another one a collision.
pub fn issue(state: Option<&Discount>, command: &IssueDiscount) -> Result<Vec<DiscountEvent>, DiscountError> {
    match state {
        None => Ok(vec![DiscountEvent::DiscountIssued(command.clone())]),
        Some(d) if d.issued.message_id == command.message_id => Ok(Vec::new()),
        Some(_) => Err(DiscountError::Collision(command.code.clone())),
    }
}

/// Why a code does not redeem on an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a code we issued (422).
    #[error("no such discount code")]
    Unknown,
    /// Past its expiry (422).
    #[error("the discount code expired at {0}")]
    Expired(DateTime<Utc>),
    /// Issued to another customer (422): a code is personal.
    #[error("the discount code was issued to another customer")]
    OtherCustomer,
    /// Another order redeemed it (409).
    #[error("the discount code was already used")]
    Used,
}

impl Refusal {
    /// Whether the code is spent rather than invalid (409, not 422).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Refusal::Used)
    }
}

/// Whether `customer_id` may redeem `discount` on an order at `now`. That
/// it is unused is the order's reservation on the code (checked atomically
/// with the order's append).
pub fn check_redemption<'a>(
    discount: Option<&'a Discount>,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<&'a Discount, Refusal> {
    let discount = discount.ok_or(Refusal::Unknown)?;
    if discount.issued.customer_id != customer_id {
        return Err(Refusal::OtherCustomer);
    }
    if now >= discount.issued.expires_at {
        return Err(Refusal::Expired(discount.issued.expires_at));
    }
    Ok(discount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).single().expect("time")
    }

    fn issued(code: &str, message: &str) -> IssueDiscount {
        IssueDiscount {
            code: code.into(),
            percent: 10,
            expires_at: at(12),
            campaign_id: "abandoned-cart".into(),
            campaign_version: 2,
            message_id: message.into(),
            customer_id: "c-1".into(),
        }
    }

    fn discount() -> Discount {
        Discount {
            issued: issued("7KQ2-M9XD-4HBT", "m-1"),
            issued_at: at(0),
            version: 1,
        }
    }

    #[test]
    fn a_code_is_minted_from_the_message_id_under_the_secret() {
        let code = mint_code(b"secret", "m-1");
        assert_eq!(code, mint_code(b"secret", "m-1"), "deterministic");
        assert_ne!(code, mint_code(b"secret", "m-2"), "per message");
        assert_ne!(code, mint_code(b"other secret", "m-1"), "per deployment");
        assert_eq!(code.len(), CODE_LEN + 2);
        assert_eq!(code.matches('-').count(), 2);
        assert_eq!(normalize_code(&code), Some(code.clone()), "canonical");
        // Not any HMAC of the id: the domain separates it from unsubscribe tokens.
        let mut plain = <Hmac<Sha256> as Mac>::new_from_slice(b"secret").expect("key");
        plain.update(b"m-1");
        let bytes = plain.finalize().into_bytes();
        let undomained: String = (0..CODE_LEN)
            .map(|i| {
                let bits = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
                ALPHABET[((bits >> (59 - 5 * i)) & 0x1f) as usize] as char
            })
            .collect();
        assert_ne!(code.replace('-', ""), undomained);
    }

    #[test]
    fn codes_are_read_as_customers_type_them() {
        assert_eq!(normalize_code(" 7kq2 m9xd 4hbt "), Some("7KQ2-M9XD-4HBT".into()));
        assert_eq!(normalize_code("7KQ2M9XD4HBT"), Some("7KQ2-M9XD-4HBT".into()));
        assert_eq!(normalize_code("OIL2-M9XD-4HBT"), Some("0112-M9XD-4HBT".into()));
        assert_eq!(normalize_code("7KQ2-M9XD-4HB"), None, "too short");
        assert_eq!(normalize_code("7KQ2-M9XD-4HBTX"), None, "too long");
        assert_eq!(normalize_code("7KQ2-M9XD-4HBU"), None, "U is not in the alphabet");
        assert_eq!(normalize_code("COMEBACK10"), None);
        assert_eq!(normalize_code(""), None);
    }

    #[test]
    fn issuing_again_for_the_same_message_is_a_retry() {
        let command = issued("7KQ2-M9XD-4HBT", "m-1");
        assert_eq!(
            issue(None, &command),
            Ok(vec![DiscountEvent::DiscountIssued(command.clone())])
        );
        assert_eq!(issue(Some(&discount()), &command), Ok(Vec::new()));
        assert_eq!(
            issue(Some(&discount()), &issued("7KQ2-M9XD-4HBT", "m-2")),
            Err(DiscountError::Collision("7KQ2-M9XD-4HBT".into()))
        );
    }

    #[test]
    fn a_code_redeems_for_its_customer_until_it_expires() {
        let d = discount();
        assert_eq!(check_redemption(Some(&d), "c-1", at(11)), Ok(&d));
        assert_eq!(check_redemption(None, "c-1", at(11)), Err(Refusal::Unknown));
        assert_eq!(check_redemption(Some(&d), "c-2", at(11)), Err(Refusal::OtherCustomer));
        assert_eq!(check_redemption(Some(&d), "c-1", at(12)), Err(Refusal::Expired(at(12))));
        assert!(Refusal::Used.is_conflict() && !Refusal::Unknown.is_conflict());
    }

    #[test]
    fn the_amount_off_is_the_percent_of_the_subtotal_rounded_down() {
        let d = discount();
        assert_eq!(d.amount_off(10_800), 1_080);
        assert_eq!(d.amount_off(999), 99);
        assert_eq!(d.amount_off(0), 0);
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use crate::aggregate::Aggregate;
    use crate::commerce::order::{decide, OrderAggregate, OrderCommand, OrderEvent, OrderItem, PlaceOrder};
    use crate::ports::ReservationChange;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).single().expect("time")
    }

    fn with_code(customer: &str) -> OrderCommand {
        let discount = Discount {
            issued: IssueDiscount {
                code: "7KQ2-M9XD-4HBT".into(),
                percent: 10,
                expires_at: at(12),
                campaign_id: "abandoned-cart".into(),
                campaign_version: 2,
                message_id: "m-1".into(),
                customer_id: "c-1".into(),
            },
            issued_at: at(0),
            version: 1,
        };
        OrderCommand::Place(Box::new(PlaceOrder {
            customer_id: customer.into(),
            cart_id: None,
            items: Some(vec![OrderItem {
                product_id: "lamp".into(),
                name: "Lamp".into(),
                category: None,
                quantity: 1,
                unit_price_minor: 6500,
            }]),
            subtotal_minor: None,
            tax_minor: 0,
            shipping_minor: 0,
            total_minor: 5850,
            currency: Some("EUR".into()),
            shipping_address: None,
            billing_address: None,
            discount_minor: discount.amount_off(6500),
            adjustment_minor: 0,
            discount_code: Some(discount.issued.code.clone()),
            discount: Some(discount),
        }))
    }

    #[test]
    fn an_order_redeems_its_code_in_the_same_write_and_reserves_it() {
        let events = decide(None, &with_code("c-1"), "o-1", at(11)).expect("placed");
        assert!(matches!(
            &events[0],
            OrderEvent::OrderPlaced {
                discount_minor: 650,
                ..
            }
        ));
        let OrderEvent::DiscountRedeemed {
            code,
            order_id,
            customer_id,
            campaign_id,
            ..
        } = &events[1]
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (
                code.as_str(),
                order_id.as_str(),
                customer_id.as_str(),
                campaign_id.as_str()
            ),
            ("7KQ2-M9XD-4HBT", "o-1", "c-1", "abandoned-cart")
        );
        assert!(
            OrderAggregate::reservations("o-1", None, &events).contains(&ReservationChange::Claim {
                key: reservation_key("7KQ2-M9XD-4HBT"),
                owner: "order-o-1".into(),
            })
        );
    }

    #[test]
    fn an_expired_or_another_customers_code_refuses_the_order() {
        let field = |r: Result<Vec<OrderEvent>, crate::commerce::OrderError>| match r {
            Err(crate::commerce::OrderError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(decide(None, &with_code("c-1"), "o-1", at(12))), "discount_code");
        assert_eq!(field(decide(None, &with_code("c-2"), "o-1", at(11))), "discount_code");
    }

    #[test]
    fn a_send_step_asks_for_a_valid_discount() {
        let campaign = |discount: &str| {
            format!(
                "id: c\nname: C\ntrigger:\n  pattern:\n    detail-type: [CartAbandoned]\nsteps:\n  - id: offer\n    \
                 type: send\n    channel: email\n    template: abandoned-cart-final-offer\n    category: transactional\n    \
                 discount: {discount}\n"
            )
        };
        let ok =
            crate::journey::definition::Campaign::from_yaml(&campaign("{percent: 10, valid_for: 72h}")).expect("valid");
        let crate::journey::definition::Step::Send(send) = &ok.steps[0] else {
            panic!("a send")
        };
        assert_eq!(
            send.discount.map(|d| d.offer()),
            Some(crate::vocabulary::DiscountOffer {
                percent: 10,
                valid_for_seconds: 72 * 3600
            })
        );
        for (discount, path) in [
            ("{percent: 0, valid_for: 72h}", "steps[0].discount.percent"),
            ("{percent: 101, valid_for: 72h}", "steps[0].discount.percent"),
            ("{percent: 2.5, valid_for: 72h}", "steps[0].discount.percent"),
            ("{percent: 10, valid_for: 0h}", "steps[0].discount.valid_for"),
            ("{percent: 10, valid_for: soon}", "steps[0].discount.valid_for"),
        ] {
            let errors = crate::journey::definition::Campaign::from_yaml(&campaign(discount)).expect_err(discount);
            assert!(errors.iter().any(|e| e.path == path), "{discount}: {errors:?}");
        }
    }
}
