//! Given/when/then tests of the order state machine, and of the order
//! service (cart orders, the payment retry timer) over the in-memory store
//! and scheduler.

use super::*;
use crate::aggregate::{AggregateError, Executed};
use crate::clock::{Clock, VirtualClock};
use crate::commerce::{CartCommand, CartService, CreateCart};
use crate::customer::Address;
use crate::event::{Actor, CommandMeta, EventEnvelope};
use crate::ports::EventStore;
use crate::scheduler::{Scheduler, TimerKind};
use crate::testing::{test_time, AggregateScenario, InMemoryEventStore, InMemoryScheduler, Then};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// The order `o1` after `events` (the `n`th at [`test_time`] plus `n - 1`
/// minutes); a command is decided a minute after the last.
fn given_order(events: &[OrderEvent]) -> AggregateScenario<OrderAggregate> {
    AggregateScenario::new("o1", ()).given(events)
}

/// When a command given `events` is decided: a minute after the last of them.
fn decided_at(events: &[OrderEvent]) -> DateTime<Utc> {
    test_time() + Duration::minutes(events.len() as i64)
}

/// The status of the order after `events`.
fn status_after(events: &[OrderEvent]) -> OrderStatus {
    given_order(events).state().expect("an order").status
}

/// Runs `commands` from nothing and returns every event.
fn history(commands: Vec<OrderCommand>) -> Vec<OrderEvent> {
    let mut events = Vec::new();
    for c in commands {
        let more = given_order(&events)
            .when(c.clone())
            .inspect_result()
            .unwrap_or_else(|e| panic!("{c:?}: {e}"));
        events.extend(more);
    }
    events
}

fn address() -> Address {
    Address {
        line1: "1 Main St".into(),
        line2: None,
        city: "Berlin".into(),
        region: None,
        postal_code: "10115".into(),
        country: "de".into(),
    }
}

fn place_cmd() -> PlaceOrder {
    PlaceOrder {
        customer_id: "c1".into(),
        cart_id: None,
        items: Some(vec![
            OrderItem {
                product_id: "sku-1".into(),
                name: "Espresso beans".into(),
                category: Some("consumables".into()),
                quantity: 2,
                unit_price_minor: 1250,
            },
            OrderItem {
                product_id: "sku-2".into(),
                name: "Milk jug".into(),
                category: None,
                quantity: 1,
                unit_price_minor: 500,
            },
        ]),
        subtotal_minor: Some(3000),
        tax_minor: 570,
        shipping_minor: 430,
        total_minor: 4000,
        currency: Some("EUR".into()),
        shipping_address: Some(address()),
        billing_address: None,
        discount_minor: 0,
        adjustment_minor: 0,
        discount_code: None,
        discount: None,
    }
}

fn place() -> OrderCommand {
    OrderCommand::Place(Box::new(place_cmd()))
}

fn payment(status: PaymentStatus) -> RecordPayment {
    RecordPayment {
        payment_id: "p1".into(),
        status,
        method: PaymentMethod::CreditCard,
        amount_minor: 4000,
        currency: "EUR".into(),
        provider: Some("stripe".into()),
        transaction_id: (status == PaymentStatus::Succeeded).then(|| "tx-1".to_string()),
        error_code: (status == PaymentStatus::Failed).then(|| "card_declined".to_string()),
        error_message: (status == PaymentStatus::Failed).then(|| "Declined".to_string()),
        retryable: None,
    }
}

fn pay(status: PaymentStatus) -> OrderCommand {
    OrderCommand::RecordPayment(payment(status))
}

fn fail(retryable: bool) -> OrderCommand {
    OrderCommand::RecordPayment(RecordPayment {
        retryable: Some(retryable),
        ..payment(PaymentStatus::Failed)
    })
}

fn ship() -> OrderCommand {
    OrderCommand::Ship(ShipOrder {
        carrier: "DHL".into(),
        tracking_number: "JD0146".into(),
        tracking_url: Some("https://track.example/JD0146".into()),
        estimated_delivery: None,
    })
}

fn cancel() -> OrderCommand {
    OrderCommand::Cancel(CancelOrder {
        reason: "changed my mind".into(),
    })
}

fn refund_request(refund_type: RefundType, amount: Option<i64>) -> RequestRefund {
    RequestRefund {
        refund_type,
        amount_minor: amount,
        reason: RefundReason::CustomerRequest,
        items: None,
        return_: None,
    }
}

fn refund(refund_type: RefundType, amount: Option<i64>) -> OrderCommand {
    OrderCommand::Refund {
        refund_id: "r1".into(),
        request: refund_request(refund_type, amount),
    }
}

/// A refund after delivery: a return with a reason (decision 0071).
fn return_refund(refund_type: RefundType, amount: Option<i64>) -> OrderCommand {
    OrderCommand::Refund {
        refund_id: "r1".into(),
        request: RequestRefund {
            return_: Some(ReturnRequest {
                reason: "the jug leaks".into(),
            }),
            ..refund_request(refund_type, amount)
        },
    }
}

