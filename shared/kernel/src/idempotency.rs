//! Idempotency keys: a retried command is answered from its receipt instead
//! of being applied twice.

use sha2::{Digest, Sha256};

/// A client's idempotency key, scoped to who sent it, and a fingerprint of
/// the request it was first used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// `command#<sha256(principal, key)>`: the receipt's key in the store.
    pub receipt_key: String,
    /// sha256 of the request (method, path, body).
    pub request_hash: String,
}

/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

impl IdempotencyKey {
    pub fn new(principal: &str, client_key: &str, method: &str, path: &str, body: &[u8]) -> Self {
        let mut scope = Sha256::new();
        scope.update(principal.as_bytes());
        scope.update([0]);
        scope.update(client_key.as_bytes());
        let mut request = Sha256::new();
        request.update(method.as_bytes());
        request.update([0]);
        request.update(path.as_bytes());
        request.update([0]);
        request.update(body);
        IdempotencyKey {
            receipt_key: format!("command#{}", hex::encode(scope.finalize())),
            request_hash: hex::encode(request.finalize()),
        }
    }

    /// Is `key` acceptable as a client idempotency key? Printable ASCII, 1 to 255.
    pub fn is_valid_client_key(key: &str) -> bool {
        !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_and_fingerprint() {
        let a = IdempotencyKey::new("alice", "k1", "POST", "/customers", b"{}");
        let b = IdempotencyKey::new("bob", "k1", "POST", "/customers", b"{}");
        let c = IdempotencyKey::new("alice", "k1", "POST", "/customers", b"{\"x\":1}");
        assert_ne!(a.receipt_key, b.receipt_key);
        assert_eq!(a.receipt_key, c.receipt_key);
        assert_ne!(a.request_hash, c.request_hash);
        assert!(IdempotencyKey::is_valid_client_key("abc-123"));
        assert!(!IdempotencyKey::is_valid_client_key("has space"));
        assert!(!IdempotencyKey::is_valid_client_key(""));
    }
}
