//! Tests of the kernel that need business contexts: the command loop over
//! the cart, the consumer framework over the customer and consent
//! projections, sealing of every context's read models, and the personal
//! paths of customer and order events. The kernel cannot name a context, so
//! they run here, against the kernel's public API.

mod aggregate;
mod consumer;
mod consumer_pages;
mod privacy_paths;
mod privacy_paths_coverage;
mod privacy_read_models;
