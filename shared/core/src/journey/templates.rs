//! The template registry: every template id a campaign may send.
//!
//! The templates themselves are the folders `templates/<id>/`, rendered by
//! [`crate::messaging::render`]; `templates/README.md` lists the same ids.

/// Every known template id, sorted.
pub const KNOWN_TEMPLATES: &[&str] = &[
    "abandoned-cart-final-offer",
    "abandoned-cart-reminder",
    "browse-abandonment",
    "checkout-abandonment",
    "checkout-abandonment-sms",
    "consent-renewal",
    "cross-sell-recommendations",
    "email-verification",
    "email-verification-reminder",
    "order-confirmation",
    "order-shipped",
    "order-shipped-push",
    "payment-failed",
    "payment-failed-final-notice",
    "reorder-reminder",
    "review-request",
    "welcome",
];

/// Whether `id` is a known template.
pub fn is_known(id: &str) -> bool {
    KNOWN_TEMPLATES.binary_search(&id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_sorted_and_unique() {
        assert!(KNOWN_TEMPLATES.windows(2).all(|w| w[0] < w[1]));
        assert!(is_known("welcome"));
        assert!(!is_known("nope"));
    }
}
