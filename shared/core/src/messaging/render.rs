//! Liquid templates for messages (filled in by the templates work).
