//! Discount codes (issue 19 item 4, decision 0074), end to end through the
//! API on a virtual clock: the abandoned cart's reminder and final offer
//! each carry a code minted when they are sent (read here from the sent
//! mail); the final offer's code redeems once on `POST /orders` (its
//! percent off the subtotal), a second order with it is 409; an expired
//! code, another customer's and an unknown one are 422, all naming
//! `discount_code`, and nothing is written.

use chrono::{DateTime, Utc};
use crm_tests::TestApi;
use serde_json::{json, Value};

/// 10:00 in New York (the registration's time zone): no quiet hours at the
/// sends.
fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

/// The code in a sent text (`... with code XXXX-XXXX-XXXX ...`).
fn code_in(text: &str) -> String {
    let at = text.find("with code ").expect("the mail carries a code") + "with code ".len();
    text[at..].chars().take(14).collect()
}

/// Registers a customer, abandons a 65 EUR cart, and lets the reminder
/// (3 h later) and the final offer (a day after it) go. Returns the customer,
/// the cart, and the reminder's and the final offer's codes.
async fn offers(api: &TestApi, email: &str) -> (String, String, String, String) {
    let customer_id = api.register(email).await;
    let cart_id = api.cart_with_lamps(&customer_id, 1, 6500).await;
    // Abandoned after 2 h, the reminder an hour later, the offer a day later.
    api.advance_minutes(120).await;
    api.advance_minutes(60).await;
    api.advance_minutes(24 * 60).await;
    let mail = api.runtime.mail.list().await.expect("mail");
    let mine: Vec<_> = mail.iter().filter(|m| m.recipient == email).collect();
    let subjects: Vec<&str> = mine.iter().map(|m| m.subject.as_str()).collect();
    let reminder = mine
        .iter()
        .find(|m| m.subject.contains("left something in your cart"))
        .and_then(|m| m.email())
        .unwrap_or_else(|| panic!("a reminder: {subjects:?}"));
    let offer = mine
        .iter()
        .find(|m| m.subject.contains("10% off your cart"))
        .and_then(|m| m.email())
        .unwrap_or_else(|| panic!("a final offer with its percent: {subjects:?}"));
    assert!(reminder.text.contains("5% off"), "{}", reminder.text);
    let (small, large) = (code_in(&reminder.text), code_in(&offer.text));
    assert!(offer.html.contains(&large), "the html shows it too");
    assert_ne!(small, large, "a code per message");
    (customer_id, cart_id, small, large)
}

fn order(customer_id: &str, items: Value, total: i64, code: &str) -> String {
    json!({
        "customer_id": customer_id, "items": items, "currency": "EUR",
        "tax_minor": 0, "shipping_minor": 500, "total_minor": total, "discount_code": code,
        "shipping_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" }
    })
    .to_string()
}

fn lamp() -> Value {
    json!([{ "product_id": "lamp", "name": "Desk lamp", "quantity": 1, "unit_price_minor": 6500 }])
}

#[tokio::test]
async fn the_final_offer_carries_a_code_that_redeems_once() {
    let api = TestApi::at(start());
    let (customer_id, cart_id, _, code) = offers(&api, "grace@example.com").await;
    let issued = api.events_of_type("DiscountIssued").await;
    assert_eq!(issued.len(), 2, "one code per sent message: {issued:?}");
    let offer = issued
        .iter()
        .find(|e| e.data["code"] == code.as_str())
        .expect("the offer's code is stored");
    assert_eq!(offer.stream_id, format!("discount-{code}"));
    assert_eq!(offer.data["percent"], 10);
    assert_eq!(offer.data["campaign_id"], "abandoned-cart");
    assert_eq!(offer.data["customer_id"], customer_id.as_str());

    // 10% off 65.00 is 6.50: 65.00 − 6.50 + 5.00 shipping. Typed in lower
    // case without dashes, as a customer may.
    let typed = code.replace('-', "").to_lowercase();
    let body = json!({
        "customer_id": customer_id, "cart_id": cart_id, "tax_minor": 0, "shipping_minor": 500,
        "total_minor": 6350, "discount_code": typed,
        "shipping_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" }
    });
    let placed = api.call("POST", "/orders", Some(&body.to_string())).await;
    assert_eq!(placed.status, 201, "{:?}", placed.body);
    assert_eq!(placed.body["discount_minor"], 650, "{:?}", placed.body);
    assert_eq!(placed.body["discount_code"], code.as_str());
    let order_id = placed.body["id"].as_str().expect("id").to_string();
    let redeemed = api.events_of_type("DiscountRedeemed").await;
    assert_eq!(redeemed.len(), 1);
    assert_eq!(redeemed[0].stream_id, format!("order-{order_id}"));
    assert_eq!(redeemed[0].data["code"], code.as_str());
    assert_eq!(redeemed[0].data["order_id"], order_id.as_str());
    assert_eq!(redeemed[0].data["customer_id"], customer_id.as_str());
    assert_eq!(redeemed[0].data["campaign_id"], "abandoned-cart");

    // The same code on a second order: 409, and nothing is written.
    let before = api.event_count().await;
    let again = api
        .call("POST", "/orders", Some(&order(&customer_id, lamp(), 6350, &code)))
        .await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(again.body["field"], "discount_code", "{:?}", again.body);
    assert_eq!(api.event_count().await, before);

    // The campaign that issued the code gets the whole order under every
    // model, on the channel of the message that carried it.
    let a = api.call("GET", &format!("/orders/{order_id}/attribution"), None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let models = a.body["models"].as_object().expect("models");
    assert_eq!(models.len(), 5, "{:?}", a.body);
    for (model, credit) in models {
        assert_eq!(
            credit["campaigns"],
            json!([{ "campaign": "abandoned-cart", "credit": 100.0, "credit_bp": 10000, "value_minor": 6350, "touches": 1 }]),
            "{model}: {credit:?}"
        );
        assert_eq!(credit["channels"][0]["channel"], "email", "{model}: {credit:?}");
    }
}

