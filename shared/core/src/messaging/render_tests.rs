use super::*;
use crate::journey::templates::KNOWN_TEMPLATES;
use serde_json::json;

/// Marketing templates must carry the unsubscribe link.
const MARKETING: &[&str] = &[
    "abandoned-cart-final-offer",
    "abandoned-cart-reminder",
    "browse-abandonment",
    "checkout-abandonment",
    "consent-renewal",
    "cross-sell-recommendations",
    "reorder-reminder",
    "review-request",
    "welcome",
];

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample(id: &str) -> Value {
    sample_data(id).unwrap_or_else(|e| panic!("{id}: {e}"))
}

#[test]
fn every_known_template_has_a_source_in_registry_order() {
    assert_eq!(source_ids(), KNOWN_TEMPLATES);
}

#[test]
fn every_known_template_renders_its_sample() {
    for id in KNOWN_TEMPLATES {
        let vars = sample(id);
        let rendered = render(id, &vars).unwrap_or_else(|e| panic!("{id}: {e}"));
        let first_name = vars["customer"]["first_name"].as_str().expect("sample first name");
        assert!(!rendered.text.trim().is_empty(), "{id}: empty text");
        match channel_of(id) {
            Some(Channel::Email) => {
                let subject = rendered.subject.as_deref().expect("subject");
                assert!(
                    !subject.is_empty() && !subject.contains('\n'),
                    "{id}: subject {subject:?}"
                );
                let html = rendered.html.as_deref().expect("html");
                assert!(html.starts_with("<!doctype html>"), "{id}: not an HTML document");
                assert!(
                    !html.contains("{{") && !html.contains("{%"),
                    "{id}: Liquid left in HTML"
                );
                assert!(!html.contains("<mj-"), "{id}: MJML left in HTML");
                assert!(html.contains(first_name), "{id}: no first name in HTML");
                assert!(rendered.text.contains(first_name), "{id}: no first name in text");
                let preferences = vars["links"]["preferences"].as_str().expect("preferences link");
                assert!(html.contains(preferences), "{id}: no preferences link in HTML");
                assert!(rendered.text.contains(preferences), "{id}: no preferences link in text");
                let unsubscribe = vars["links"]["unsubscribe"].as_str().expect("unsubscribe link");
                if MARKETING.contains(id) {
                    assert!(
                        html.contains(&format!("href=\"{unsubscribe}\"")),
                        "{id}: no unsubscribe link"
                    );
                    assert!(html.contains(">Unsubscribe</a>"), "{id}: no unsubscribe link text");
                    assert!(
                        rendered.text.contains(&format!("Unsubscribe: {unsubscribe}")),
                        "{id}: text"
                    );
                }
            }
            Some(Channel::Sms) => {
                assert_eq!((rendered.subject.as_deref(), rendered.html.as_deref()), (None, None));
                assert!(rendered.text.contains("STOP"), "{id}: SMS without opt-out");
                assert!(
                    rendered.text.chars().count() <= 320,
                    "{id}: SMS longer than two segments"
                );
            }
            Some(Channel::Push) => {
                assert!(rendered.subject.is_some_and(|t| !t.is_empty()), "{id}: push title");
                assert_eq!(rendered.html, None);
            }
            None => panic!("{id}: no channel"),
        }
        assert!(
            !rendered.text.contains("{{") && !rendered.text.contains("{%"),
            "{id}: Liquid left in text"
        );
    }
}

#[test]
fn channels_match_the_readme() {
    let readme = std::fs::read_to_string(repo_root().join("templates/README.md")).expect("templates/README.md");
    let mut seen = 0;
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, id, channel, ..] = cells.as_slice() else {
            continue;
        };
        let Some(id) = id.strip_prefix('`').and_then(|s| s.strip_suffix('`')) else {
            continue;
        };
        if !KNOWN_TEMPLATES.contains(&id) {
            continue;
        }
        let expected = match *channel {
            "email" => Channel::Email,
            "sms" => Channel::Sms,
            "push" => Channel::Push,
            other => panic!("{id}: unknown channel {other} in README"),
        };
        assert_eq!(channel_of(id), Some(expected), "{id}");
        seen += 1;
    }
    assert_eq!(seen, KNOWN_TEMPLATES.len());
}

