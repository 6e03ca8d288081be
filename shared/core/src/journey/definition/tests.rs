//! The loader's checks of `channel: preferred` sends (decision 0076).

use super::*;

fn campaign(send: &str) -> String {
    format!(
        "id: p\nname: P\ntrigger: {{ pattern: {{ source: [crm.commerce], detail-type: [CheckoutAbandoned] }} }}\n\
         steps:\n  - {send}\n"
    )
}

fn paths(text: &str) -> Vec<String> {
    match Campaign::from_yaml(text) {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors.into_iter().map(|e| e.path).collect(),
    }
}

fn schema_accepts(text: &str) -> bool {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("schemas/campaign.schema.json")).expect("schema exists"),
    )
    .expect("schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let doc: Value = serde_yaml::from_str(text).expect("YAML");
    validator.is_valid(&doc)
}

const PREFERRED: &str =
    "{ id: s, type: send, channel: preferred, fallback: [email, sms], template: checkout-abandonment, \
                         templates: { sms: checkout-abandonment-sms }, category: marketing, purpose: marketing }";

#[test]
fn a_preferred_send_loads_with_its_channels_and_templates() {
    let text = campaign(PREFERRED);
    assert!(schema_accepts(&text));
    let loaded = Campaign::from_yaml(&text).expect("loads");
    let Step::Send(send) = &loaded.steps[0] else {
        panic!("a send step")
    };
    assert_eq!(send.channel, SendChannel::Preferred);
    assert_eq!(send.channels(), [Channel::Email, Channel::Sms]);
    assert_eq!(send.template_for(Channel::Email), "checkout-abandonment");
    assert_eq!(send.template_for(Channel::Sms), "checkout-abandonment-sms");
    // It sends on two channels: revoking one consent leaves it the other.
    assert!(!loaded.sends_only_under(Purpose::Marketing, Channel::Sms));
}

#[test]
fn a_preferred_send_is_checked() {
    let send = |fields: &str| {
        campaign(&format!(
            "{{ id: s, type: send, template: checkout-abandonment, category: marketing, purpose: marketing, {fields} }}"
        ))
    };
    for (fields, path) in [
        ("channel: preferred", "steps[0].fallback"),
        ("channel: preferred, fallback: [sms, sms]", "steps[0].fallback[1]"),
        (
            "channel: preferred, fallback: [email], templates: { sms: checkout-abandonment-sms }",
            "steps[0].templates.sms",
        ),
        (
            "channel: preferred, fallback: [email, sms], templates: { sms: no-such-template }",
            "steps[0].templates.sms",
        ),
        ("channel: email, fallback: [sms]", "steps[0].fallback"),
        (
            "channel: email, templates: { email: checkout-abandonment }",
            "steps[0].templates",
        ),
    ] {
        let text = send(fields);
        assert_eq!(paths(&text), [path], "{fields}");
    }
    assert!(
        !schema_accepts(&send("channel: preferred")),
        "the schema wants a fallback"
    );
    assert!(!schema_accepts(&send("channel: email, fallback: [sms]")));
    assert_eq!(paths(&send("channel: fax")), ["steps[0].channel"]);
    // A marketing preferred send names its purpose: entry consent covers one channel.
    let text = campaign(
        "{ id: s, type: send, channel: preferred, fallback: [email], template: checkout-abandonment, category: marketing }",
    );
    assert_eq!(paths(&text), ["steps[0].purpose"]);
}

/// Decision 0073 addendum: `same` on an exit rule or goal is a path into
/// the event, and the rule matches only an event about the trigger's thing.
#[test]
fn same_compares_the_event_with_the_trigger() {
    let with_same = |same: &str| {
        format!(
            "id: p\nname: P\ntrigger: {{ pattern: {{ source: [crm.commerce], detail-type: [OrderDelivered] }} }}\n\
             exit_on:\n  - {{ name: reviewed, pattern: {{ source: [crm.commerce], detail-type: [ReviewSubmitted] }}, \
             same: {same} }}\nsteps:\n  - {{ id: s, type: wait, duration: 5m }}\n"
        )
    };
    let text = with_same("event.detail.data.order_id");
    assert!(schema_accepts(&text));
    let loaded = Campaign::from_yaml(&text).expect("loads");
    let rule = &loaded.exit_on[0];
    assert_eq!(rule.same.as_deref(), Some("event.detail.data.order_id"));
    let event = |order: &str| serde_json::json!({ "detail": { "data": { "order_id": order } } });
    assert!(rule.same_as_trigger(&event("o-1"), &event("o-1")));
    assert!(!rule.same_as_trigger(&event("o-2"), &event("o-1")));
    let no_order = serde_json::json!({ "detail": { "data": {} } });
    assert!(
        !rule.same_as_trigger(&event("o-1"), &no_order),
        "a trigger without the value matches nothing"
    );
    assert!(!rule.same_as_trigger(&no_order, &no_order));

    assert_eq!(paths(&with_same("profile.email")), ["exit_on[0].same"]);
    assert_eq!(paths(&with_same("event.")), ["exit_on[0].same"]);
    assert!(!schema_accepts(&with_same("profile.email")));
}

