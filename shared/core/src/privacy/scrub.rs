//! Provider and error texts without the recipient's address (issue 16):
//! filled in by the provider-text work.
