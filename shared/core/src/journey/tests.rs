//! The shipped campaigns, the published schema, and the loader's error
//! reporting.

use super::definition::{Campaign, Category, DefinitionError, Reentry, Step};
use super::templates::KNOWN_TEMPLATES;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped() -> Vec<(String, String)> {
    let dir = repo_root().join("campaigns");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("campaigns/ exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).expect("readable campaign"))
        })
        .collect();
    files.sort();
    files
}

fn load(text: &str) -> Campaign {
    match Campaign::from_yaml(text) {
        Ok(c) => c,
        Err(errors) => panic!(
            "{}",
            errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        ),
    }
}

fn paths(text: &str) -> Vec<String> {
    match Campaign::from_yaml(text) {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors.into_iter().map(|e| e.path).collect(),
    }
}

#[test]
fn every_shipped_campaign_loads_and_matches_the_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("schemas/campaign.schema.json")).expect("schema exists"),
    )
    .expect("schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let campaigns = shipped();
    let ids: BTreeSet<String> = campaigns
        .iter()
        .map(|(name, _)| name.trim_end_matches(".yaml").to_string())
        .collect();
    for expected in [
        "welcome",
        "abandoned-cart",
        "checkout-abandonment",
        "browse-abandonment",
        "order-confirmation",
        "shipping",
        "review-request",
        "replenishment",
        "payment-failed-recovery",
        "cross-sell",
    ] {
        assert!(ids.contains(expected), "campaigns/{expected}.yaml is missing");
    }
    let mut used_templates = BTreeSet::new();
    for (name, text) in &campaigns {
        let document: Value = serde_yaml::from_str(text).expect("YAML");
        let problems: Vec<String> = validator.iter_errors(&document).map(|e| e.to_string()).collect();
        assert!(problems.is_empty(), "{name} does not match the schema: {problems:#?}");
        let campaign = load(text);
        assert_eq!(format!("{}.yaml", campaign.id), *name, "file name is the campaign id");
        for step in &campaign.steps {
            if let Step::Send(send) = step {
                used_templates.insert(send.template.clone());
            }
        }
        // What is loaded serializes back to a document that loads the same.
        let round_trip = Campaign::from_value(&serde_json::to_value(&campaign).expect("serializes"));
        assert_eq!(round_trip.as_ref(), Ok(&campaign), "{name} round trip");
        assert!(
            validator.is_valid(&serde_json::to_value(&campaign).expect("serializes")),
            "{name} serialized"
        );
    }
    let known: BTreeSet<String> = KNOWN_TEMPLATES.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        used_templates, known,
        "the registry lists exactly the templates the campaigns use"
    );
}

#[test]
fn templates_readme_lists_every_template() {
    let readme = std::fs::read_to_string(repo_root().join("templates/README.md")).expect("templates/README.md");
    for id in KNOWN_TEMPLATES {
        assert!(
            readme.contains(&format!("`{id}`")),
            "templates/README.md does not list {id}"
        );
    }
}

#[test]
fn abandoned_cart_is_what_the_seed_describes() {
    let text = std::fs::read_to_string(repo_root().join("campaigns/abandoned-cart.yaml")).expect("shipped");
    let campaign = load(&text);
    assert_eq!(campaign.entry.reentry, Reentry::EveryTime);
    assert_eq!(campaign.entry.dedupe_key.as_deref(), Some("event.detail.data.cart_id"));
    let cart = |total: u64| {
        json!({
            "source": "crm.commerce", "detail-type": "CartAbandoned",
            "detail": { "data": { "cart_id": "c-1", "customer_id": "u-1", "items": [], "total_value_minor": total, "currency": "EUR" } }
        })
    };
    let triggers = |event: &Value| {
        campaign.trigger.pattern.matches(event) && campaign.trigger.conditions.iter().all(|c| c.holds(event, None))
    };
    assert!(triggers(&cart(5000)));
    assert!(!triggers(&cart(4999)));
    let order = json!({ "source": "crm.commerce", "detail-type": "OrderPlaced", "detail": { "data": {} } });
    assert!(campaign.exit_on.iter().any(|rule| rule.pattern.matches(&order)));

    let kinds: Vec<&str> = campaign.steps.iter().map(Step::type_name).collect();
    assert_eq!(kinds, ["wait", "send", "wait", "send"]);
    let Step::Wait(first) = &campaign.steps[0] else {
        panic!("wait first")
    };
    assert_eq!(first.duration.map(|d| d.to_chrono()), Some(chrono::Duration::hours(1)));
    let Step::Send(final_offer) = &campaign.steps[3] else {
        panic!("send last")
    };
    assert_eq!(final_offer.template, "abandoned-cart-final-offer");
    assert_eq!(final_offer.category, Category::Marketing);
    assert_eq!(campaign.next_after("wait-1h").map(Step::id), Some("reminder"));
    assert_eq!(campaign.next_after("final-offer").map(Step::id), None);
}

