//! The campaign function (ARCHITECTURE.md §2, §7): its rule sends it the
//! customer, consent and commerce events and the fired timers. Events go to
//! the journey engine; timers to the journey or cart they belong to.

pub mod handler;
