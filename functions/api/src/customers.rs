//! Customer routes: translate requests into customer commands and answers.

use crate::body::parse_json;
use crate::call::CommandCall;
use crate::problem::Problem;
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm_core::consent::{Channel, Purpose};
use crm_core::customer::{
    erase_customer, ChangeEmail, Customer, CustomerCommand, DeactivateCustomer, ErasureError, GrantConsent,
    RegisterCustomer, RegisterPushDevice, RevokeConsent, UpdateProfile, VerifyEmail,
};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::preferences::Preferences;
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// The customer as the API shows it (never the verification token).
pub fn customer_view(c: &Customer) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.remove("pending_verification_token");
    }
    v
}

/// The id in a path (a UUID, canonical form): anything else names no `what` (404).
pub(crate) fn path_id(raw: &str, what: &str) -> Result<String, Problem> {
    Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| Problem::not_found(format!("{what} not found")))
}

pub(crate) fn customer_id(raw: &str) -> Result<String, Problem> {
    path_id(raw, "customer")
}

/// The `customer_id` of a request body, which must name a customer the
/// write side knows (422 naming the field otherwise).
pub(crate) async fn existing_customer(state: &AppState, raw: &str) -> Result<String, Problem> {
    let customer = Uuid::parse_str(raw.trim())
        .map_err(|_| Problem::invalid("customer_id", "is not a customer id"))?
        .to_string();
    // An erased customer is gone for everything new (carts, orders).
    if state.customers.load(&customer).await?.is_none_or(|c| c.is_erased()) {
        return Err(Problem::invalid("customer_id", "no such customer"));
    }
    Ok(customer)
}

/// The answer to an executed command (see [`answer`]).
pub(crate) fn respond<S>(executed: crm_core::aggregate::Executed<S>, collection: &str) -> Response {
    match executed {
        crm_core::aggregate::Executed::Applied { status, body, .. } => answer(status, &body, false, collection),
        crm_core::aggregate::Executed::Replayed { status, body } => answer(status, &body, true, collection),
    }
}

/// Runs a command and answers with `status` and the customer's view (or,
/// for a replayed request, the first answer).
async fn run(
    state: &AppState,
    id: &str,
    command: CustomerCommand,
    call: CommandCall,
    status: StatusCode,
) -> Result<Response, Problem> {
    let meta = CommandMeta::new(Actor::api(&call.principal.0));
    let respond = move |c: &Customer, _events: &[EventEnvelope]| (status.as_u16(), customer_view(c));
    let executed = state
        .customers
        .execute(id, &command, &meta, call.idempotency.as_ref(), &respond)
        .await?;
    Ok(self::respond(executed, "/customers"))
}

/// A command's answer: `status` and `body`, with the new resource's
/// `Location` (under `collection`) on 201 and `Idempotent-Replayed` when it
/// repeats the answer to an earlier request.
pub(crate) fn answer(status: u16, body: &Value, replayed: bool, collection: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::CREATED {
        if let Some(location) = body
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| HeaderValue::from_str(&format!("{collection}/{id}")).ok())
        {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub async fn register(State(state): State<AppState>, call: CommandCall) -> Result<Response, Problem> {
    let command: RegisterCustomer = parse_json(&call.body)?;
    let id = Uuid::now_v7().to_string();
    run(
        &state,
        &id,
        CustomerCommand::Register(command),
        call,
        StatusCode::CREATED,
    )
    .await
}

/// A command route: `$payload` read from the body (by `$parse`, else
/// [`parse_json`]), turned into a command and run on the customer of the path.
macro_rules! command_route {
    ($name:ident, $payload:ty = $parse:ident, $status:expr, |$p:ident| $command:expr) => {
        pub async fn $name(
            State(state): State<AppState>,
            Path(id): Path<String>,
            call: CommandCall,
        ) -> Result<Response, Problem> {
            let id = customer_id(&id)?;
            let $p: $payload = $parse(&call.body)?;
            run(&state, &id, $command, call, $status).await
        }
    };
    ($name:ident, $payload:ty, $status:expr, |$p:ident| $command:expr) => {
        command_route!($name, $payload = parse_json, $status, |$p| $command);
    };
}

command_route!(update_profile, UpdateProfile, StatusCode::OK, |p| {
    CustomerCommand::UpdateProfile(p)
});
command_route!(change_email, ChangeEmail, StatusCode::OK, |p| {
    CustomerCommand::ChangeEmail(p)
});
command_route!(verify_email, VerifyEmail, StatusCode::OK, |p| {
    CustomerCommand::VerifyEmail(p)
});
command_route!(update_preferences, Preferences, StatusCode::OK, |p| {
    CustomerCommand::UpdatePreferences(p)
});
command_route!(grant_consent, GrantConsent, StatusCode::CREATED, |p| {
    CustomerCommand::GrantConsent(p)
});
command_route!(register_push_device, RegisterPushDevice, StatusCode::OK, |p| {
    CustomerCommand::RegisterPushDevice(p)
});
command_route!(deactivate, DeactivateCustomer, StatusCode::OK, |p| {
    CustomerCommand::Deactivate(p)
});

/// An empty JSON object, for commands without a payload (an empty body is fine too).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoPayload {}

/// Reads a [`NoPayload`]: `{}` or an empty body.
pub(crate) fn no_payload(body: &[u8]) -> Result<NoPayload, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(NoPayload {});
    }
    parse_json(body)
}