/// A refund the shop reports (Segment `Order Refunded`).
fn reported_refund(refund_id: &str, refund_type: RefundType, amount: Option<i64>) -> OrderCommand {
    OrderCommand::RecordReportedRefund {
        refund_id: refund_id.into(),
        request: RequestRefund {
            reason: RefundReason::Other,
            ..refund_request(refund_type, amount)
        },
    }
}

fn pending() -> Vec<OrderEvent> {
    history(vec![place()])
}
fn confirmed() -> Vec<OrderEvent> {
    history(vec![
        place(),
        pay(PaymentStatus::Initiated),
        pay(PaymentStatus::Succeeded),
    ])
}
fn in_transit() -> Vec<OrderEvent> {
    let mut e = confirmed();
    e.extend(given_order(&e).when(ship()).events());
    e
}
fn completed() -> Vec<OrderEvent> {
    let mut e = in_transit();
    e.extend(given_order(&e).when(OrderCommand::Deliver).events());
    e
}
fn payment_failed() -> Vec<OrderEvent> {
    history(vec![place(), pay(PaymentStatus::Initiated), fail(false)])
}
fn cancelled() -> Vec<OrderEvent> {
    history(vec![place(), cancel()])
}
fn refunded() -> Vec<OrderEvent> {
    let mut e = completed();
    e.extend(given_order(&e).when(return_refund(RefundType::Full, None)).events());
    e
}

fn types(events: &[OrderEvent]) -> Vec<&'static str> {
    events.iter().map(OrderEvent::event_type).collect()
}