#[test]
fn replenishment_triggers_on_consumables_only() {
    let text = std::fs::read_to_string(repo_root().join("campaigns/replenishment.yaml")).expect("shipped");
    let campaign = load(&text);
    let delivered = |category: &str| {
        json!({ "source": "crm.commerce", "detail-type": "OrderDelivered",
                "detail": { "data": { "order_id": "o-1", "items": [{ "sku": "A", "category": "toys" }, { "sku": "B", "category": category }] } } })
    };
    assert!(campaign.trigger.pattern.matches(&delivered("consumables")));
    assert!(!campaign.trigger.pattern.matches(&delivered("garden")));
}

const BROKEN: &str = r#"
id: Broken Campaign
name: Broken
colour: red
trigger:
  pattern:
    source: [crm.commerce]
    detail-type: [CartAbandoned]
    detail:
      data:
        total_value_minor: [{ numeric: [">>", 5] }]
  conditions:
    - path: detail.total
      op: gte
      value: 10
    - path: event.detail.data.currency
      op: in
      value: EUR
entry:
  dedupe_key: profile.email
  reentry:
    once_per_window:
      window: 0d
exit_on:
  - name: ordered
    pattern:
      source: crm.commerce
goals:
  - name: wrong-source
    pattern:
      source: [crm.customer]
      detail-type: [OrderPlaced]
steps:
  - id: first
    type: wait
    duration: 90x
  - id: first
    type: send
    channel: email
    template: no-such-template
    category: marketing
  - id: late
    type: wait
    until_local_time: "25:00"
  - id: ask
    type: wait_until
    pattern:
      source: [crm.commerce]
      detail-type: [OrderPlaced]
    timeout: 1h
    on_timeout: nowhere
  - id: teleport
    type: warp
  - id: both
    type: wait
    duration: 1h
    until_local_time: "10:00"
  - id: extra
    type: exit
    colour: red
  - id: push
    type: send
    channel: pigeon
    template: welcome
    category: transactional
"#;

#[test]
fn a_broken_campaign_reports_every_error_with_its_path() {
    let errors = Campaign::from_yaml(BROKEN).expect_err("broken");
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let got: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "trigger.pattern.detail.data.total_value_minor[0].numeric[0]",
            "trigger.conditions[0].path",
            "trigger.conditions[1].value",
            "exit_on[0].pattern.source",
            "goals[0].pattern.source",
            "entry.dedupe_key",
            "entry.reentry.once_per_window.window",
            "steps[0].duration",
            "steps[2].until_local_time",
            "steps[1].id",
            "colour",
            "steps[4].type",
            "steps[6].colour",
            "steps[7].channel",
            "id",
            "steps[1].template",
            "steps[1].purpose",
            "steps[3].on_timeout",
            "steps[5]",
        ],
        "{listed:#?}"
    );
}

#[test]
fn the_step_graph_is_checked() {
    let text = r#"
id: loops
name: Loops
trigger:
  pattern: { source: [crm.customer], detail-type: [CustomerRegistered] }
steps:
  - id: a
    type: branch
    conditions: [{ path: profile.vip, op: eq, value: true }]
    then: b
    else: c
  - id: b
    type: update_segment
    segment: vip
    action: add
    next: a
  - id: c
    type: wait
    duration: 1h
    next: exit
  - id: orphan
    type: exit
  - id: exit
    type: exit
"#;
    let errors = Campaign::from_yaml(text).expect_err("broken");
    assert_eq!(
        errors.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        ["steps[4].id"],
        "{errors:#?}"
    );

    let text = text.replace("  - id: exit\n    type: exit\n", "");
    let errors = Campaign::from_yaml(&text).expect_err("broken");
    assert_eq!(
        errors.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        ["steps[3]", "steps[0]"],
        "{errors:#?}"
    );
    assert!(errors[0].message.contains("never reached"), "{errors:#?}");
    assert!(errors[1].message.contains("loop without a wait"), "{errors:#?}");

    // The same loop through a wait is a legitimate polling loop.
    let text = text
        .replace("    next: a\n", "    next: c\n")
        .replace("    duration: 1h\n    next: exit\n", "    duration: 1h\n    next: a\n");
    let text = text.replace("  - id: orphan\n    type: exit\n", "");
    load(&text);
}

#[test]
fn marketing_consent_can_come_from_entry_rules_for_the_same_channel() {
    let base = r#"
id: promo
name: Promo
trigger:
  pattern: { source: [crm.customer], detail-type: [CustomerRegistered] }
entry:
  consent: { purpose: marketing, channel: email }
steps:
  - id: send
    type: send
    channel: CHANNEL
    template: welcome
    category: marketing
"#;
    load(&base.replace("CHANNEL", "email"));
    assert_eq!(paths(&base.replace("CHANNEL", "sms")), ["steps[0].purpose"]);
    load(&format!("{}    purpose: marketing\n", base.replace("CHANNEL", "sms")));
    assert_eq!(
        paths(&format!("{}    purpose: essential\n", base.replace("CHANNEL", "email"))),
        ["steps[0].purpose"]
    );
}

