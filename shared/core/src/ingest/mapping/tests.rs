//! The mapping of each call type and name, its defaults and refusals.

use super::*;
use crate::customer::activity::CouponChange;
use crate::ingest::derived_id;
use serde_json::json;

const SOURCE: &str = "shop";

fn message(body: Value) -> SegmentMessage {
    SegmentMessage::parse(&body, None, crate::testing::test_time()).expect("a message")
}

fn track(event: &str, properties: Value) -> SegmentMessage {
    message(json!({ "type": "track", "messageId": "1", "userId": "u", "event": event, "properties": properties }))
}

fn mapped(event: &str, properties: Value) -> Mapped {
    map(&track(event, properties), SOURCE, false).expect("mapped")
}

fn activity(event: &str, properties: Value) -> ActivityEvent {
    match mapped(event, properties) {
        Mapped::Activity(a) => a,
        other => panic!("{event}: not activity: {other:?}"),
    }
}

#[test]
fn known_names_map_onto_typed_events() {
    let viewed = message(
        json!({ "type": "track", "messageId": "1", "anonymousId": "a", "event": "Product Viewed",
        "properties": { "sku": "lamp-1", "name": "Desk lamp", "price": 40.5 },
        "context": { "campaign": { "source": "news", "name": "winter" } } }),
    );
    let Ok(Mapped::Activity(ActivityEvent::ProductViewed(p))) = map(&viewed, SOURCE, false) else {
        panic!("not a product view");
    };
    assert_eq!((p.product_id.as_str(), p.price_minor), ("lamp-1", Some(4050)));
    assert_eq!(p.utm.as_ref().and_then(|u| u.campaign.as_deref()), Some("winter"));

    assert_eq!(
        mapped(
            "Product Added",
            json!({ "cart_id": "c-9", "product_id": "lamp-1", "name": "Desk lamp", "price": 40, "quantity": 2, "currency": "eur" })
        ),
        Mapped::AddToCart {
            cart: "c-9".into(),
            currency: "EUR".into(),
            item: AddItem {
                product_id: "lamp-1".into(),
                name: "Desk lamp".into(),
                quantity: 2,
                unit_price_minor: 4000
            }
        }
    );

    let Mapped::Order(o) = mapped(
        "Order Completed",
        json!({ "order_id": "o-1", "tax": 1.5, "currency": "EUR",
            "products": [{ "product_id": "lamp-1", "name": "Desk lamp", "price": 40, "quantity": 2 }] }),
    ) else {
        panic!("not an order")
    };
    assert_eq!((o.subtotal_minor, o.tax_minor, o.total_minor), (8000, 150, 8150));
    assert_eq!(o.adjustment_minor, 0);

    let page = message(
        json!({ "type": "page", "messageId": "4", "anonymousId": "a", "name": "Home",
        "context": { "page": { "url": "https://shop.example/" } } }),
    );
    let Ok(Mapped::Activity(ActivityEvent::PageViewed(p))) = map(&page, SOURCE, true) else {
        panic!("not a page")
    };
    assert_eq!(
        (p.url.as_str(), p.title.as_deref(), p.late),
        ("https://shop.example/", Some("Home"), true)
    );
}

/// The spec's Order Completed example: lines 25.00, discount 2.50,
/// subtotal (after the discount) 22.50, tax 2, shipping 3, total 27.50.
#[test]
fn the_spec_order_balances_with_its_discount_and_a_bare_one_with_an_adjustment() {
    let products = json!([
        { "product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "name": "Monopoly: 3rd Edition",
          "price": 19, "quantity": 1, "category": "Games" },
        { "product_id": "505bd76785ebb509fc183733", "sku": "46493-32", "name": "Uno Card Game",
          "price": 3, "quantity": 2, "category": "Games" }
    ]);
    let Mapped::Order(o) = mapped(
        "Order Completed",
        json!({ "checkout_id": "fksdjfsdjfisjf9sdfjsd9f", "order_id": "50314b8e9bcf000000000000",
            "affiliation": "Google Store", "total": 27.50, "subtotal": 22.50, "revenue": 25.00, "shipping": 3,
            "tax": 2, "discount": 2.5, "coupon": "hasbros", "currency": "USD", "products": products }),
    ) else {
        panic!("not an order")
    };
    assert_eq!(o.order_id, "50314b8e9bcf000000000000");
    assert_eq!(
        (
            o.subtotal_minor,
            o.discount_minor,
            o.tax_minor,
            o.shipping_minor,
            o.total_minor,
            o.adjustment_minor
        ),
        (2500, 250, 200, 300, 2750, 0)
    );
    assert_eq!(
        (o.shipping_address.as_ref(), o.payment_method),
        (None, PaymentMethod::Other)
    );
    assert_eq!(o.items[1].category.as_deref(), Some("Games"));

    // Only order_id, total, currency and products: the difference is an adjustment.
    let Mapped::Order(bare) = mapped(
        "Order Completed",
        json!({ "order_id": "o-2", "total": 30, "currency": "usd", "products": products }),
    ) else {
        panic!("not an order")
    };
    assert_eq!(
        (bare.total_minor, bare.adjustment_minor, bare.currency.as_str()),
        (3000, 500, "USD")
    );
    // Only revenue: revenue - discount + tax + shipping.
    let Mapped::Order(revenue) = mapped(
        "Order Completed",
        json!({ "order_id": "o-3", "revenue": 25, "payment_method": "Visa", "products": products }),
    ) else {
        panic!("not an order")
    };
    assert_eq!((revenue.total_minor, revenue.adjustment_minor), (2500, 0));
    assert_eq!(revenue.payment_method, PaymentMethod::CreditCard);
}

