//! Signed unsubscribe and preference-centre tokens (filled in by the unsubscribe work).
