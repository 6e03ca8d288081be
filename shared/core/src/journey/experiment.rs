//! Experiments (decision 0081): which variant of a `split` step a customer
//! takes, and whether the campaign holds them out.
//!
//! Assignment is a pure function of the ids: the first 8 bytes of
//! SHA-256(customer id, campaign id, experiment id), as a big-endian
//! integer modulo [`BUCKETS`], gives the customer's bucket. The holdout
//! takes the buckets below `percent × 100` of its own hash (the experiment
//! id [`HOLDOUT`]); a split walks its variants' cumulative weights scaled
//! to [`BUCKETS`]. The same customer always lands in the same arm, on any
//! replay, retry or campaign version that keeps the ids.

use super::definition::{Holdout, SplitStep, Variant};
use sha2::{Digest, Sha256};

/// The number of buckets the hash is mapped to: shares are exact to 0.01 %.
pub const BUCKETS: u64 = 10_000;

/// The experiment id under which a campaign's holdout is hashed and
/// recorded (the stats report it under the same id).
pub const HOLDOUT: &str = crate::insights::campaign_stats::HOLDOUT_EXPERIMENT;

/// The customer's bucket in `[0, BUCKETS)` for `experiment` of `campaign`.
pub fn bucket(customer_id: &str, campaign_id: &str, experiment: &str) -> u64 {
    let mut hash = Sha256::new();
    for part in [customer_id, campaign_id, experiment] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

impl Holdout {
    /// Whether the customer in `bucket` (of [`HOLDOUT`]) is held out.
    pub fn holds_out(self, bucket: u64) -> bool {
        bucket < u64::from(self.percent) * BUCKETS / 100
    }
}

impl SplitStep {
    /// The variant of the customer in `bucket`: the first whose cumulative
    /// weight, scaled to [`BUCKETS`], lies above it. `None` only for a split
    /// without weight (which the loader refuses).
    pub fn variant_for(&self, bucket: u64) -> Option<&Variant> {
        let total: u64 = self.variants.iter().map(|v| u64::from(v.weight)).sum();
        let mut cumulative = 0u64;
        self.variants.iter().find(|v| {
            cumulative += u64::from(v.weight);
            // bucket / BUCKETS < cumulative / total, in integers.
            bucket * total < cumulative * BUCKETS
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::definition::{Campaign, Step};

    fn split(weights: &[u32]) -> SplitStep {
        SplitStep {
            id: "test".into(),
            experiment: "subject".into(),
            variants: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Variant {
                    id: format!("v{i}"),
                    weight: *w,
                    next: format!("send-{i}"),
                })
                .collect(),
        }
    }

    #[test]
    fn buckets_are_stable_and_depend_on_every_id() {
        let b = bucket("c1", "welcome", "subject");
        assert_eq!(b, bucket("c1", "welcome", "subject"));
        assert!(b < BUCKETS);
        // The parts are separated: ("c1", "welcome") is not ("c1w", "elcome").
        let others = [
            bucket("c2", "welcome", "subject"),
            bucket("c1", "welcome2", "subject"),
            bucket("c1", "welcome", "subject2"),
            bucket("c1w", "elcome", "subject"),
        ];
        assert!(others.iter().filter(|o| **o == b).count() <= 1, "{b} {others:?}");
        // A known value, so that a change of the hash (which would move
        // every running experiment's customers) fails here.
        let first = Sha256::digest(b"c1\0welcome\0subject\0");
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&first[..8]);
        assert_eq!(b, u64::from_be_bytes(eight) % BUCKETS);
    }

    #[test]
    fn cumulative_weights_cut_the_buckets() {
        let s = split(&[50, 50]);
        assert_eq!(s.variant_for(0).map(|v| v.id.as_str()), Some("v0"));
        assert_eq!(s.variant_for(4_999).map(|v| v.id.as_str()), Some("v0"));
        assert_eq!(s.variant_for(5_000).map(|v| v.id.as_str()), Some("v1"));
        assert_eq!(s.variant_for(9_999).map(|v| v.id.as_str()), Some("v1"));
        let s = split(&[1, 2, 1]);
        assert_eq!(s.variant_for(2_499).map(|v| v.id.as_str()), Some("v0"));
        assert_eq!(s.variant_for(2_500).map(|v| v.id.as_str()), Some("v1"));
        assert_eq!(s.variant_for(7_499).map(|v| v.id.as_str()), Some("v1"));
        assert_eq!(s.variant_for(7_500).map(|v| v.id.as_str()), Some("v2"));
        assert_eq!(split(&[0]).variant_for(0), None);
    }

    #[test]
    fn a_holdout_takes_its_percent_of_the_buckets() {
        let h = Holdout { percent: 10 };
        assert!(h.holds_out(0));
        assert!(h.holds_out(999));
        assert!(!h.holds_out(1_000));
        let held = (0..BUCKETS).filter(|b| h.holds_out(*b)).count();
        assert_eq!(held, 1_000);
    }

    fn campaign(holdout: &str, split: &str) -> String {
        format!(
            "id: exp\nname: Exp\n{holdout}trigger: {{ pattern: {{ source: [crm.commerce], detail-type: [CartAbandoned] }} }}\n\
             steps:\n  - {split}\n\
             \x20 - {{ id: send-a, type: send, channel: email, template: abandoned-cart-reminder, category: marketing, purpose: marketing, next: exit }}\n\
             \x20 - {{ id: send-b, type: send, channel: email, template: abandoned-cart-final-offer, category: marketing, purpose: marketing }}\n"
        )
    }

    const SPLIT: &str = "{ id: test, type: split, experiment: subject-2026, variants: \
                         [{ id: a, weight: 50, next: send-a }, { id: b, weight: 50, next: send-b }] }";

    fn schema_accepts(text: &str) -> bool {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let schema: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("schemas/campaign.schema.json")).expect("schema exists"),
        )
        .expect("schema is JSON");
        let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
        let doc: serde_json::Value = serde_yaml::from_str(text).expect("YAML");
        validator.is_valid(&doc)
    }

    fn paths(text: &str) -> Vec<String> {
        match Campaign::from_yaml(text) {
            Ok(_) => panic!("expected errors: {text}"),
            Err(errors) => errors.into_iter().map(|e| e.path).collect(),
        }
    }

    #[test]
    fn a_split_with_a_holdout_loads_matches_the_schema_and_round_trips() {
        let text = campaign("holdout: { percent: 10 }\n", SPLIT);
        assert!(schema_accepts(&text));
        let loaded = Campaign::from_yaml(&text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(loaded.holdout, Some(Holdout { percent: 10 }));
        let Step::Split(split) = &loaded.steps[0] else {
            panic!("a split")
        };
        assert_eq!(split.experiment, "subject-2026");
        assert_eq!(
            split
                .variants
                .iter()
                .map(|v| (v.id.as_str(), v.weight, v.next.as_str()))
                .collect::<Vec<_>>(),
            [("a", 50, "send-a"), ("b", 50, "send-b")]
        );
        assert_eq!(
            loaded.next_after("test"),
            None,
            "a split's targets depend on the customer"
        );
        let value = serde_json::to_value(&loaded).expect("serializes");
        assert_eq!(Campaign::from_value(&value).as_ref(), Ok(&loaded));
        assert!(schema_accepts(&serde_yaml::to_string(&value).expect("yaml")));
    }

    #[test]
    fn a_split_and_a_holdout_are_checked_with_their_paths() {
        let split = |variants: &str| {
            campaign(
                "",
                &format!("{{ id: test, type: split, experiment: subject-2026, variants: [{variants}] }}"),
            )
        };
        for (text, expected) in [
            (
                split("{ id: a, weight: 50, next: send-a }"),
                // send-b is then never reached.
                vec!["steps[0].variants", "steps[2]"],
            ),
            (
                split("{ id: a, weight: 0, next: send-a }, { id: b, weight: 1, next: send-b }"),
                vec!["steps[0].variants[0].weight"],
            ),
            (
                split("{ id: a, weight: 1, next: send-a }, { id: b, weight: 10001, next: send-b }"),
                vec!["steps[0].variants[1].weight"],
            ),
            (
                split("{ id: a, weight: 1, next: send-a }, { id: a, weight: 1, next: send-b }"),
                vec!["steps[0].variants[1].id"],
            ),
            (
                split("{ id: a, weight: 1, next: send-a }, { id: B, weight: 1, next: send-b }"),
                vec!["steps[0].variants[1].id"],
            ),
            (
                split("{ id: a, weight: 1, next: send-a }, { id: b, weight: 1, next: nowhere }"),
                vec!["steps[0].variants[1].next"],
            ),
            (
                split("{ id: a, weight: 1, next: send-a }, { id: b, weight: 1, next: send-b, extra: 1 }"),
                vec!["steps[0].variants[1]"],
            ),
            (
                campaign(
                    "",
                    "{ id: test, type: split, experiment: holdout, variants: \
                     [{ id: a, weight: 1, next: send-a }, { id: b, weight: 1, next: send-b }] }",
                ),
                vec!["steps[0].experiment"],
            ),
            (
                campaign(
                    "",
                    "{ id: test, type: split, experiment: Subject, variants: \
                     [{ id: a, weight: 1, next: send-a }, { id: b, weight: 1, next: send-b }] }",
                ),
                vec!["steps[0].experiment"],
            ),
            (campaign("holdout: { percent: 0 }\n", SPLIT), vec!["holdout.percent"]),
            (campaign("holdout: { percent: 51 }\n", SPLIT), vec!["holdout.percent"]),
            (campaign("holdout: { share: 5 }\n", SPLIT), vec!["holdout.share"]),
        ] {
            let found = paths(&text);
            assert_eq!(
                found
                    .iter()
                    .map(|p| p.split('.').take(2).collect::<Vec<_>>().join("."))
                    .collect::<Vec<_>>(),
                expected
                    .iter()
                    .map(|p| p.split('.').take(2).collect::<Vec<_>>().join("."))
                    .collect::<Vec<_>>(),
                "{text}: {found:?}"
            );
            assert!(
                found.iter().zip(&expected).all(|(f, e)| f.starts_with(e)),
                "{text}: {found:?}"
            );
            // Unique variant ids and known targets are the loader's alone.
            let loader_only = text.contains("{ id: a, weight: 1, next: send-b }") || text.contains("nowhere");
            assert_eq!(schema_accepts(&text), loader_only, "the schema: {text}");
        }
        // Two splits of one experiment would give the same customers the same arms.
        let twice = "id: exp\nname: Exp\ntrigger: { pattern: { source: [crm.commerce], detail-type: [CartAbandoned] } }\n\
                     steps:\n  - { id: s1, type: split, experiment: e, variants: [{ id: a, weight: 1, next: s2 }, { id: b, weight: 1, next: s2 }] }\n\
                     \x20 - { id: s2, type: split, experiment: e, variants: [{ id: a, weight: 1, next: exit }, { id: b, weight: 1, next: exit }] }\n";
        assert_eq!(paths(twice), ["steps[1].experiment"]);
        // A variant target no step reaches otherwise is reached through the split.
        let reached = campaign("", SPLIT);
        assert!(Campaign::from_yaml(&reached).is_ok());
    }

    #[test]
    fn hashed_shares_follow_the_weights() {
        let s = split(&[70, 30]);
        let n = 20_000;
        let first = (0..n)
            .filter(|i| {
                s.variant_for(bucket(&format!("customer-{i}"), "c", "e"))
                    .is_some_and(|v| v.id == "v0")
            })
            .count();
        let share = first as f64 / n as f64;
        assert!((share - 0.70).abs() < 0.015, "{share}");
    }
}