#[test]
fn values_are_escaped_in_html_only() {
    let mut vars = sample("welcome");
    vars["customer"]["first_name"] = json!("<script>alert(1)</script> & \"Bo\" 'B'");
    let r = render("welcome", &vars).expect("render");
    let html = r.html.expect("html");
    assert!(!html.contains("<script>"), "unescaped script in HTML");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Bo&quot; &#39;B&#39;"));
    assert!(r.text.contains("<script>alert(1)</script> & \"Bo\" 'B'"));
    assert!(r
        .subject
        .expect("subject")
        .contains("<script>alert(1)</script> & \"Bo\""));
}

#[test]
fn values_are_escaped_in_attributes_and_loops() {
    let mut vars = sample("abandoned-cart-reminder");
    vars["data"]["items"][0]["name"] = json!("<b>Bold</b>");
    vars["data"]["cart_id"] = json!("x\"><img src=x onerror=alert(1)>");
    let html = render("abandoned-cart-reminder", &vars)
        .expect("render")
        .html
        .expect("html");
    assert!(html.contains("&lt;b&gt;Bold&lt;/b&gt;"));
    assert!(!html.contains("<img src=x"), "attribute breakout");
    assert!(html.contains("x&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
}

#[test]
fn sms_and_push_are_not_escaped() {
    let mut vars = sample("checkout-abandonment-sms");
    vars["customer"]["first_name"] = json!("Tom & Jerry");
    assert!(render("checkout-abandonment-sms", &vars)
        .expect("sms")
        .text
        .starts_with("The Shop: Tom & Jerry,"));
    let mut vars = sample("order-shipped-push");
    vars["data"]["carrier"] = json!("A&B <Express>");
    let push = render("order-shipped-push", &vars).expect("push");
    assert!(push.text.contains("with A&B <Express>."), "{}", push.text);
}

#[test]
fn a_missing_variable_is_named() {
    let mut vars = sample("welcome");
    vars["customer"].as_object_mut().expect("customer").remove("first_name");
    let err = render("welcome", &vars).expect_err("must fail");
    // The HTML part renders first; the line is the first that reads it.
    let (parts, _) = shipped_parts("welcome").expect("shipped");
    let first_read = parts
        .mjml
        .unwrap_or_default()
        .lines()
        .position(|l| l.contains("customer.first_name"))
        .map(|i| i + 1);
    assert!(first_read.is_some());
    assert_eq!(
        err,
        RenderError::MissingVariable {
            template: "welcome".into(),
            variable: "customer.first_name".into(),
            part: "body.mjml",
            line: first_read,
        }
    );
    assert!(!err.is_retryable());

    let mut vars = sample("order-confirmation");
    vars.as_object_mut().expect("vars").remove("links");
    assert!(matches!(
        render("order-confirmation", &vars),
        Err(RenderError::MissingVariable { variable, .. }) if variable == "links"
    ));

    let mut vars = sample("abandoned-cart-reminder");
    vars["data"]["items"][1]
        .as_object_mut()
        .expect("item")
        .remove("quantity");
    assert!(matches!(
        render("abandoned-cart-reminder", &vars),
        Err(RenderError::MissingVariable { variable, .. }) if variable == "item.quantity"
    ));

    let mut vars = sample("checkout-abandonment-sms");
    vars["data"].as_object_mut().expect("data").remove("cart_id");
    assert!(matches!(
        render("checkout-abandonment-sms", &vars),
        Err(RenderError::MissingVariable { variable, .. }) if variable == "data.cart_id"
    ));
}

#[test]
fn optional_values_may_be_absent() {
    let mut vars = sample("order-shipped");
    let data = vars["data"].as_object_mut().expect("data");
    for key in ["carrier", "tracking_number", "tracking_url", "estimated_delivery"] {
        data.remove(key);
    }
    let r = render("order-shipped", &vars).expect("render");
    assert!(r.text.contains("View your order: https://shop.example/account/orders/"));
}

#[test]
fn mjml_becomes_html_with_the_content() {
    let r = render("order-confirmation", &sample("order-confirmation")).expect("render");
    let html = r.html.expect("html");
    assert!(html.contains("<html"));
    assert!(html.contains("Merino crew-neck sweater"));
    assert!(html.contains("€108.00"));
    assert!(html.contains("€29.00"), "line total of two socks");
    assert!(html.contains("href=\"https://shop.example/account/orders/ord_01JD7W1C3E5G7J9L1N3Q5S7U9W\""));
    assert_eq!(
        r.subject.as_deref(),
        Some("Order ord_01JD7W1C3E5G7J9L1N3Q5S7U9W confirmed: thank you, Ada!")
    );
    assert!(r.text.contains("- Merino crew-neck sweater x 1: €79.00\n"));
    assert!(r.text.ends_with('\n') && !r.text.contains("\n\n\n"));
}

#[test]
fn unknown_templates_and_bad_variables() {
    assert_eq!(channel_of("nope"), None);
    assert_eq!(
        render("nope", &json!({})),
        Err(RenderError::UnknownTemplate("nope".into()))
    );
    assert_eq!(sample_data("nope"), Err(RenderError::UnknownTemplate("nope".into())));
    assert!(matches!(
        render("welcome", &json!([1])),
        Err(RenderError::InvalidVariables { .. })
    ));
    let mut vars = sample("payment-failed");
    vars["data"]["amount_minor"] = json!("lots");
    assert!(matches!(
        render("payment-failed", &vars),
        Err(RenderError::Invalid {
            part: "subject.liquid" | "body.mjml" | "text.liquid",
            ..
        })
    ));
}

#[test]
fn preview_applies_a_merge_patch() {
    let (channel, r) = preview("welcome", Some(&json!({ "customer": { "first_name": "Grace" } }))).expect("preview");
    assert_eq!(channel, Channel::Email);
    assert_eq!(r.subject.as_deref(), Some("Welcome, Grace!"));
    assert!(matches!(
        preview("welcome", Some(&json!({ "customer": { "first_name": null } }))),
        Err(RenderError::MissingVariable { variable, .. }) if variable == "customer.first_name"
    ));
}

#[test]
fn money_formats_minor_units() {
    assert_eq!(format_money(5990, "EUR"), "€59.90");
    assert_eq!(format_money(5, "usd"), "$0.05");
    assert_eq!(format_money(-1250, "GBP"), "-£12.50");
    assert_eq!(format_money(1500, "JPY"), "¥1500");
    assert_eq!(format_money(1999, "CHF"), "19.99 CHF");
}

#[test]
fn samples_have_the_shape_of_variables() {
    let request: crate::messaging::events::MessageRequest = serde_json::from_value(json!({
        "message_id": "m-1", "instance_id": "i-1", "campaign_id": "welcome", "campaign_version": 1,
        "step_id": "welcome", "customer_id": "c-1", "channel": "email", "template": "welcome",
        "category": "marketing", "data": { "email": "ada@example.com" }
    }))
    .expect("request");
    let links = Links {
        unsubscribe: "https://crm.example/u/t".into(),
        preferences: "https://crm.example/u/t".into(),
        shop: "https://shop.example/".into(),
    };
    let vars = variables("Ada", "Lovelace", &request, &links);
    assert_eq!(vars["links"]["shop"], "https://shop.example");
    assert_eq!(vars["data"]["email"], "ada@example.com");
    let shape = |v: &Value| -> Vec<(String, Vec<String>)> {
        let Value::Object(top) = v else { panic!("not an object") };
        top.iter()
            // `discount` is there only on a message that carries a code (decision 0074).
            .filter(|(k, _)| k.as_str() != "data" && k.as_str() != "discount")
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default(),
                )
            })
            .collect()
    };
    for id in KNOWN_TEMPLATES {
        let sample = sample(id);
        assert_eq!(shape(&sample), shape(&vars), "{id}");
        assert!(sample["data"].is_object(), "{id}");
        assert_eq!(
            sample["campaign"]["id"].as_str().map(str::is_empty),
            Some(false),
            "{id}"
        );
    }
    assert!(render("welcome", &vars).is_ok());
}