command_route!(reactivate, NoPayload = no_payload, StatusCode::OK, |_p| {
    CustomerCommand::Reactivate
});

pub async fn revoke_consent(
    State(state): State<AppState>,
    Path((id, purpose, channel)): Path<(String, String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    call: CommandCall,
) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    let purpose = Purpose::parse(&purpose)
        .ok_or_else(|| Problem::invalid("purpose", "must be one of marketing, analytics, essential"))?;
    let channel =
        Channel::parse(&channel).ok_or_else(|| Problem::invalid("channel", "must be one of email, sms, push"))?;
    let Query(query) = query.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = query.keys().find(|k| k.as_str() != "reason") {
        return Err(Problem::invalid(unknown.clone(), "unknown query parameter"));
    }
    let reason = query
        .get("reason")
        .cloned()
        .unwrap_or_else(|| "customer-request".into());
    let command = CustomerCommand::RevokeConsent(RevokeConsent {
        purpose,
        channel,
        reason,
        method: None,
    });
    run(&state, &id, command, call, StatusCode::OK).await
}

/// `DELETE /customers/{id}` (GDPR Art. 17, decisions 0018 and 0019):
/// records the request (giving back the email's reservation, with the
/// hashed identifiers for the proof ledger), deletes the customer's data
/// key, which makes every stored copy of their personal data read as
/// `[erased]`, then records the erasure ([`erase_customer`]). Idempotent: a
/// repeat, or one after an interrupted erasure, finishes it and answers 202
/// again. No `Idempotency-Key` receipt is kept: it would be stored under a
/// new key.
pub async fn erase(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: CommandCall,
) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    no_payload(&call.body)?;
    let (Some(keys), Some(hasher)) = (state.keys.clone(), state.identifiers.as_ref()) else {
        tracing::error!("erasure asked of an API without a key store or an identifier secret");
        return Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "erasure is not available",
        ));
    };
    let meta = CommandMeta::new(Actor::api(&call.principal.0));
    match erase_customer(&state.customers, keys.as_ref(), hasher, &id, &meta).await {
        Ok(()) => {}
        Err(ErasureError::Command(e)) => return Err(e.into()),
        Err(ErasureError::Keys(e)) => {
            tracing::error!(error = %e, "could not delete a data key");
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "the erasure was recorded but not finished; repeat the request",
            ));
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "id": id, "status": "erased" })),
    )
        .into_response())
}

/// Default and largest page size of `GET /customers/{id}/events`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// The `limit` of a paged read: 50 when absent, 1 to 500 (422 otherwise).
pub(crate) fn page_limit(query: &HashMap<String, String>) -> Result<usize, Problem> {
    match number(query, "limit")? {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE as u64).contains(&n) => Ok(n as usize),
        Some(_) => Err(Problem::invalid("limit", format!("must be between 1 and {MAX_PAGE}"))),
    }
}

pub(crate) fn number(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, Problem> {
    query
        .get(name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| Problem::invalid(name, "must be a non-negative integer"))
        })
        .transpose()
}

pub async fn list_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    let Query(query) = query.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = query.keys().find(|k| !matches!(k.as_str(), "after" | "limit")) {
        return Err(Problem::invalid(unknown.clone(), "unknown query parameter"));
    }
    let after = number(&query, "after")?.unwrap_or(0);
    let limit = page_limit(&query)?;
    let stream = crm_core::customer::stream_id(&id);
    let store = state.customers.store();
    // One more than asked tells whether there is a next page.
    let mut events = store.read_stream(&stream, after, limit + 1).await?;
    if events.is_empty() && after == 0 {
        return Err(Problem::not_found("customer not found"));
    }
    let more = events.len() > limit;
    events.truncate(limit);
    let next_after = if more { events.last().map(|e| e.version) } else { None };
    Ok(axum::Json(json!({ "items": events, "next_after": next_after })).into_response())
}
