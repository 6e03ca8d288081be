//! The channel function (ARCHITECTURE.md §8): its rules send it every
//! `MessageRequested`, the deferral timers, and the SES feedback events.
//! Requests and timers go to `MessageDelivery`; feedback is recorded on the
//! message's stream.

pub mod handler;
