//! The template registry: every template id a campaign may send.
//!
//! Two kinds of ids (decision 0077):
//! - the shipped templates, [`KNOWN_TEMPLATES`]: the folders
//!   `templates/<id>/`, compiled in and rendered by
//!   [`crate::messaging::render`]; `templates/README.md` lists the same ids;
//! - the templates stored through the API (`PUT /templates/{id}`,
//!   `crate::messaging::templates`), listed in the `templates` stream
//!   ([`INDEX_STREAM`]): a `TemplateRegistered` is appended before an id's
//!   first version (read deduplicated, like the `campaigns` stream).
//!
//! Templates are never deleted, so an id once known stays known.

use crate::event::DomainEvent;
use crate::ports::{EventStore, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

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

/// Whether `id` is a shipped template.
pub fn is_known(id: &str) -> bool {
    KNOWN_TEMPLATES.binary_search(&id).is_ok()
}

/// The shipped templates written for transactional messages (the *kind*
/// column of `templates/README.md`; the shipped campaigns send them with
/// `category: transactional`), sorted. Their footers carry no unsubscribe
/// link, so a marketing send (a broadcast) may not use them. A stored
/// version of one of these ids keeps its kind; a template stored under a
/// new id is a marketing one.
pub const TRANSACTIONAL_TEMPLATES: &[&str] = &[
    "email-verification",
    "email-verification-reminder",
    "order-confirmation",
    "order-shipped",
    "order-shipped-push",
    "payment-failed",
    "payment-failed-final-notice",
];

/// Whether `id` is a transactional template ([`TRANSACTIONAL_TEMPLATES`]).
pub fn is_transactional(id: &str) -> bool {
    TRANSACTIONAL_TEMPLATES.binary_search(&id).is_ok()
}

/// The longest template id.
pub const MAX_ID_LEN: usize = 64;

/// Whether `id` can name a template: lowercase letters, digits and single
/// dashes between them, at most [`MAX_ID_LEN`] characters (a stream name
/// and a path segment as it is).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.split('-').all(|part| !part.is_empty())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The stream listing every template id stored through the API.
pub const INDEX_STREAM: &str = "templates";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum TemplateIndexEvent {
    /// The template `template_id` has (or is about to have) a stream of its
    /// own, `template-<id>`.
    TemplateRegistered { template_id: String },
}

impl DomainEvent for TemplateIndexEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// Every template id stored through the API (shipped ones included once
/// they have a version of their own), sorted and deduplicated.
pub async fn stored_ids(events: &dyn EventStore) -> Result<BTreeSet<String>, StoreError> {
    let index = events.read_stream(INDEX_STREAM, 0, usize::MAX).await?;
    index
        .iter()
        .map(|e| {
            TemplateIndexEvent::from_envelope(e)
                .map(|TemplateIndexEvent::TemplateRegistered { template_id }| template_id)
                .map_err(|err| StoreError::Failed(format!("{INDEX_STREAM}: {err}")))
        })
        .collect()
}

/// The template ids a campaign definition may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KnownTemplates {
    /// The shipped ones only: the shipped campaigns, which ship with them.
    #[default]
    Shipped,
    /// The shipped ones and these stored ones: a campaign put through the
    /// API (or rolled back) is checked against the templates that exist.
    With(BTreeSet<String>),
    /// Any valid id: a stored definition read back. It was checked when it
    /// was published, and templates are never deleted.
    Any,
}

impl KnownTemplates {
    pub fn contains(&self, id: &str) -> bool {
        match self {
            KnownTemplates::Shipped => is_known(id),
            KnownTemplates::With(stored) => is_known(id) || stored.contains(id),
            KnownTemplates::Any => is_valid_id(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_templates_are_the_readme_kind_and_the_shipped_campaigns_category() {
        assert!(TRANSACTIONAL_TEMPLATES.windows(2).all(|w| w[0] < w[1]));
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates/README.md"))
            .expect("templates/README.md");
        let mut transactional = Vec::new();
        for line in readme.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, id, _, _, kind, ..] = cells.as_slice() else {
                continue;
            };
            let Some(id) = id
                .strip_prefix('`')
                .and_then(|s| s.strip_suffix('`'))
                .filter(|id| is_known(id))
            else {
                continue;
            };
            assert!(matches!(*kind, "marketing" | "transactional"), "{id}: kind {kind}");
            if *kind == "transactional" {
                transactional.push(id);
            }
        }
        assert_eq!(transactional, TRANSACTIONAL_TEMPLATES);
        assert!(TRANSACTIONAL_TEMPLATES.iter().all(|id| is_known(id)));
        for (name, text) in crate::journey::campaigns::SHIPPED {
            let campaign = crate::journey::definition::Campaign::from_yaml(text).expect("a shipped campaign");
            for step in &campaign.steps {
                if let crate::journey::definition::Step::Send(send) = step {
                    assert_eq!(
                        is_transactional(&send.template),
                        send.category == crate::vocabulary::Category::Transactional,
                        "{name}: step {} sends {}",
                        send.id,
                        send.template
                    );
                }
            }
        }
    }

    #[test]
    fn registry_is_sorted_and_unique() {
        assert!(KNOWN_TEMPLATES.windows(2).all(|w| w[0] < w[1]));
        assert!(is_known("welcome"));
        assert!(!is_known("nope"));
    }

    #[test]
    fn ids_are_slugs_and_known_templates_say_which() {
        for id in KNOWN_TEMPLATES {
            assert!(is_valid_id(id), "{id}");
        }
        for bad in [
            "",
            "Welcome",
            "a--b",
            "-a",
            "a-",
            "a_b",
            "a b",
            "a/b",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
        let stored = KnownTemplates::With(BTreeSet::from(["spring-sale".to_string()]));
        assert!(stored.contains("spring-sale") && stored.contains("welcome"));
        assert!(!stored.contains("summer-sale"));
        assert!(!KnownTemplates::Shipped.contains("spring-sale"));
        assert!(KnownTemplates::Any.contains("summer-sale"));
        assert!(!KnownTemplates::Any.contains("Summer"));
    }

    #[tokio::test]
    async fn stored_ids_are_read_deduplicated_from_the_index() {
        use crate::event::{envelopes, Actor, CommandMeta};
        use crate::ports::{AppendRequest, ExpectedVersion};
        use crate::testing::InMemoryEventStore;
        let store = InMemoryEventStore::default();
        assert!(stored_ids(&store).await.expect("read").is_empty());
        let meta = CommandMeta::new(Actor::api("t"));
        for id in ["spring-sale", "welcome", "spring-sale"] {
            let events = envelopes(
                INDEX_STREAM,
                None,
                &[TemplateIndexEvent::TemplateRegistered {
                    template_id: id.to_string(),
                }],
                &meta,
                chrono::Utc::now(),
            )
            .expect("envelopes");
            store
                .append(AppendRequest {
                    stream_id: INDEX_STREAM.to_string(),
                    expected: ExpectedVersion::Any,
                    events,
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await
                .expect("append");
        }
        let ids = stored_ids(&store).await.expect("read");
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), vec!["spring-sale", "welcome"]);
    }
}
