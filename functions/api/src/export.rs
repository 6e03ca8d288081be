//! `GET /customers/{id}/export` (GDPR Art. 20, decision 0020): everything
//! stored about a customer, streamed as it is read
//! ([`crm_core::assembly::export::export_customer`]).

use crate::http::{customer_id, Problem};
use crate::AppState;
use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use crm_core::assembly::export::{export_customer, ExportError, ExportSink};
use tokio::sync::mpsc;

/// Chunks in flight between the export task and the HTTP body: the export
/// waits (reads nothing more) while the client is slower.
const IN_FLIGHT: usize = 4;

type Chunk = Result<String, std::io::Error>;

/// Hands each chunk to the response body; fails once the client is gone.
struct BodySink(mpsc::Sender<Chunk>);

#[async_trait]
impl ExportSink for BodySink {
    async fn write(&mut self, chunk: String) -> Result<(), ExportError> {
        self.0.send(Ok(chunk)).await.map_err(|_| ExportError::Closed)
    }
}

/// `GET /customers/{id}/export`: 404 (problem) for a customer the write side
/// does not know; otherwise 200 and the JSON document, written while it is
/// read. An erased customer's export holds what remains: the id, status
/// `erased`, and their events with `[erased]` personal fields. A failure
/// after the first chunk aborts the body (the client sees a truncated
/// transfer, never a complete-looking document).
pub async fn export(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    if state.customers.load(&id).await?.is_none() {
        return Err(Problem::not_found("customer not found"));
    }
    let (tx, rx) = mpsc::channel::<Chunk>(IN_FLIGHT);
    let (customers, docs) = (state.customers.clone(), state.read_models.clone());
    let customer = id.clone();
    tokio::spawn(async move {
        let mut sink = BodySink(tx.clone());
        match export_customer(&customers, docs.as_ref(), &customer, &mut sink).await {
            Ok(summary) => tracing::info!(
                customer_id = %customer,
                streams = summary.streams,
                events = summary.events,
                "customer exported"
            ),
            Err(ExportError::Closed) => tracing::warn!(customer_id = %customer, "export abandoned by the client"),
            Err(e) => {
                tracing::error!(customer_id = %customer, error = %e, "export failed midway");
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
            }
        }
    });
    let chunks = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"customer-{id}.json\"")) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