/// Decision 0086: a condition on `segments.<segment-id>` takes `exists` or
/// `not_exists` and a slug; anything else is refused with its path, by the
/// loader and the schema alike.
#[test]
fn segment_conditions_are_checked_when_loaded() {
    let branch = |condition: &str| {
        format!(
            "id: p\nname: P\ntrigger: {{ pattern: {{ source: [crm.commerce], detail-type: [CartAbandoned] }} }}\n\
             steps:\n  - {{ id: b, type: branch, conditions: [{condition}], then: w, else: exit }}\n  \
             - {{ id: w, type: wait, duration: 5m }}\n"
        )
    };
    let ok = branch("{ path: segments.de-speakers, op: exists }");
    assert!(schema_accepts(&ok));
    let loaded = Campaign::from_yaml(&ok).expect("loads");
    assert_eq!(loaded.segments_named().into_iter().collect::<Vec<_>>(), ["de-speakers"]);
    assert!(schema_accepts(&branch(
        "{ path: segments.rfm-champions, op: not_exists }"
    )));
    Campaign::from_yaml(&branch("{ path: segments.rfm-champions, op: not_exists }")).expect("not_exists loads");

    for (condition, path) in [
        (
            "{ path: segments.vip, op: eq, value: true }",
            "steps[0].conditions[0].op",
        ),
        (
            "{ path: segments.vip, op: in, value: [a] }",
            "steps[0].conditions[0].op",
        ),
        (
            "{ path: segments.Not_A_Slug, op: exists }",
            "steps[0].conditions[0].path",
        ),
        ("{ path: segments.a.b, op: exists }", "steps[0].conditions[0].path"),
        ("{ path: segments, op: exists }", "steps[0].conditions[0].path"),
        ("{ path: segment.vip, op: exists }", "steps[0].conditions[0].path"),
        (
            "{ path: segments.vip, op: exists, value: true }",
            "steps[0].conditions[0].value",
        ),
    ] {
        let text = branch(condition);
        assert_eq!(paths(&text), [path], "{condition}");
        assert!(!schema_accepts(&text), "the schema refuses {condition}");
    }

    // Trigger, exit and goal conditions take them too; `same` and
    // `entry.dedupe_key` are paths into the event and do not.
    let elsewhere = "id: p\nname: P\ntrigger: { pattern: { source: [crm.commerce], detail-type: [CartAbandoned] }, \
         conditions: [{ path: segments.a, op: not_exists }] }\n\
         exit_on:\n  - { name: joined, pattern: { source: [crm.commerce], detail-type: [OrderPlaced] }, \
         conditions: [{ path: segments.b, op: exists }] }\n\
         steps:\n  - { id: w, type: wait_until, pattern: { source: [crm.commerce], detail-type: [OrderPlaced] }, \
         conditions: [{ path: segments.c, op: exists }], timeout: 1d, on_timeout: exit }\n";
    assert!(schema_accepts(elsewhere));
    let loaded = Campaign::from_yaml(elsewhere).expect("loads");
    assert_eq!(loaded.segments_named().into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    let same = "id: p\nname: P\ntrigger: { pattern: { source: [crm.commerce], detail-type: [CartAbandoned] } }\n\
         entry: { dedupe_key: segments.a }\n\
         exit_on:\n  - { name: x, pattern: { source: [crm.commerce], detail-type: [OrderPlaced] }, same: segments.a }\n\
         steps:\n  - { id: w, type: wait, duration: 5m }\n";
    assert_eq!(paths(same), ["exit_on[0].same", "entry.dedupe_key"]);
}