#[test]
fn a_missing_filter_argument_is_named() {
    let mut vars = sample("payment-failed");
    vars["data"].as_object_mut().expect("data").remove("currency");
    assert!(matches!(
        render("payment-failed", &vars),
        Err(RenderError::MissingVariable { variable, .. }) if variable == "data.currency"
    ));
    let mut vars = sample("payment-failed");
    vars.as_object_mut().expect("vars").remove("data");
    assert!(matches!(
        render("payment-failed", &vars),
        Err(RenderError::MissingVariable { variable, .. }) if variable == "data"
    ));
}

fn compile_sms(text: &'static str) -> Result<Compiled, RenderError> {
    let parser = parser().expect("the parser builds");
    compile(
        &parser,
        &Source {
            id: "custom",
            parts: Parts::Sms { text },
            sample: "{}",
        },
    )
}

#[test]
fn the_filters_left_out_fail_to_parse_naming_the_filter() {
    // `date` and `strip_html` link the regex crates (decision 0062); a
    // template using one is refused when parsed, never a panic.
    for (filter, text) in [
        ("date", "{{ data.at | date: \"%Y-%m-%d\" }}"),
        ("strip_html", "{{ data.note | strip_html }}"),
    ] {
        match compile_sms(text) {
            Err(RenderError::Invalid {
                template,
                part,
                message,
                ..
            }) => {
                assert_eq!((template.as_str(), part), ("custom", "sms.liquid"));
                assert!(
                    message.contains("Unknown filter") && message.contains(filter),
                    "{message}"
                );
            }
            Err(other) => panic!("{filter}: {other}"),
            Ok(_) => panic!("{filter} parsed"),
        }
    }
}