#[test]
fn browsing_checkout_coupons_wishlists_and_reviews_are_typed() {
    let ActivityEvent::ProductListViewed(list) = activity(
        "Product List Viewed",
        json!({ "list_id": "hot_deals_1", "category": "Deals", "products": [
            { "product_id": "507f1f77bcf86cd799439011", "name": "Monopoly" }, { "sku": "46493-32" }, { "name": "no id" },
            { "product_id": "not a valid/id" } ] }),
    ) else {
        panic!("list")
    };
    assert_eq!(list.list_id.as_deref(), Some("hot_deals_1"));
    assert_eq!(list.product_ids, vec!["507f1f77bcf86cd799439011", "46493-32"]);

    let ActivityEvent::ProductClicked(clicked) = activity(
        "Product Clicked",
        json!({ "sku": "G-32", "name": "Monopoly: 3rd Edition" }),
    ) else {
        panic!("clicked")
    };
    assert_eq!(clicked.product_id, "G-32");

    let ActivityEvent::ShoppingCartViewed(cart) = activity(
        "Cart Viewed",
        json!({ "cart_id": "d92jd29jd92jd29j92d92jd", "products": [{ "product_id": "p-1" }] }),
    ) else {
        panic!("cart")
    };
    assert_eq!(cart.cart_id, derived_id("cart", SOURCE, "d92jd29jd92jd29j92d92jd"));

    let ActivityEvent::CheckoutStepViewed(step) = activity(
        "Checkout Step Viewed",
        json!({ "checkout_id": "50314b8e9bcf000000000000", "step": 2, "shipping_method": "Fedex" }),
    ) else {
        panic!("step viewed")
    };
    assert_eq!(
        (step.cart_id.as_str(), step.step.as_str()),
        (derived_id("cart", SOURCE, "50314b8e9bcf000000000000").as_str(), "2")
    );
    let ActivityEvent::CheckoutStepCompleted(payment) = activity(
        "Payment Info Entered",
        json!({ "checkout_id": "39f39fj39f3jf93fj9fj39fj3f", "order_id": "dkfsjidfjsdifsdfksdjfkdsfjsdfkdsf" }),
    ) else {
        panic!("payment info")
    };
    assert_eq!(payment.step, "payment");

    let Mapped::Checkout { cart, currency, items } = mapped(
        "Checkout Started",
        json!({ "order_id": "50314b8e9bcf000000000000", "currency": "USD",
            "products": [{ "product_id": "p-1", "name": "Uno", "price": 3, "quantity": 2 }] }),
    ) else {
        panic!("checkout")
    };
    assert_eq!((cart.as_str(), currency.as_str()), ("50314b8e9bcf000000000000", "USD"));
    assert_eq!((items[0].quantity, items[0].unit_price_minor), (2, 300));

    for (event, change) in [
        ("Coupon Entered", CouponChange::Entered),
        ("Coupon Applied", CouponChange::Applied),
        ("Coupon Denied", CouponChange::Denied),
        ("Coupon Removed", CouponChange::Removed),
    ] {
        let ActivityEvent::CouponChanged(c) = activity(
            event,
            json!({ "order_id": "50314b8e9bcf000000000000", "cart_id": "923923929jd29jd92dj9j93fj3",
                "coupon": "may_deals_2016", "discount": 23.32 }),
        ) else {
            panic!("{event}")
        };
        assert_eq!(
            (c.change, c.coupon.as_str(), c.discount_minor),
            (change, "may_deals_2016", Some(2332))
        );
        assert_eq!(
            c.order_id,
            Some(derived_id("order", SOURCE, "50314b8e9bcf000000000000"))
        );
    }

    let ActivityEvent::ProductWishlisted(w) = activity(
        "Product Added to Wishlist",
        json!({ "wishlist_id": "skdjsidjsdkdj29j", "wishlist_name": "Loved Games", "product_id": "507f1f77bcf86cd799439011" }),
    ) else {
        panic!("wishlist")
    };
    assert_eq!(w.wishlist_id.as_deref(), Some("skdjsidjsdkdj29j"));
    let ActivityEvent::ProductReviewed(r) = activity(
        "Product Reviewed",
        json!({ "product_id": "507f1f77bcf86cd799439011", "review_id": "kdfjrj39fj39jf3",
            "review_body": "I love this product", "rating": "5" }),
    ) else {
        panic!("review")
    };
    assert_eq!((r.rating, r.review_id.as_deref()), (Some(5), Some("kdfjrj39fj39jf3")));

    assert_eq!(
        mapped("Order Cancelled", json!({ "order_id": "o-1", "total": 30 })),
        Mapped::CancelOrder {
            order: "o-1".into(),
            reason: "cancelled by the shop (Order Cancelled)".into()
        }
    );
    assert_eq!(
        mapped(
            "Order Refunded",
            json!({ "order_id": "o-1", "products": [{ "product_id": "p-1", "price": 19, "quantity": 1 }] })
        ),
        Mapped::RefundOrder(RefundRequest {
            order: "o-1".into(),
            amount_minor: Some(1900),
            product_ids: vec!["p-1".into()]
        })
    );
    for event in [
        activity("Product Viewed", json!({ "product_id": "p" })),
        activity("Products Searched", json!({ "query": { "color": "blue" } })),
    ] {
        event.validate().expect("valid");
    }
    assert!(mapped("Order Refunded", json!({ "order_id": "o-1" })).changes_an_order());
    assert_eq!(
        mapped(
            "Order Updated",
            json!({ "order_id": "o-1", "total": 27.5, "tax": 2, "coupon": "x", "currency": "eur",
                "products": [{ "sku": "p-1", "price": 19, "quantity": 1 }] })
        ),
        Mapped::AmendOrder(Box::new(OrderUpdate {
            order: "o-1".into(),
            items: Some(vec![OrderItem {
                product_id: "p-1".into(),
                name: "p-1".into(),
                category: None,
                quantity: 1,
                unit_price_minor: 1900
            }]),
            discount_minor: None,
            tax_minor: Some(200),
            shipping_minor: None,
            total_minor: Some(2750),
            revenue_minor: None,
            currency: Some("EUR".into())
        }))
    );
    assert!(mapped("Order Updated", json!({ "order_id": "o-1" })).changes_an_order());
}