#[test]
fn structural_errors_have_paths() {
    let err = Campaign::from_yaml("id: [unclosed").expect_err("not YAML");
    assert_eq!(err.len(), 1);
    assert_eq!(err[0].path, "");
    assert!(err[0].message.starts_with("invalid YAML"), "{err:?}");
    assert_eq!(paths("- a list"), [""]);
    assert_eq!(paths("id: x\n"), ["name", "trigger", "steps"]);
    let text = "id: x\nname: X\ntrigger: { pattern: { source: [crm.customer] } }\nsteps: []\n";
    assert_eq!(paths(text), ["steps"]);
    let text = "id: x\nname: X\ntrigger: { pattern: { source: [crm.customer] } }\nsteps:\n  - { id: s, type: wait, duration: 5 }\n";
    assert_eq!(paths(text), ["steps[0].duration"]);
    let error: &DefinitionError = &Campaign::from_yaml(text).expect_err("bad")[0];
    assert!(
        error.to_string().starts_with("steps[0].duration: invalid type"),
        "{error}"
    );
}

/// Decision 0069: the browse rule's product count is 2 unless the campaign
/// says otherwise, from 1 to 100, and its window is a duration.
#[test]
fn the_browse_rule_defaults_to_two_products_and_is_checked() {
    let campaign = |browsed: &str| {
        format!(
            "id: b\nname: B\ntrigger: {{ pattern: {{ source: [crm.customer], detail-type: [ProductViewed] }} }}\n\
             entry:\n  browsed: {browsed}\nsteps:\n  - {{ id: s, type: wait, duration: 5m }}\n"
        )
    };
    let loaded = load(&campaign("{ within: 1h }"));
    let rule = loaded.entry.browsed.expect("a browse rule");
    assert_eq!(rule.min_distinct_products, 2);
    assert_eq!(rule.within.to_chrono(), chrono::Duration::hours(1));
    assert_eq!(
        load(&campaign("{ min_distinct_products: 5, within: 2h }"))
            .entry
            .browsed
            .map(|r| r.min_distinct_products),
        Some(5)
    );
    assert_eq!(
        paths(&campaign("{ min_distinct_products: 0, within: 1h }")),
        ["entry.browsed.min_distinct_products"]
    );
    assert_eq!(
        paths(&campaign("{ min_distinct_products: 101, within: 1h }")),
        ["entry.browsed.min_distinct_products"]
    );
    assert_eq!(paths(&campaign("{ within: soon }")), ["entry.browsed.within"]);
    assert!(
        !paths(&campaign("{ min_distinct_products: 2 }")).is_empty(),
        "within is required"
    );
}

#[test]
fn an_update_segment_step_may_name_only_a_manual_segment() {
    let campaign = |segment: &str| {
        format!(
            r#"
id: tagging
name: Tagging
trigger:
  pattern: {{ source: [crm.customer], detail-type: [CustomerRegistered] }}
steps:
  - id: tag
    type: update_segment
    segment: {segment}
    action: add
"#
        )
    };
    load(&campaign("welcomed"));
    for computed in ["new-customers", "buyers", "affinity-lamps"] {
        let errors = Campaign::from_yaml(&campaign(computed)).expect_err("a computed segment");
        assert_eq!(
            errors
                .iter()
                .map(|e| (e.path.as_str(), e.message.contains("computed segment")))
                .collect::<Vec<_>>(),
            [("steps[0].segment", true)],
            "{computed}: {errors:#?}"
        );
    }
}

#[test]
fn a_campaign_declares_its_kind_promotional_by_default() {
    use crate::vocabulary::MarketingKind;
    let base = r#"
id: promo
name: Promo
trigger:
  pattern: { source: [crm.customer], detail-type: [CustomerRegistered] }
steps:
  - { id: send, type: send, channel: email, template: welcome, category: marketing, purpose: marketing }
"#;
    assert_eq!(load(base).kind, MarketingKind::Promotional, "the default");
    assert_eq!(load(&format!("kind: lifecycle\n{base}")).kind, MarketingKind::Lifecycle);
    let errors = Campaign::from_yaml(&format!("kind: transactional\n{base}")).expect_err("an unknown kind");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "kind");
    assert!(
        errors[0].message.contains("lifecycle") && errors[0].message.contains("promotional"),
        "{}",
        errors[0]
    );
    // The shipped campaigns: the follow-ups of the customer's own actions
    // are lifecycle, what sells something new is promotional (decision 0064).
    let kinds: Vec<(String, MarketingKind)> = shipped()
        .iter()
        .map(|(_, text)| load(text))
        .filter(|c| {
            c.steps
                .iter()
                .any(|s| matches!(s, Step::Send(send) if send.category == Category::Marketing))
        })
        .map(|c| (c.id, c.kind))
        .collect();
    let lifecycle = MarketingKind::Lifecycle;
    let promotional = MarketingKind::Promotional;
    for (id, kind) in [
        ("abandoned-cart", lifecycle),
        ("browse-abandonment", lifecycle),
        ("checkout-abandonment", lifecycle),
        ("cross-sell", promotional),
        ("replenishment", promotional),
        ("review-request", lifecycle),
        ("welcome", lifecycle),
    ] {
        assert!(kinds.contains(&(id.to_string(), kind)), "{id}: {kinds:?}");
    }
}