#[test]
fn the_standard_tags_and_filters_kept_still_work() {
    let compiled = compile_sms(
        "{% assign n = data.items | size %}{% capture c %}{{ data.name | downcase | capitalize }}{% endcapture %}\
         {{ c }} {{ n | times: 2 | plus: 1 }} {{ data.items | join: \"+\" | upcase }} \
         {{ data.missing | default: \"none\" }} {{ \"a b&c\" | url_encode }} {{ \"<b>\" | escape }} \
         {% unless false %}{{ data.name | truncate: 4 }}{% endunless %} {{ 10990 | money: \"EUR\" }}",
    )
    .expect("parses");
    let Compiled::Sms { text } = compiled else {
        panic!("an SMS template")
    };
    let vars = json!({"data": {"name": "ALICE", "items": ["x", "y"], "missing": null}});
    let globals = to_globals("custom", &vars).expect("an object");
    assert_eq!(
        run("custom", &text, &globals).expect("renders"),
        "Alice 5 X+Y none a%20b%26c &lt;b&gt; A... €109.90"
    );
}

/// An email template's parts as `PUT /templates/{id}` stores them.
fn email_parts(subject: &str, mjml: &str, text: &str) -> TemplateParts {
    TemplateParts {
        channel: Channel::Email,
        subject: Some(subject.into()),
        mjml: Some(mjml.into()),
        text: text.into(),
    }
}

const MJML: &str = "<mjml>\n  <mj-body>\n    <mj-section>\n      <mj-column>\n        <mj-text>Hi {{ customer.first_name }}</mj-text>\n      </mj-column>\n    </mj-section>\n  </mj-body>\n</mjml>\n";

