//! Order routes: translate requests into order commands and answers.

use crate::http::{answer, existing_customer, no_payload, parse_json, path_id, CommandCall, Principal, Problem};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm_core::aggregate::AggregateError;
use crm_core::commerce::{
    CancelOrder, CompleteRefund, Order, OrderCommand, OrderCommandError, OrderError, PlaceOrder, RecordPayment,
    RequestRefund, ShipOrder, SubmitReview,
};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::idempotency::IdempotencyKey;
use serde_json::Value;
use uuid::Uuid;

/// The order as the API shows it.
pub fn order_view(o: &Order) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("refundable_minor".into(), o.refundable_minor().into());
    }
    v
}

pub(crate) fn order_id(raw: &str) -> Result<String, Problem> {
    path_id(raw, "order")
}

/// Runs a command and answers with `status` and the order's view (or, for a
/// replayed request, the first answer).
async fn run(
    state: &AppState,
    id: &str,
    command: OrderCommand,
    principal: &Principal,
    idempotency: Option<IdempotencyKey>,
    status: StatusCode,
) -> Result<Response, Problem> {
    let meta = CommandMeta::new(Actor::api(&principal.0));
    let respond = move |o: &Order, _events: &[EventEnvelope]| (status.as_u16(), order_view(o));
    let executed = state
        .orders
        .execute(id, &command, &meta, idempotency.as_ref(), &respond)
        .await?;
    Ok(crate::http::executed_answer(executed, "/orders"))
}

pub async fn place(State(state): State<AppState>, call: CommandCall) -> Result<Response, Problem> {
    let mut command: PlaceOrder = parse_json(&call.body)?;
    let key = call.idempotency;
    // A repeated request is answered from its receipt before anything is looked up again.
    if let Some(key) = &key {
        if let Some(receipt) = state.events.receipt(&key.receipt_key).await? {
            if receipt.request_hash != key.request_hash {
                return Err(Problem::idempotency_key_reused());
            }
            return Ok(answer(receipt.status, &receipt.body, true, "/orders"));
        }
    }
    // The customer must exist, as the write side knows it.
    command.customer_id = existing_customer(&state, &command.customer_id).await?;
    if let Some(cart) = &command.cart_id {
        let cart = Uuid::parse_str(cart.trim()).map_err(|_| Problem::invalid("cart_id", "is not a cart id"))?;
        command.cart_id = Some(cart.to_string());
    }
    let command = state.orders.resolve_cart(command).await?;
    // A discount code takes its percent off the subtotal (decision 0074).
    let command = state.orders.resolve_discount(command).await?;
    let id = Uuid::now_v7().to_string();
    run(
        &state,
        &id,
        OrderCommand::Place(Box::new(command)),
        &call.principal,
        key,
        StatusCode::CREATED,
    )
    .await
}

/// An order command route: `$payload` read from the body, turned into a
/// command and run on the order of the path.
macro_rules! order_route {
    ($name:ident, $payload:ty, |$p:ident| $command:expr) => {
        pub async fn $name(
            State(state): State<AppState>,
            Path(id): Path<String>,
            call: CommandCall,
        ) -> Result<Response, Problem> {
            let id = order_id(&id)?;
            let $p: $payload = parse_json(&call.body)?;
            run(
                &state,
                &id,
                $command,
                &call.principal,
                call.idempotency,
                StatusCode::OK,
            )
            .await
        }
    };
}

order_route!(record_payment, RecordPayment, |p| OrderCommand::RecordPayment(p));
order_route!(ship, ShipOrder, |p| OrderCommand::Ship(p));
order_route!(cancel, CancelOrder, |p| OrderCommand::Cancel(p));
// The customer's review of a product of the delivered order (decision 0073).
order_route!(submit_review, SubmitReview, |p| OrderCommand::SubmitReview(p));
order_route!(refund, RequestRefund, |p| OrderCommand::Refund {
    refund_id: Uuid::now_v7().to_string(),
    request: p,
});

/// `POST /orders/{id}/refunds/{refund_id}/complete`: the payment provider
/// confirms the refund with its transaction id (decision 0071); the same
/// transaction again changes nothing.
pub async fn complete_refund(
    State(state): State<AppState>,
    Path((id, refund_id)): Path<(String, String)>,
    call: CommandCall,
) -> Result<Response, Problem> {
    let id = order_id(&id)?;
    let refund_id = path_id(&refund_id, "refund")?;
    let completion: CompleteRefund = parse_json(&call.body)?;
    let command = OrderCommand::CompleteRefund { refund_id, completion };
    run(&state, &id, command, &call.principal, call.idempotency, StatusCode::OK).await
}

pub async fn deliver(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: CommandCall,
) -> Result<Response, Problem> {
    let id = order_id(&id)?;
    no_payload(&call.body)?;
    run(
        &state,
        &id,
        OrderCommand::Deliver,
        &call.principal,
        call.idempotency,
        StatusCode::OK,
    )
    .await
}

pub async fn get_order(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = order_id(&id)?;
    match state.orders.load(&id).await? {
        Some(order) => Ok(axum::Json(order_view(&order)).into_response()),
        None => Err(Problem::not_found("order not found")),
    }
}

impl From<OrderCommandError> for Problem {
    fn from(e: OrderCommandError) -> Self {
        match e {
            OrderCommandError::Command(e) => match e {
                // The refund a path names and the order does not hold.
                AggregateError::Rejected(OrderError::Invalid { field, message }) if field == "refund_id" => {
                    Problem::not_found(message).with_field("refund_id")
                }
                AggregateError::Rejected(OrderError::Invalid { field, message }) => Problem::invalid(field, message),
                AggregateError::Rejected(OrderError::NotFound) => Problem::not_found("order not found"),
                AggregateError::Rejected(OrderError::Conflict { field, message }) => Problem::conflict(field, message),
                AggregateError::IdempotencyKeyReused => Problem::idempotency_key_reused(),
                AggregateError::Contended { attempts } => Problem::contended("order", attempts),
                AggregateError::ReservationTaken { key } => {
                    tracing::error!(%key, "an order held an unexpected reservation");
                    Problem::conflict(None, "the order conflicts with another one")
                }
                AggregateError::TooLarge(detail) => Problem::command_too_large(detail),
                AggregateError::Store(e) => e.into(),
                AggregateError::Codec(e) => Problem::unreadable_event(&e),
            },
            OrderCommandError::Timer(e) => {
                tracing::warn!(error = %e, "payment retry timer not set");
                let mut p = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "the order's payment retry timer could not be set; retry the request (with the same Idempotency-Key)",
                );
                p.headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
                p
            }
        }
    }
}
