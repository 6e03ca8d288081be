//! Cart routes: translate requests into cart commands and answers.

use crate::http::{existing_customer, no_payload, parse_json, path_id, CommandCall, Principal, Problem};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm_core::commerce::{
    cart::valid_product_id, AddItem, Cart, CartCommand, CartCommandError, CartError, CreateCart, RemoveItem,
};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::idempotency::IdempotencyKey;
use serde_json::{json, Value};
use uuid::Uuid;

/// The cart as the API shows it.
pub fn cart_view(c: &Cart) -> Value {
    json!({
        "id": c.id,
        "customer_id": c.customer_id,
        "currency": c.currency,
        "status": c.status,
        "items": c.items,
        "total_value_minor": c.total_value_minor(),
        "version": c.version,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    })
}

fn cart_id(raw: &str) -> Result<String, Problem> {
    path_id(raw, "cart")
}

/// Runs a command and answers with `status` and the cart's view (or, for a
/// replayed request, the first answer).
async fn run(
    state: &AppState,
    id: &str,
    command: CartCommand,
    principal: &Principal,
    idempotency: Option<IdempotencyKey>,
    status: StatusCode,
) -> Result<Response, Problem> {
    let meta = CommandMeta::new(Actor::api(&principal.0));
    let respond = move |c: &Cart, _events: &[EventEnvelope]| (status.as_u16(), cart_view(c));
    let executed = state
        .carts
        .execute(id, &command, &meta, idempotency.as_ref(), &respond)
        .await?;
    Ok(crate::http::executed_answer(executed, "/carts"))
}

pub async fn create(State(state): State<AppState>, call: CommandCall) -> Result<Response, Problem> {
    let mut command: CreateCart = parse_json(&call.body)?;
    // The customer must exist, as the write side knows it.
    command.customer_id = existing_customer(&state, &command.customer_id).await?;
    let id = Uuid::now_v7().to_string();
    run(
        &state,
        &id,
        CartCommand::Create(command),
        &call.principal,
        call.idempotency,
        StatusCode::CREATED,
    )
    .await
}

pub async fn add_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: CommandCall,
) -> Result<Response, Problem> {
    let id = cart_id(&id)?;
    let command: AddItem = parse_json(&call.body)?;
    run(
        &state,
        &id,
        CartCommand::AddItem(command),
        &call.principal,
        call.idempotency,
        StatusCode::OK,
    )
    .await
}

pub async fn remove_item(
    State(state): State<AppState>,
    Path((id, product)): Path<(String, String)>,
    call: CommandCall,
) -> Result<Response, Problem> {
    let id = cart_id(&id)?;
    if !valid_product_id(&product) {
        return Err(Problem::not_found(format!("product {product} is not in the cart")).with_field("product_id"));
    }
    let command = CartCommand::RemoveItem(RemoveItem { product_id: product });
    run(&state, &id, command, &call.principal, call.idempotency, StatusCode::OK).await
}

pub async fn checkout(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: CommandCall,
) -> Result<Response, Problem> {
    let id = cart_id(&id)?;
    no_payload(&call.body)?;
    run(
        &state,
        &id,
        CartCommand::StartCheckout,
        &call.principal,
        call.idempotency,
        StatusCode::OK,
    )
    .await
}

pub async fn get_cart(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = cart_id(&id)?;
    match state.carts.load(&id).await? {
        Some(cart) => Ok(axum::Json(cart_view(&cart)).into_response()),
        None => Err(Problem::not_found("cart not found")),
    }
}

impl From<CartCommandError> for Problem {
    fn from(e: CartCommandError) -> Self {
        match e {
            CartCommandError::Rejected(CartError::Invalid { field, message }) => Problem::invalid(field, message),
            CartCommandError::Rejected(CartError::NotFound) => Problem::not_found("cart not found"),
            CartCommandError::Rejected(CartError::ItemNotFound(product)) => {
                Problem::not_found(format!("product {product} is not in the cart")).with_field("product_id")
            }
            CartCommandError::Rejected(CartError::Conflict { field, message }) => Problem::conflict(field, message),
            CartCommandError::IdempotencyKeyReused => Problem::idempotency_key_reused(),
            CartCommandError::Contended { attempts } => Problem::contended("cart", attempts),
            CartCommandError::TooLarge(detail) => Problem::command_too_large(detail),
            CartCommandError::Store(e) => e.into(),
            CartCommandError::Codec(e) => Problem::unreadable_event(&e),
            CartCommandError::Timer(e) => {
                tracing::warn!(error = %e, "cart inactivity timer not set");
                let mut p = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "the cart's inactivity timer could not be set; retry the request (with the same Idempotency-Key)",
                );
                p.headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
                p
            }
        }
    }
}
