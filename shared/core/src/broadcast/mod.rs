//! Broadcasts (issue 20 item 2, decision 0084): one message to every member
//! of one or more segments, minus exclusions, now, at a UTC time, or at a
//! local time in each recipient's time zone.
//!
//! - [`model`]: the `Broadcast` aggregate on `broadcast-<id>` (scheduled,
//!   started, its audience snapshotted page by page, its pages sent, paused,
//!   resumed, cancelled, completed), and the audience pages on their own
//!   streams `broadcast-<id>-audience-<n>`;
//! - [`fanout`]: the service: scheduling and the controls (API), and the
//!   step the campaign function runs, one bounded page at a time: a
//!   snapshot page, or one page of `MessageRequested` (on
//!   `broadcast-<id>-send-<bucket>-<page>`, written once) that the channel
//!   pipeline delivers like a journey's;
//! - [`hosting`]: the campaign function's handler, journeys and broadcasts;
//! - [`explain`]: why a broadcast's message was sent.
//! - [`stats`]: the broadcast's message outcomes (delivered, opened,
//!   clicked, bounced, complained) by its message ids.

pub mod explain;
pub mod fanout;
pub mod hosting;
pub mod model;
pub mod stats;

pub use fanout::{BroadcastError, BroadcastService, BroadcastView, StepOutcome, AUDIENCE_PAGE, SCAN_PAGES};
pub use model::{
    audience_stream, message_id, send_stream, stream_id, ArmResult, Audience, BroadcastCommand, BroadcastDefinition,
    BroadcastEvent, BroadcastRejected, BroadcastState, Phase, Recipient, SendTime, SubjectTest, SubjectVariant,
    WinnerMetric, MAX_RATE_PER_SECOND,
};