#[test]
fn missing_what_an_event_is_about_keeps_it_as_a_custom_event() {
    for (event, properties) in [
        ("Wishlist Shared", json!({ "list": "xmas" })),
        ("Order Updated", json!({ "total": 27.5 })),
        ("Product Viewed", json!({ "name": "x" })),
        ("Product Clicked", json!({})),
        ("Product Added", json!({ "product_id": "p", "price": 1 })),
        ("Cart Viewed", json!({ "products": [] })),
        ("Checkout Started", json!({ "products": [] })),
        ("Checkout Step Completed", json!({ "step": 2 })),
        ("Coupon Applied", json!({ "discount": 1 })),
        ("Product Reviewed", json!({ "rating": "5" })),
        ("Products Searched", json!({})),
    ] {
        let ActivityEvent::CustomEvent(c) = activity(event, properties.clone()) else {
            panic!("{event}: not custom")
        };
        assert_eq!((c.event.as_str(), &c.properties), (event, &properties));
    }
}

#[test]
fn malformed_values_and_orders_without_an_id_are_refused_naming_the_field() {
    let field = |body: Value| match map(&message(body), SOURCE, false) {
        Err(r) => r.field,
        Ok(m) => panic!("mapped: {m:?}"),
    };
    assert_eq!(
        field(
            json!({ "type": "track", "messageId": "1", "anonymousId": "a", "event": "Product Added",
        "properties": { "cart_id": "c", "product_id": "p", "name": "n", "price": "free" } })
        ),
        "properties.price"
    );
    assert_eq!(
        field(
            json!({ "type": "track", "messageId": "1", "userId": "u", "event": "Order Completed",
        "properties": { "order_id": "o", "products": [{ "name": "no id", "price": 1 }] } })
        ),
        "properties.products[0].product_id"
    );
    assert_eq!(
        field(
            json!({ "type": "track", "messageId": "1", "userId": "u", "event": "Order Completed",
        "properties": { "total": 3, "products": [{ "product_id": "p" }] } })
        ),
        "properties.order_id"
    );
    assert_eq!(
        field(
            json!({ "type": "track", "messageId": "1", "userId": "u", "event": "Order Refunded",
        "properties": { "total": 3 } })
        ),
        "properties.order_id"
    );
    assert_eq!(
        field(json!({ "type": "page", "messageId": "1", "anonymousId": "a" })),
        "properties.url"
    );
}

#[test]
fn the_known_names_are_those_the_concerns_map() {
    let mut mapped: Vec<&str> = [browsing::NAMES, cart::NAMES, orders::NAMES].concat();
    let mut known = KNOWN_EVENTS.to_vec();
    mapped.sort_unstable();
    known.sort_unstable();
    assert_eq!(mapped, known);
}