#[test]
fn a_stored_version_renders_like_a_shipped_one() {
    let parts = email_parts(
        "Spring sale, {{ customer.first_name }}!",
        MJML,
        "Hi {{ customer.first_name }}",
    );
    let template = compile_template("spring-sale", 3, &parts).expect("compiles");
    assert_eq!(
        (template.id(), template.version(), template.channel()),
        ("spring-sale", 3, Channel::Email)
    );
    let r = render_compiled(&template, &json!({ "customer": { "first_name": "<Ada>" } })).expect("renders");
    assert_eq!(r.subject.as_deref(), Some("Spring sale, <Ada>!"));
    assert!(r.html.as_deref().is_some_and(|h| h.contains("Hi &lt;Ada&gt;")), "{r:?}");
    assert_eq!(r.text, "Hi <Ada>\n");
    // A shipped template is the same thing at version 1.
    let (parts, sample) = shipped_parts("welcome").expect("shipped");
    let stored = compile_template("welcome", 1, &parts).expect("compiles");
    let shipped = shipped_template("welcome").expect("shipped");
    assert_eq!(shipped.version(), 1);
    assert_eq!(render_compiled(&stored, &sample), render("welcome", &sample));
}

#[test]
fn a_stored_version_s_errors_name_the_field_and_the_line() {
    let vars = json!({ "customer": { "first_name": "Ada" } });
    // Liquid that does not parse: the part and the line the parser reports.
    let broken = email_parts("Hi", MJML, "Hello\n\n{{ customer.first_name \nBye");
    match compile_template("t", 1, &broken) {
        Err(RenderError::Invalid { part, line, .. }) => assert_eq!((part, line), ("text", Some(3))),
        other => panic!("{other:?}"),
    }
    // An unknown filter is found in its part.
    let broken = email_parts("Hi", MJML, "Hello\n{{ customer.first_name | shout }}");
    match compile_template("t", 1, &broken) {
        Err(RenderError::Invalid {
            part, line, message, ..
        }) => {
            assert_eq!((part, line), ("text", Some(2)), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // MJML that does not parse: the line as written.
    let bad_mjml = MJML.replace("<mj-text>Hi", "<mj-text <b>Hi");
    let template = compile_template("t", 1, &email_parts("Hi", &bad_mjml, "x")).expect("Liquid parses");
    match render_compiled(&template, &vars) {
        Err(RenderError::Invalid { part, line, .. }) => assert_eq!((part, line), ("mjml", Some(5))),
        other => panic!("{other:?}"),
    }
    // A filter that fails at render time: the line that uses it.
    let template =
        compile_template("t", 1, &email_parts("Hi", MJML, "Hi\n\n{{ 'a' | money: 'EUR' }}")).expect("parses");
    match render_compiled(&template, &vars) {
        Err(RenderError::Invalid { part, line, .. }) => assert_eq!((part, line), ("text", Some(3))),
        other => panic!("{other:?}"),
    }
    // A variable the sample lacks: the part and the line that reads it.
    let template = compile_template("t", 1, &email_parts("Hi", MJML, "Hi\n{{ data.code }}")).expect("parses");
    match render_compiled(&template, &vars) {
        Err(RenderError::MissingVariable {
            part, line, variable, ..
        }) => {
            assert_eq!((part, line, variable.as_str()), ("text", Some(2), "data"))
        }
        other => panic!("{other:?}"),
    }
    // Parts a channel does not take.
    let sms_with_subject = TemplateParts {
        channel: Channel::Sms,
        subject: Some("x".into()),
        mjml: None,
        text: "x".into(),
    };
    assert!(matches!(
        compile_template("t", 1, &sms_with_subject),
        Err(RenderError::Invalid { part: "subject", .. })
    ));
    let email_without_mjml = TemplateParts {
        mjml: None,
        ..email_parts("Hi", MJML, "x")
    };
    assert!(matches!(
        compile_template("t", 1, &email_without_mjml),
        Err(RenderError::Invalid { part: "mjml", .. })
    ));
}