#[tokio::test]
async fn an_expired_another_customers_or_unknown_code_is_refused() {
    let api = TestApi::at(start());
    let (customer_id, _, reminder_code, offer_code) = offers(&api, "grace@example.com").await;
    let other = api.register("ada@example.com").await;
    let before = api.event_count().await;

    // Another customer's code.
    let theirs = api
        .call("POST", "/orders", Some(&order(&other, lamp(), 6675, &offer_code)))
        .await;
    assert_eq!(theirs.status, 422, "{:?}", theirs.body);
    assert_eq!(theirs.body["field"], "discount_code", "{:?}", theirs.body);
    // A code we never issued, and text that is no code at all.
    for unknown in ["ABCD-EFGH-JKMN", "COMEBACK10"] {
        let refused = api
            .call("POST", "/orders", Some(&order(&customer_id, lamp(), 6675, unknown)))
            .await;
        assert_eq!(refused.status, 422, "{unknown}: {:?}", refused.body);
        assert_eq!(refused.body["field"], "discount_code", "{:?}", refused.body);
    }
    assert_eq!(api.event_count().await, before, "nothing written");

    // The reminder's code (5%, sent 3 h after the cart) is good for 72 h:
    // 49 h after the final offer (76 h after the cart) it has expired.
    api.advance_minutes(49 * 60).await;
    let before = api.event_count().await;
    let expired = api
        .call(
            "POST",
            "/orders",
            Some(&order(&customer_id, lamp(), 6675, &reminder_code)),
        )
        .await;
    assert_eq!(expired.status, 422, "{:?}", expired.body);
    assert_eq!(expired.body["field"], "discount_code", "{:?}", expired.body);
    assert!(
        expired.body["detail"].as_str().unwrap_or_default().contains("expired"),
        "{:?}",
        expired.body
    );
    assert_eq!(api.event_count().await, before, "nothing written");
    // The final offer's, sent a day later, is still good: 6.50 off.
    let ok = api
        .call("POST", "/orders", Some(&order(&customer_id, lamp(), 6350, &offer_code)))
        .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
}

#[tokio::test]
async fn a_shops_order_redeems_its_coupon_once_and_a_used_one_is_reported() {
    let api = TestApi::at(start());
    let (customer_id, _, _, code) = offers(&api, "grace@example.com").await;
    let identify = json!({ "messageId": "id-1", "userId": "shop-grace", "traits": { "email": "grace@example.com" } });
    assert_eq!(api.segment("identify", &identify).await.status, 200);
    let completed = |message: &str, order: &str, coupon: &str| {
        json!({ "messageId": message, "userId": "shop-grace", "event": "Order Completed",
            "properties": { "order_id": order, "total": 58.5, "discount": 6.5, "coupon": coupon, "currency": "EUR",
                "products": [{ "product_id": "lamp", "name": "Desk lamp", "price": 65, "quantity": 1 }] } })
    };
    let first = api.segment("track", &completed("o-1", "shop-o-1", &code)).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let redeemed = api.events_of_type("DiscountRedeemed").await;
    assert_eq!(redeemed.len(), 1, "{redeemed:?}");
    assert_eq!(redeemed[0].data["code"], code.as_str());
    assert_eq!(redeemed[0].data["customer_id"], customer_id.as_str());
    assert_eq!(redeemed[0].data["discount_minor"], 650, "the shop's own discount");

    // The shop reports another order with the same code: the order is a
    // fact and is recorded, the code is not redeemed again, and the
    // refused-messages log says why.
    let second = api.segment("track", &completed("o-2", "shop-o-2", &code)).await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(api.events_of_type("OrderPlaced").await.len(), 2);
    assert_eq!(api.events_of_type("DiscountRedeemed").await.len(), 1);
    let refused = api.call("GET", "/sources/local/refused", None).await;
    assert_eq!(refused.status, 200, "{:?}", refused.body);
    let items = refused.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{:?}", refused.body);
    assert_eq!(items[0]["field"], "properties.coupon", "{:?}", refused.body);
    assert!(
        items[0]["reason"].as_str().unwrap_or_default().contains("already used"),
        "{:?}",
        refused.body
    );

    // The shop's own coupon is no code of ours: nothing to redeem or report.
    let own = api.segment("track", &completed("o-3", "shop-o-3", "hasbros")).await;
    assert_eq!(own.status, 200, "{:?}", own.body);
    assert_eq!(api.events_of_type("OrderPlaced").await.len(), 3);
    let refused = api.call("GET", "/sources/local/refused", None).await;
    assert_eq!(refused.body["items"].as_array().map(Vec::len), Some(1));
}
