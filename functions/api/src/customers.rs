//! Customer routes: translate requests into customer commands and answers.

use crate::http::{
    customer_id, executed_answer, no_payload, number, page_limit, parse_json, CommandCall, NoPayload, Problem,
};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
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
    Ok(executed_answer(executed, "/customers"))
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

command_route!(reactivate, NoPayload = no_payload, StatusCode::OK, |_p| {
    CustomerCommand::Reactivate
});

// Decision 0085: 202, the message goes out through the email-verification journey.
command_route!(
    resend_verification,
    NoPayload = no_payload,
    StatusCode::ACCEPTED,
    |_p| CustomerCommand::ResendVerification
);

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
