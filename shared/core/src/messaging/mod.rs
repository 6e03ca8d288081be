//! Messaging: what happens to a `MessageRequested` (ARCHITECTURE.md §8).
//!
//! - [`decision`]: the pure pipeline (active → consent → suppression →
//!   preferences → caps → quiet hours → send), one outcome per request;
//! - [`events`]: the message stream `message-<message id>`;
//! - [`delivery`]: the channel service: claim, send, record the outcome;
//!   unknown outcomes settled by SES feedback or a settle check (decision
//!   0032);
//! - [`feedback`]: SES send, reject, delivery, bounce, complaint, open and
//!   click events (EventBridge) read back into message-stream events;
//! - [`provider`]: the ports to SES, SNS (SMS, push) and the local sink, and
//!   their errors: proven unsent, or outcome unknown;
//! - [`mime`]: the full rendered email as one RFC 5322 message;
//! - [`render`]: Liquid templates (HTML-escaped), MJML, text part;
//! - [`templates`]: templates as data, with versions (decision 0077): the
//!   stored versions, and the source the channel renders from;
//! - [`unsubscribe`]: signed tokens for one-click unsubscribe and the
//!   preference centre.

pub mod choice;
pub mod decision;
pub mod delivery;
pub mod events;
pub mod feedback;
pub mod mime;
pub mod past_versions;
pub mod provider;
pub mod render;
pub mod templates;
pub mod unsubscribe;