/// The message of a command refused as a conflict.
fn conflict(decided: Then<OrderAggregate>) -> String {
    match decided.error() {
        OrderError::Conflict { message, .. } => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// The field a refused command names as invalid.
fn invalid(decided: Then<OrderAggregate>) -> String {
    match decided.error() {
        OrderError::Invalid { field, .. } => field,
        other => panic!("expected invalid input, got {other:?}"),
    }
}

#[test]
fn an_order_without_an_address_and_with_a_discount_is_an_order() {
    let mut cmd = place_cmd();
    cmd.shipping_address = None;
    cmd.discount_minor = 250;
    cmd.adjustment_minor = -50;
    cmd.total_minor = 4000 - 250 - 50;
    let events = given_order(&[])
        .when(OrderCommand::Place(Box::new(cmd.clone())))
        .events();
    let OrderEvent::OrderPlaced {
        shipping_address,
        billing_address,
        discount_minor,
        adjustment_minor,
        total_minor,
        ..
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert_eq!((shipping_address, billing_address), (&None, &None));
    assert_eq!((*discount_minor, *adjustment_minor, *total_minor), (250, -50, 3700));
    let (_, data) = crate::event::DomainEvent::to_parts(&events[0]).expect("parts");
    assert!(data.get("shipping_address").is_none(), "absent, not null: {data}");
    assert_eq!(data["discount_minor"], 250);
    let order = given_order(&events).state().cloned().expect("an order");
    assert_eq!((order.shipping_address, order.discount_minor), (None, 250));

    cmd.total_minor = 4000;
    assert_eq!(
        invalid(given_order(&[]).when(OrderCommand::Place(Box::new(cmd.clone())))),
        "total_minor"
    );
    cmd.total_minor = 3700;
    cmd.discount_minor = -1;
    assert_eq!(
        invalid(given_order(&[]).when(OrderCommand::Place(Box::new(cmd)))),
        "discount_minor"
    );
    // The API's body still needs one.
    let body = serde_json::json!({ "customer_id": "c1", "items": [], "tax_minor": 0, "shipping_minor": 0,
        "total_minor": 0 });
    assert!(serde_json::from_value::<PlaceOrder>(body).is_err());
}

#[test]
fn placing_an_order_checks_its_figures() {
    let events = given_order(&[]).when(place()).events();
    let OrderEvent::OrderPlaced {
        total_minor,
        subtotal_minor,
        billing_address,
        shipping_address,
        ..
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert_eq!((*subtotal_minor, *total_minor), (3000, 4000));
    assert_eq!(shipping_address.as_ref().map(|a| a.country.as_str()), Some("DE"));
    assert_eq!(billing_address, shipping_address, "billing defaults to shipping");
    assert_eq!(status_after(&events), OrderStatus::PendingPayment);

    let with = |f: fn(&mut PlaceOrder)| {
        let mut c = place_cmd();
        f(&mut c);
        given_order(&[]).when(OrderCommand::Place(Box::new(c)))
    };
    assert_eq!(invalid(with(|c| c.total_minor = 3999)), "total_minor");
    assert_eq!(invalid(with(|c| c.subtotal_minor = Some(1))), "subtotal_minor");
    assert_eq!(invalid(with(|c| c.tax_minor = -1)), "tax_minor");
    assert_eq!(invalid(with(|c| c.items = Some(vec![]))), "items");
    assert_eq!(invalid(with(|c| c.items = None)), "items");
    assert_eq!(invalid(with(|c| c.currency = Some("eur".into()))), "currency");
    assert_eq!(
        invalid(with(|c| {
            if let Some(a) = c.shipping_address.as_mut() {
                a.country = "Germany".into()
            }
        })),
        "shipping_address.country"
    );
    assert_eq!(
        invalid(with(|c| c.items.as_mut().expect("items")[1].quantity = 0)),
        "items[1].quantity"
    );
    assert_eq!(
        conflict(given_order(&pending()).when(place())),
        "the order already exists"
    );
    given_order(&[]).when(ship()).then_expect_error(OrderError::NotFound);
}

#[test]
fn payment_succeeded_confirms_the_order_in_the_same_decision() {
    let initiated = history(vec![place(), pay(PaymentStatus::Initiated)]);
    let s = given_order(&initiated);
    let events = s.when(pay(PaymentStatus::Succeeded)).events();
    assert_eq!(types(&events), ["PaymentSucceeded", "OrderConfirmed"]);
    let OrderEvent::OrderConfirmed {
        confirmation_number: number,
        estimated_delivery,
        total_minor,
        ..
    } = &events[1]
    else {
        panic!()
    };
    assert_eq!(number, &confirmation_number("o1"));
    assert_ne!(number, &confirmation_number("o2"));
    assert_eq!(
        *estimated_delivery,
        (decided_at(&initiated) + Duration::days(5)).date_naive()
    );
    assert_eq!(*total_minor, 4000);
    assert_eq!(status_after(&confirmed()), OrderStatus::Confirmed);
    // The amount and currency are the order's.
    let mut wrong = payment(PaymentStatus::Succeeded);
    wrong.amount_minor = 1;
    assert_eq!(invalid(s.when(OrderCommand::RecordPayment(wrong))), "amount_minor");
    let mut wrong = payment(PaymentStatus::Succeeded);
    wrong.transaction_id = None;
    assert_eq!(invalid(s.when(OrderCommand::RecordPayment(wrong))), "transaction_id");
}

#[test]
fn a_retryable_failure_schedules_a_retry_up_to_three_attempts() {
    let mut events = history(vec![place(), pay(PaymentStatus::Initiated)]);
    for attempt in 1..=2u32 {
        let s = given_order(&events);
        let decided = s.when(fail(true)).events();
        assert_eq!(types(&decided), ["PaymentFailed", "PaymentRetryScheduled"]);
        assert!(matches!(&decided[0], OrderEvent::PaymentFailed { attempt: a, retryable: true, .. } if *a == attempt));
        assert!(
            matches!(&decided[1], OrderEvent::PaymentRetryScheduled { attempt: next, retry_at, .. }
            if *next == attempt + 1 && *retry_at == decided_at(&events) + Duration::seconds(300))
        );
        events.extend(decided);
        let waiting = given_order(&events);
        assert_eq!(waiting.state().expect("an order").status, OrderStatus::PendingPayment);
        assert!(conflict(waiting.when(fail(true))).contains("scheduled to be retried"));
        let retried = waiting
            .when(OrderCommand::RetryPayment {
                payment_id: "p1".into(),
                attempt: attempt + 1,
            })
            .events();
        assert_eq!(types(&retried), ["PaymentInitiated"]);
        events.extend(retried);
    }
    // The third attempt fails: no more retries, the order's payment failed.
    let last = given_order(&events).when(fail(true)).events();
    assert_eq!(types(&last), ["PaymentFailed"]);
    assert!(matches!(&last[0], OrderEvent::PaymentFailed { attempt: 3, .. }));
    events.extend(last);
    assert_eq!(status_after(&events), OrderStatus::PaymentFailed);
}

#[test]
fn a_non_retryable_failure_fails_the_payment_and_a_new_payment_may_follow() {
    let s = given_order(&history(vec![place(), pay(PaymentStatus::Initiated)]));
    assert_eq!(types(&s.when(fail(false)).events()), ["PaymentFailed"]);
    let failed = given_order(&payment_failed());
    assert_eq!(failed.state().expect("an order").status, OrderStatus::PaymentFailed);
    assert_eq!(
        conflict(failed.when(fail(false))),
        "the order's payment already failed; initiate a new payment first"
    );
    let again = failed.when(pay(PaymentStatus::Initiated)).events();
    let mut events = payment_failed();
    events.extend(again);
    assert_eq!(status_after(&events), OrderStatus::PendingPayment);
    assert!(matches!(given_order(&events).state().and_then(|o| o.payment.as_ref()), Some(p) if p.attempt == 1));
    // A stale retry timer is refused.
    assert_eq!(
        conflict(failed.when(OrderCommand::RetryPayment {
            payment_id: "p1".into(),
            attempt: 2
        })),
        "no payment retry is scheduled"
    );
}

#[test]
fn a_result_of_a_payment_never_initiated_records_its_initiation_first() {
    let s = given_order(&pending());
    let paid = s.when(pay(PaymentStatus::Succeeded)).events();
    assert_eq!(types(&paid), ["PaymentInitiated", "PaymentSucceeded", "OrderConfirmed"]);
    let failed = s
        .when(OrderCommand::RecordPayment(RecordPayment {
            method: PaymentMethod::Paypal,
            retryable: Some(true),
            ..payment(PaymentStatus::Failed)
        }))
        .events();
    assert_eq!(
        types(&failed),
        ["PaymentInitiated", "PaymentFailed", "PaymentRetryScheduled"]
    );
    assert!(matches!(&failed[1], OrderEvent::PaymentFailed { attempt: 1, .. }));
    // The retry initiates it again with the reported method.
    let mut events = pending();
    events.extend(failed);
    let retried = given_order(&events)
        .when(OrderCommand::RetryPayment {
            payment_id: "p1".into(),
            attempt: 2,
        })
        .events();
    assert!(matches!(
        &retried[0],
        OrderEvent::PaymentInitiated {
            method: PaymentMethod::Paypal,
            ..
        }
    ));
}

#[test]
fn payments_are_refused_once_paid_cancelled_or_refunded() {
    for (given, reason) in [
        (confirmed(), "the order is confirmed: it is already paid"),
        (in_transit(), "the order is in-transit: it is already paid"),
        (completed(), "the order is completed: it is already paid"),
        (cancelled(), "the order is cancelled: it takes no payment"),
        (refunded(), "the order is refunded: it takes no payment"),
    ] {
        for status in [
            PaymentStatus::Initiated,
            PaymentStatus::Succeeded,
            PaymentStatus::Failed,
        ] {
            assert_eq!(conflict(given_order(&given).when(pay(status))), reason);
        }
    }
    let initiated = given_order(&history(vec![place(), pay(PaymentStatus::Initiated)]));
    assert!(conflict(initiated.when(pay(PaymentStatus::Initiated))).contains("already initiated"));
}

#[test]
fn shipping_needs_a_confirmed_order() {
    assert_eq!(
        types(&given_order(&confirmed()).when(ship()).events()),
        ["OrderShipped"]
    );
    for (given, reason) in [
        (pending(), "the order is not paid yet: it cannot be shipped"),
        (payment_failed(), "the order is not paid yet: it cannot be shipped"),
        (in_transit(), "the order was already shipped"),
        (completed(), "the order was already delivered"),
        (cancelled(), "the order is cancelled: it cannot be shipped"),
        (refunded(), "the order is refunded: it cannot be shipped"),
    ] {
        assert_eq!(conflict(given_order(&given).when(ship())), reason);
    }
}

#[test]
fn delivery_needs_a_shipped_order() {
    let done = given_order(&in_transit()).when(OrderCommand::Deliver).events();
    assert!(matches!(&done[0], OrderEvent::OrderDelivered { total_minor: 4000, items, .. } if items.len() == 2));
    assert_eq!(status_after(&completed()), OrderStatus::Completed);
    for (given, reason) in [
        (pending(), "the order is not paid yet: it cannot be delivered"),
        (payment_failed(), "the order is not paid yet: it cannot be delivered"),
        (confirmed(), "the order was not shipped yet: it cannot be delivered"),
        (completed(), "the order was already delivered"),
        (cancelled(), "the order is cancelled: it cannot be delivered"),
    ] {
        assert_eq!(conflict(given_order(&given).when(OrderCommand::Deliver)), reason);
    }
}

#[test]
fn cancelling_is_possible_until_shipped() {
    for given in [pending(), payment_failed(), confirmed()] {
        assert_eq!(types(&given_order(&given).when(cancel()).events()), ["OrderCancelled"]);
    }
    for (given, reason) in [
        (in_transit(), "the order was shipped: it can no longer be cancelled"),
        (completed(), "the order was delivered: it can no longer be cancelled"),
        (cancelled(), "the order is already cancelled"),
        (refunded(), "the order is refunded: it can no longer be cancelled"),
    ] {
        assert_eq!(conflict(given_order(&given).when(cancel())), reason);
    }
    // A scheduled retry ends with the cancellation.
    let mut events = history(vec![place(), pay(PaymentStatus::Initiated), fail(true)]);
    events.extend(given_order(&events).when(cancel()).events());
    assert_eq!(
        given_order(&events).state().and_then(|o| o.pending_retry.as_ref()),
        None
    );
}

#[test]
fn refunds_never_exceed_what_is_left() {
    let s = given_order(&completed());
    let partial = s.when(return_refund(RefundType::Partial, Some(1500))).events();
    assert_eq!(types(&partial), ["RefundRequested"]);
    let mut events = completed();
    events.extend(partial);
    let s = given_order(&events);
    assert_eq!(s.state().expect("an order").status, OrderStatus::Completed);
    let too_much = s.when(return_refund(RefundType::Partial, Some(2501)));
    assert_eq!(
        conflict(too_much),
        "only 2500 of the order total 4000 is left to refund"
    );
    let rest = s.when(return_refund(RefundType::Full, None)).events();
    assert_eq!(types(&rest), ["RefundRequested", "OrderRefunded"]);
    assert!(matches!(
        &rest[0],
        OrderEvent::RefundRequested { amount_minor: 2500, .. }
    ));
    assert_eq!(status_after(&refunded()), OrderStatus::Refunded);
    assert_eq!(
        invalid(s.when(return_refund(RefundType::Partial, None))),
        "amount_minor"
    );
    assert_eq!(
        invalid(s.when(return_refund(RefundType::Partial, Some(0)))),
        "amount_minor"
    );
    assert_eq!(
        invalid(s.when(return_refund(RefundType::Full, Some(1)))),
        "amount_minor"
    );
    for (given, reason) in [
        (pending(), "the order is not paid: there is nothing to refund"),
        (payment_failed(), "the order is not paid: there is nothing to refund"),
        (cancelled(), "the order is cancelled: it cannot be refunded"),
        (refunded(), "the order is already fully refunded"),
    ] {
        assert_eq!(
            conflict(given_order(&given).when(refund(RefundType::Full, None))),
            reason
        );
    }
    for given in [confirmed(), in_transit()] {
        assert!(given_order(&given)
            .when(refund(RefundType::Full, None))
            .inspect_result()
            .is_ok());
    }
}

// --- refunds after delivery, reported refunds, completion (decision 0071) ---

/// The first event of a decided command.
fn only_refund(events: &[OrderEvent]) -> (RefundOrigin, Option<String>) {
    match events.first() {
        Some(OrderEvent::RefundRequested {
            origin, return_reason, ..
        }) => (*origin, return_reason.clone()),
        other => panic!("expected a RefundRequested, got {other:?}"),
    }
}

#[test]
fn given_a_delivered_order_when_a_refund_without_a_return_reason_is_asked_then_refused_naming_the_field() {
    for request in [refund(RefundType::Full, None), refund(RefundType::Partial, Some(1000))] {
        match given_order(&completed()).when(request).error() {
            OrderError::Conflict {
                field: Some(field),
                message,
            } => {
                assert_eq!(field, "return.reason");
                assert!(message.contains("a refund after delivery is a return"), "{message}");
            }
            other => panic!("expected a conflict naming return.reason, got {other:?}"),
        }
    }
    // A blank reason is no reason.
    let blank = OrderCommand::Refund {
        refund_id: "r1".into(),
        request: RequestRefund {
            return_: Some(ReturnRequest { reason: "  ".into() }),
            ..refund_request(RefundType::Full, None)
        },
    };
    assert_eq!(invalid(given_order(&completed()).when(blank)), "return.reason");
}

#[test]
fn given_a_delivered_order_when_a_refund_with_a_return_reason_is_asked_then_it_is_a_return() {
    let events = given_order(&completed())
        .when(return_refund(RefundType::Partial, Some(500)))
        .events();
    assert_eq!(types(&events), ["RefundRequested"]);
    assert_eq!(
        only_refund(&events),
        (RefundOrigin::Return, Some("the jug leaks".to_string()))
    );
    let mut all = completed();
    all.extend(events);
    let o = given_order(&all).state().expect("order").clone();
    assert_eq!((o.status, o.refunded_minor), (OrderStatus::Completed, 500));
    assert_eq!(o.refunds[0].origin, RefundOrigin::Return);
    assert_eq!(o.refunds[0].return_reason.as_deref(), Some("the jug leaks"));
}

#[test]
fn given_an_undelivered_order_when_a_refund_is_asked_then_it_is_a_plain_request_and_a_return_is_refused() {
    for given in [confirmed(), in_transit()] {
        let events = given_order(&given).when(refund(RefundType::Full, None)).events();
        assert_eq!(types(&events), ["RefundRequested", "OrderRefunded"]);
        assert_eq!(only_refund(&events), (RefundOrigin::Request, None));
        assert_eq!(
            invalid(given_order(&given).when(return_refund(RefundType::Full, None))),
            "return"
        );
    }
}

#[test]
fn given_a_delivered_or_cancelled_paid_order_when_the_shop_reports_a_refund_then_it_is_recorded() {
    let events = given_order(&completed())
        .when(reported_refund("r-shop", RefundType::Partial, Some(1000)))
        .events();
    assert_eq!(only_refund(&events), (RefundOrigin::Shop, None));
    // The return a reported refund might carry is not asked for.
    let mut paid_then_cancelled = confirmed();
    paid_then_cancelled.extend(given_order(&paid_then_cancelled).when(cancel()).events());
    let events = given_order(&paid_then_cancelled)
        .when(reported_refund("r-shop", RefundType::Full, None))
        .events();
    assert_eq!(types(&events), ["RefundRequested", "OrderRefunded"]);
    paid_then_cancelled.extend(events);
    assert_eq!(
        status_after(&paid_then_cancelled),
        OrderStatus::Cancelled,
        "a cancelled order the shop refunds stays cancelled"
    );
    // Never paid: nothing to refund, reported or not.
    for given in [pending(), cancelled()] {
        assert!(given_order(&given)
            .when(reported_refund("r-shop", RefundType::Full, None))
            .inspect_result()
            .is_err());
    }
}

fn complete(refund_id: &str, transaction: &str) -> OrderCommand {
    OrderCommand::CompleteRefund {
        refund_id: refund_id.into(),
        completion: CompleteRefund {
            transaction_id: transaction.into(),
        },
    }
}

#[test]
fn given_a_refund_when_the_provider_completes_it_then_refund_completed_once_per_transaction() {
    let mut all = completed();
    all.extend(
        given_order(&all)
            .when(return_refund(RefundType::Partial, Some(1500)))
            .events(),
    );
    let s = given_order(&all);
    let done = s.when(complete("r1", "re_123")).events();
    assert_eq!(
        done,
        [OrderEvent::RefundCompleted {
            order_id: "o1".into(),
            refund_id: "r1".into(),
            amount_minor: 1500,
            currency: "EUR".into(),
            transaction_id: "re_123".into(),
            completed_at: decided_at(&all),
        }]
    );
    all.extend(done);
    let s = given_order(&all);
    let o = s.state().expect("order");
    assert_eq!(o.refunds[0].transaction_id.as_deref(), Some("re_123"));
    assert_eq!(o.refunded_minor, 1500, "completion changes no amount");
    // The same confirmation again: nothing new.
    s.when(complete("r1", " re_123 ")).then_expect_events(&[]);
    // Another transaction for the completed refund, or one for no refund: refused.
    assert!(matches!(
        s.when(complete("r1", "re_999")).error(),
        OrderError::Conflict { field: Some(f), .. } if f == "transaction_id"
    ));
    assert_eq!(invalid(s.when(complete("r9", "re_123"))), "refund_id");
    assert_eq!(invalid(s.when(complete("r1", ""))), "transaction_id");
}

#[test]
fn a_stored_v1_refund_requested_reads_with_the_origin_its_id_shows() {
    use crate::event::DomainEvent;
    let v1 = |refund_id: &str| {
        let mut e = crate::testing::raw_event(
            "order-o1",
            "RefundRequested",
            serde_json::json!({
                "order_id": "o1", "refund_id": refund_id, "amount_minor": 4000, "currency": "EUR",
                "reason": "customer-request", "refund_type": "full"
            }),
        );
        e.schema_version = 1;
        OrderEvent::from_envelope(&e).expect("a v1 RefundRequested reads")
    };
    // The API's refund ids are UUID v7; ingestion's derived ids UUID v8.
    let api = v1(&uuid::Uuid::now_v7().to_string());
    let shop = v1(&crate::ingest::derived_id("refund", "shop", "m-1"));
    for (event, origin) in [(api, RefundOrigin::Request), (shop, RefundOrigin::Shop)] {
        assert!(
            matches!(event, OrderEvent::RefundRequested { origin: o, return_reason: None, amount_minor: 4000, .. } if o == origin),
            "{event:?}"
        );
    }
    assert_eq!(OrderEvent::schema_version("RefundRequested"), 2);
}

#[tokio::test]
async fn an_order_with_a_stored_v1_refund_still_loads_and_completes() {
    use crate::ports::{AppendRequest, ExpectedVersion};
    let f = fixture();
    let mut stored =
        crate::event::envelopes("order-o1", Some("c1"), &completed(), &meta(), test_time()).expect("envelopes");
    let mut old = crate::testing::raw_event(
        "order-o1",
        "RefundRequested",
        serde_json::json!({
            "order_id": "o1", "refund_id": "r-old", "amount_minor": 1000, "currency": "EUR",
            "reason": "quality-issue", "refund_type": "partial"
        }),
    );
    old.customer_id = Some("c1".into());
    stored.push(old);
    f.store
        .append(AppendRequest {
            stream_id: "order-o1".into(),
            expected: ExpectedVersion::NoStream,
            events: stored,
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
    let o = f.orders.load("o1").await.expect("load").expect("order");
    assert_eq!((o.refunded_minor, o.refunds[0].origin), (1000, RefundOrigin::Request));
    run(&f, complete("r-old", "re_1")).await.expect("completed");
    let again = run(&f, complete("r-old", "re_1")).await.expect("idempotent");
    assert!(
        matches!(&again, Executed::Applied { events, .. } if events.is_empty()),
        "{again:?}"
    );
    let stream = f.store.read_stream("order-o1", 0, 100).await.expect("read");
    assert_eq!(stream.iter().filter(|e| e.event_type == "RefundCompleted").count(), 1);
}

#[test]
fn events_serialise_as_the_contract_says() {
    let events = history(vec![place(), pay(PaymentStatus::Initiated), fail(true)]);
    let parts: Vec<serde_json::Value> = events.iter().map(|e| serde_json::to_value(e).expect("json")).collect();
    assert_eq!(parts[0]["data"]["items"][0]["category"], "consumables");
    assert!(parts[0]["data"]["items"][1].get("category").is_none());
    assert_eq!(parts[0]["data"]["total_minor"], 4000);
    assert_eq!(parts[1]["data"]["method"], "credit-card");
    assert_eq!(parts[2]["data"]["retryable"], true);
    assert_eq!(parts[2]["data"]["attempt"], 1);
    assert_eq!(parts[3]["type"], "PaymentRetryScheduled");
    assert_eq!(parts[3]["data"]["attempt"], 2);
    let confirmed = confirmed();
    let v = serde_json::to_value(&confirmed[3]).expect("json");
    assert_eq!(v["type"], "OrderConfirmed");
    assert!(
        v["data"]["estimated_delivery"].as_str().is_some_and(|d| d.len() == 10),
        "{v}"
    );
}

// --- the service ---

struct Fixture {
    store: Arc<InMemoryEventStore>,
    scheduler: Arc<InMemoryScheduler>,
    clock: Arc<VirtualClock>,
    orders: OrderService,
    carts: CartService,
}

fn fixture() -> Fixture {
    let store = Arc::new(InMemoryEventStore::default());
    let scheduler = Arc::new(InMemoryScheduler::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    Fixture {
        orders: OrderService::new(store.clone(), clock.clone(), scheduler.clone()),
        carts: CartService::new(store.clone(), clock.clone(), scheduler.clone()),
        store,
        scheduler,
        clock,
    }
}

fn meta() -> CommandMeta {
    CommandMeta::new(Actor::api("test"))
}

fn respond(o: &Order, _: &[EventEnvelope]) -> (u16, serde_json::Value) {
    (200, serde_json::json!({ "status": o.status }))
}

async fn run(f: &Fixture, command: OrderCommand) -> Result<Executed<Order>, OrderCommandError> {
    f.orders.execute("o1", &command, &meta(), None, &respond).await
}

#[tokio::test]
async fn an_order_from_a_cart_takes_its_items_and_orders_it_once() {
    let f = fixture();
    let create = CartCommand::Create(CreateCart {
        customer_id: "c1".into(),
        currency: "EUR".into(),
    });
    let carts_respond = |_: &crate::commerce::Cart, _: &[EventEnvelope]| (200, serde_json::Value::Null);
    f.carts
        .execute("k1", &create, &meta(), None, &carts_respond)
        .await
        .expect("cart");
    let add = CartCommand::AddItem(crate::commerce::AddItem {
        product_id: "sku-1".into(),
        name: "Beans".into(),
        quantity: 2,
        unit_price_minor: 1250,
    });
    f.carts
        .execute("k1", &add, &meta(), None, &carts_respond)
        .await
        .expect("item");

    let from_cart = || PlaceOrder {
        cart_id: Some("k1".into()),
        items: None,
        subtotal_minor: None,
        tax_minor: 0,
        shipping_minor: 500,
        total_minor: 3000,
        currency: None,
        ..place_cmd()
    };
    let resolved = f.orders.resolve_cart(from_cart()).await.expect("resolved");
    assert_eq!(resolved.currency.as_deref(), Some("EUR"));
    assert_eq!(resolved.items.as_ref().map(Vec::len), Some(1));
    run(&f, OrderCommand::Place(Box::new(resolved.clone())))
        .await
        .expect("placed");
    let again = f
        .orders
        .execute("o2", &OrderCommand::Place(Box::new(resolved)), &meta(), None, &respond)
        .await;
    assert!(
        matches!(&again, Err(OrderCommandError::Command(AggregateError::Rejected(OrderError::Conflict { field: Some(f), .. }))) if f == "cart_id"),
        "{again:?}"
    );
    assert!(
        f.store.read_stream("order-o2", 0, 10).await.expect("read").is_empty(),
        "nothing written"
    );

    let mut other = from_cart();
    other.customer_id = "c2".into();
    assert!(f.orders.resolve_cart(other).await.is_err());
    let mut both = from_cart();
    both.items = place_cmd().items;
    assert!(f.orders.resolve_cart(both).await.is_err());
}

#[tokio::test]
async fn the_retry_timer_follows_the_order() {
    let f = fixture();
    run(&f, place()).await.expect("placed");
    run(&f, pay(PaymentStatus::Initiated)).await.expect("initiated");
    run(&f, fail(true)).await.expect("failed");
    let name = super::payment_retry_timer_name("o1");
    let timer = f.scheduler.get(&name).await.expect("get").expect("a retry timer");
    assert_eq!(timer.kind, TimerKind::PaymentRetry);
    assert_eq!(timer.due_at, f.clock.now() + Duration::seconds(300));
    assert_eq!(timer.data["attempt"], 2);

    f.clock.advance(Duration::seconds(300));
    let outcome = f.orders.on_payment_retry_timer(&timer).await.expect("fired");
    assert!(matches!(&outcome, RetryOutcome::Retried { events } if events[0].event_type == "PaymentInitiated"));
    assert_eq!(f.scheduler.get(&name).await.expect("get"), None, "the timer is gone");
    // Fired again (redelivery): the order no longer waits for it.
    assert_eq!(
        f.orders.on_payment_retry_timer(&timer).await.expect("fired"),
        RetryOutcome::Superseded
    );
    // A success ends the retries.
    run(&f, fail(true)).await.expect("attempt 2 failed");
    assert!(f.scheduler.get(&name).await.expect("get").is_some());
    run(&f, pay(PaymentStatus::Succeeded)).await.expect("paid");
    assert_eq!(f.scheduler.get(&name).await.expect("get"), None);
    let order = f.orders.load("o1").await.expect("load").expect("order");
    assert_eq!(order.status, OrderStatus::Confirmed);
}

/// The order of [`place_cmd`] with its milk jug gone, a second bag of beans,
/// a 5.00 discount and the same tax and shipping: 5000 - 500 + 570 + 430.
fn amend_cmd() -> AmendOrder {
    let mut items = place_cmd().items.expect("items");
    items[0].quantity = 4;
    items.truncate(1);
    AmendOrder {
        items,
        subtotal_minor: Some(5000),
        amounts: Amounts {
            discount_minor: 500,
            tax_minor: 570,
            shipping_minor: 430,
            adjustment_minor: 0,
        },
        total_minor: 5500,
        currency: "EUR".into(),
    }
}

fn amend() -> OrderCommand {
    OrderCommand::Amend(amend_cmd())
}

#[test]
fn given_a_paid_order_when_amended_then_its_lines_amounts_and_refundable_follow() {
    let paid = given_order(&confirmed());
    let events = paid.when(amend()).events();
    let [OrderEvent::OrderAmended {
        total_minor,
        previous_total_minor,
        paid,
        discount_minor,
        items,
        ..
    }] = events.as_slice()
    else {
        panic!("expected one OrderAmended: {events:?}")
    };
    assert_eq!(
        (*total_minor, *previous_total_minor, *paid, *discount_minor),
        (5500, 4000, true, 500)
    );
    assert_eq!(items.len(), 1);
    let mut all = confirmed();
    all.extend(events);
    let after = given_order(&all);
    let o = after.state().expect("order");
    assert_eq!(
        (o.status, o.total_minor, o.subtotal_minor),
        (OrderStatus::Confirmed, 5500, 5000)
    );
    assert_eq!(o.refundable_minor(), 5500, "later refunds may take the new total");
    assert!(after
        .when(refund(RefundType::Partial, Some(5000)))
        .inspect_result()
        .is_ok());
    // The same lines and amounts again: nothing happens.
    after.when(amend()).then_expect_events(&[]);
}

#[test]
fn given_an_unpaid_order_when_amended_then_its_payment_is_of_the_new_total() {
    let mut all = pending();
    let events = given_order(&all).when(amend()).events();
    assert!(matches!(
        events.as_slice(),
        [OrderEvent::OrderAmended { paid: false, .. }]
    ));
    all.extend(events);
    let old = given_order(&all).when(pay(PaymentStatus::Succeeded)).error();
    assert!(matches!(old, OrderError::Invalid { ref field, .. } if field == "amount_minor"));
    let new = given_order(&all).when(OrderCommand::RecordPayment(RecordPayment {
        amount_minor: 5500,
        ..payment(PaymentStatus::Succeeded)
    }));
    assert_eq!(
        types(&new.events()),
        ["PaymentInitiated", "PaymentSucceeded", "OrderConfirmed"]
    );
}

#[test]
fn given_a_shipped_delivered_cancelled_or_refunded_order_when_amended_then_refused_saying_why() {
    for (given, why) in [
        (in_transit(), "the order was shipped: it can no longer be amended"),
        (completed(), "the order was delivered: it can no longer be amended"),
        (cancelled(), "the order is cancelled: it cannot be amended"),
        (refunded(), "the order is refunded: it cannot be amended"),
    ] {
        assert_eq!(conflict(given_order(&given).when(amend())), why);
    }
    // A payment of the old total awaiting its result.
    let initiated = history(vec![place(), pay(PaymentStatus::Initiated)]);
    assert!(conflict(given_order(&initiated).when(amend())).contains("awaits its result"));
}

#[test]
fn given_an_order_when_amended_with_amounts_that_do_not_add_up_then_refused_naming_the_field() {
    let paid = given_order(&confirmed());
    let invalid = |cmd: AmendOrder| match paid.when(OrderCommand::Amend(cmd)).error() {
        OrderError::Invalid { field, .. } => field,
        other => panic!("expected invalid, got {other:?}"),
    };
    assert_eq!(
        invalid(AmendOrder {
            total_minor: 5600,
            ..amend_cmd()
        }),
        "total_minor"
    );
    assert_eq!(
        invalid(AmendOrder {
            subtotal_minor: Some(1),
            ..amend_cmd()
        }),
        "subtotal_minor"
    );
    assert_eq!(
        invalid(AmendOrder {
            currency: "USD".into(),
            ..amend_cmd()
        }),
        "currency"
    );
    assert_eq!(
        invalid(AmendOrder {
            items: Vec::new(),
            ..amend_cmd()
        }),
        "items"
    );
    // A partly refunded order's total must stay above what was refunded.
    let mut partly = confirmed();
    partly.extend(paid.when(refund(RefundType::Partial, Some(3000))).events());
    let lower = AmendOrder {
        items: vec![OrderItem {
            quantity: 1,
            ..amend_cmd().items[0].clone()
        }],
        subtotal_minor: None,
        amounts: Amounts::default(),
        total_minor: 1250,
        currency: "EUR".into(),
    };
    assert!(conflict(given_order(&partly).when(OrderCommand::Amend(lower))).contains("refunded already"));
}
