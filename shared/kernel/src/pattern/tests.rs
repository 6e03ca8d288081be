//! Pattern-level tests of the tricky parts. The conformance suite
//! (tests/pattern_conformance.rs) covers the cases validated against AWS.

use super::*;
use serde_json::json;

fn pattern(v: Value) -> EventPattern {
    match EventPattern::from_value(&v) {
        Ok(p) => p,
        Err(e) => panic!("pattern {v} should be valid: {e}"),
    }
}

fn invalid(v: Value) -> PatternError {
    match EventPattern::from_value(&v) {
        Ok(p) => panic!("pattern {v} should be invalid, got {p:?}"),
        Err(e) => e,
    }
}

fn event(detail: Value) -> Value {
    json!({
        "version": "0",
        "id": "1",
        "source": "crm.commerce",
        "detail-type": "OrderPlaced",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": detail
    })
}

#[test]
fn numeric_ranges() {
    let p = pattern(json!({"detail": {"total": [{"numeric": [">", 0, "<=", 5]}]}}));
    assert!(!p.matches(&event(json!({"total": 0}))));
    assert!(p.matches(&event(json!({"total": 0.000001}))));
    assert!(p.matches(&event(json!({"total": 5}))));
    assert!(p.matches(&event(json!({"total": 5.0}))));
    assert!(!p.matches(&event(json!({"total": 5.000001}))));
    assert!(!p.matches(&event(json!({"total": "3"}))), "strings are not numbers");
    assert!(!p.matches(&event(json!({"total": null}))));
    assert!(!p.matches(&event(json!({}))));
    assert!(p.matches(&event(json!({"total": [9, 3]}))), "any element of an array");

    let eq = pattern(json!({"detail": {"x": [{"numeric": ["=", 3.018e2]}]}}));
    assert!(eq.matches(&event(json!({"x": 301.8}))));
    let open = pattern(json!({"detail": {"x": [{"numeric": [">=", -10.5]}]}}));
    assert!(open.matches(&event(json!({"x": -10.5}))));
    assert!(!open.matches(&event(json!({"x": -10.6}))));

    // Several numeric alternatives are OR-ed; two conditions on one field
    // are written as one range.
    let either = pattern(json!({"detail": {"x": [{"numeric": ["<", 0]}, {"numeric": [">", 10]}]}}));
    assert!(either.matches(&event(json!({"x": -1}))));
    assert!(either.matches(&event(json!({"x": 11}))));
    assert!(!either.matches(&event(json!({"x": 5}))));
}

#[test]
fn exact_numbers_compare_by_value() {
    let p = pattern(json!({"detail": {"n": [300]}}));
    assert!(p.matches(&event(json!({"n": 300.0}))));
    assert!(p.matches(&event(json!({"n": 3e2}))));
    assert!(!p.matches(&event(json!({"n": "300"}))));
    // Large integers such as account ids compare exactly.
    let acct = pattern(json!({"account": [123456789012_u64]}));
    assert!(!acct.matches(&event(json!({}))), "the account is a string in events");
    let acct = pattern(json!({"detail": {"a": [123456789012_u64]}}));
    assert!(acct.matches(&event(json!({"a": 123456789012_u64}))));
    assert!(!acct.matches(&event(json!({"a": 123456789013_u64}))));
}

#[test]
fn cidr_v4_and_v6() {
    let p = pattern(json!({"detail": {"ip": [{"cidr": "2001:db8:1234:1a00::/64"}, {"cidr": "10.0.0.0/8"}]}}));
    assert!(p.matches(&event(json!({"ip": "2001:db8:1234:1a00:dead:beef::1"}))));
    assert!(p.matches(&event(json!({"ip": "2001:0DB8:1234:1A00:0000:0000:0000:0000"}))));
    assert!(!p.matches(&event(json!({"ip": "2001:db8:1234:1a01::"}))));
    assert!(p.matches(&event(json!({"ip": "10.200.3.4"}))));
    assert!(!p.matches(&event(json!({"ip": "11.0.0.1"}))));
    assert!(!p.matches(&event(json!({"ip": "10.0.0.256"}))));
    assert!(!p.matches(&event(json!({"ip": 10}))));

    let e = invalid(json!({"detail": {"ip": [{"cidr": "10.0.0.0/33"}]}}));
    assert_eq!(e.path(), "$.detail.ip[0].cidr");
    invalid(json!({"detail": {"ip": [{"cidr": "2001:db8::/129"}]}}));
    invalid(json!({"detail": {"ip": [{"cidr": ["10.0.0.0/8"]}]}}));

    // An exact IP value matches any spelling of that address.
    let exact = pattern(json!({"detail": {"ip": ["2001:db8::1"]}}));
    assert!(exact.matches(&event(json!({"ip": "2001:0db8:0:0:0:0:0:1"}))));
}

#[test]
fn wildcard_escaping() {
    // JSON "a\\*b" is the wildcard a\*b, which matches the text a*b only.
    let p = pattern(json!({"detail": {"f": [{"wildcard": "a\\*b*"}]}}));
    assert!(p.matches(&event(json!({"f": "a*b-anything"}))));
    assert!(!p.matches(&event(json!({"f": "axb"}))));
    let backslash = pattern(json!({"detail": {"f": [{"wildcard": "C:\\\\*"}]}}));
    assert!(backslash.matches(&event(json!({"f": "C:\\Windows"}))));
    assert!(!backslash.matches(&event(json!({"f": 3}))));

    let e = invalid(json!({"detail": {"f": [{"wildcard": "a\\b"}]}}));
    assert!(e.to_string().contains("invalid escape"), "{e}");
    let e = invalid(json!({"detail": {"f": [{"wildcard": "a**"}]}}));
    assert!(e.to_string().contains("consecutive"), "{e}");
    let e = invalid(json!({"detail": {"f": [{"anything-but": {"wildcard": ["ok*", "a**"]}}]}}));
    assert_eq!(e.path(), "$.detail.f[0].anything-but.wildcard[1]");
}

#[test]
fn or_at_any_level() {
    let p = pattern(json!({
        "source": ["crm.commerce"],
        "detail": {
            "$or": [
                {"total": [{"numeric": [">", 100]}]},
                {"vip": [true], "$or": [{"country": ["FR"]}, {"country": ["BE"]}]}
            ]
        }
    }));
    assert!(p.matches(&event(json!({"total": 150}))));
    assert!(p.matches(&event(json!({"total": 1, "vip": true, "country": "BE"}))));
    assert!(!p.matches(&event(json!({"total": 1, "vip": true, "country": "DE"}))));
    assert!(!p.matches(&event(json!({"vip": false, "country": "FR"}))));

    let top = pattern(json!({"$or": [{"source": ["a"]}, {"detail-type": ["OrderPlaced"]}]}));
    assert!(top.matches(&event(json!({}))));
    let neither = pattern(json!({"$or": [{"source": ["a"]}, {"source": ["b"]}]}));
    assert!(!neither.matches(&event(json!({}))));

    assert!(matches!(
        invalid(json!({"$or": [{"source": ["a"]}]})),
        PatternError::InvalidOr { .. }
    ));
    assert!(matches!(
        invalid(json!({"$or": {"source": ["a"]}})),
        PatternError::InvalidOr { .. }
    ));
    assert!(matches!(
        invalid(json!({"$or": [{"source": ["a"]}, "x"]})),
        PatternError::NotAnObject { .. }
    ));
    assert!(matches!(
        invalid(json!({"$or": [{"source": ["a"]}, {}]})),
        PatternError::EmptyObject { .. }
    ));
    assert!(matches!(
        invalid(json!({"$or": [{"prefix": ["a"]}, {"source": ["b"]}]})),
        PatternError::ReservedFieldInOr { .. }
    ));
    // A field constrained both outside and inside $or is ambiguous.
    assert!(matches!(
        invalid(json!({"source": ["a"], "$or": [{"source": ["b"]}, {"id": ["1"]}]})),
        PatternError::DuplicateField { .. }
    ));
}

#[test]
fn or_combinations_are_bounded() {
    // Eleven independent two-way $or lists: 2048 alternatives.
    let mut detail = serde_json::Map::new();
    for i in 0..11 {
        detail.insert(format!("f{i}"), json!({"$or": [{"a": [1]}, {"b": [2]}]}));
    }
    let e = invalid(json!({ "detail": detail }));
    assert!(matches!(e, PatternError::TooComplex { .. }), "{e}");
    detail.remove("f10");
    pattern(json!({ "detail": detail }));
}

#[test]
fn anything_but_variants() {
    let cases = [
        (json!("init"), json!("running"), json!("init")),
        (json!(["a", "b"]), json!("c"), json!("b")),
        (json!(0), json!(1), json!(0)),
        (json!([100, 200]), json!(150), json!(200.0)),
        (json!({"prefix": "us-"}), json!("eu-west-1"), json!("us-east-1")),
        (
            json!({"prefix": ["us-", "eu-"]}),
            json!("ap-south-1"),
            json!("eu-west-1"),
        ),
        (json!({"suffix": ".png"}), json!("a.jpg"), json!("a.png")),
        (json!({"equals-ignore-case": "Init"}), json!("running"), json!("INIT")),
        (json!({"equals-ignore-case": ["a", "B"]}), json!("c"), json!("b")),
        (json!({"wildcard": "*/lib/*"}), json!("/usr/bin/x"), json!("/usr/lib/x")),
    ];
    for (operand, kept, excluded) in cases {
        let p = pattern(json!({"detail": {"v": [{"anything-but": operand}]}}));
        assert!(p.matches(&event(json!({"v": kept}))), "{operand}: {kept} should match");
        assert!(
            !p.matches(&event(json!({"v": excluded}))),
            "{operand}: {excluded} should not"
        );
        assert!(
            !p.matches(&event(json!({}))),
            "{operand}: a missing field never matches"
        );
        assert!(p.matches(&event(json!({"v": null}))), "{operand}: null is anything but");
    }
    // With an array value, any element that is not excluded matches.
    let p = pattern(json!({"detail": {"v": [{"anything-but": [100, 500]}]}}));
    assert!(p.matches(&event(json!({"v": [100, 50]}))));
    assert!(!p.matches(&event(json!({"v": [100, 500]}))));

    for bad in [
        json!(null),
        json!(true),
        json!([]),
        json!(["a", 1]),
        json!([1, "a"]),
        json!(["a", null]),
        json!({"prefix": ""}),
        json!({"prefix": ["a", ""]}),
        json!({"suffix": 1}),
        json!({"prefix": {"equals-ignore-case": "a"}}),
        json!({"equals-ignore-case": [1]}),
        json!({"numeric": [">", 1]}),
        json!({"prefix": "a", "suffix": "b"}),
        json!([1e10]),
    ] {
        invalid(json!({"detail": {"v": [{"anything-but": bad}]}}));
    }
}

#[test]
fn exists_false_on_missing_versus_null() {
    let absent = pattern(json!({"detail": {"c": [{"exists": false}]}}));
    assert!(absent.matches(&event(json!({}))));
    assert!(
        !absent.matches(&event(json!({"c": null}))),
        "null is a value: the field exists"
    );
    assert!(!absent.matches(&event(json!({"c": 1}))));
    assert!(
        absent.matches(&event(json!({"c": {"nested": 1}}))),
        "exists only looks at leaves"
    );
    assert!(absent.matches(&event(json!({"c": []}))), "an empty array has no value");
    assert!(!absent.matches(&event(json!({"c": [1]}))));

    let present = pattern(json!({"detail": {"c": [{"exists": true}]}}));
    assert!(present.matches(&event(json!({"c": null}))));
    assert!(present.matches(&event(json!({"c": ""}))));
    assert!(!present.matches(&event(json!({}))));
    assert!(!present.matches(&event(json!({"c": {}}))));
    assert!(!present.matches(&event(json!({"c": []}))));

    // exists: false as one alternative among others.
    let optional = pattern(json!({"detail": {"c": [{"prefix": "x"}, {"exists": false}]}}));
    assert!(optional.matches(&event(json!({}))));
    assert!(optional.matches(&event(json!({"c": "xyz"}))));
    assert!(!optional.matches(&event(json!({"c": "abc"}))));
    assert!(optional.matches(&event(json!({"c": ["abc", "xyz"]}))));

    invalid(json!({"detail": {"c": [{"exists": "false"}]}}));
    invalid(json!({"detail": {"c": [{"EXISTS": false}]}}));
}

#[test]
fn array_consistency() {
    let p = pattern(json!({"detail": {"items": {"sku": ["A"], "qty": [2]}}}));
    assert!(p.matches(&event(
        json!({"items": [{"sku": "B", "qty": 2}, {"sku": "A", "qty": 2}]})
    )));
    assert!(
        !p.matches(&event(
            json!({"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]})
        )),
        "sku and qty come from different items"
    );
    // Fields in different arrays are independent.
    let q = pattern(json!({"detail": {"items": {"sku": ["A"]}, "tags": ["vip"]}}));
    assert!(q.matches(&event(json!({"items": [{"sku": "A"}], "tags": ["new", "vip"]}))));

    // exists: false looks only at the element the other fields chose.
    let no_gift = pattern(json!({"detail": {"items": {"sku": ["A"], "gift": [{"exists": false}]}}}));
    assert!(no_gift.matches(&event(json!({"items": [{"sku": "A"}, {"sku": "B", "gift": true}]}))));
    assert!(!no_gift.matches(&event(json!({"items": [{"sku": "A", "gift": true}, {"sku": "B"}]}))));
    // ...and across the whole array when nothing else pins an element.
    let none = pattern(json!({"detail": {"items": {"gift": [{"exists": false}]}}}));
    assert!(!none.matches(&event(json!({"items": [{"sku": "A"}, {"gift": true}]}))));
    assert!(none.matches(&event(json!({"items": [{"sku": "A"}, {"sku": "B"}]}))));

    // Nested arrays and arrays of arrays.
    let deep = pattern(json!({"detail": {"o": {"lines": {"sku": ["A"], "n": [1]}}}}));
    assert!(deep.matches(&event(json!({"o": [{"lines": [{"sku": "A", "n": 1}]}]}))));
    assert!(!deep.matches(&event(json!({"o": [{"lines": [{"sku": "A"}, {"n": 1}]}]}))));
    let flat = pattern(json!({"detail": {"m": [3]}}));
    assert!(flat.matches(&event(json!({"m": [[1, 2], [3]]}))));
}

#[test]
fn dotted_keys_equal_nested_keys() {
    let p = pattern(json!({"detail": {"state.status": ["running"]}}));
    assert!(p.matches(&event(json!({"state": {"status": "running"}}))));
    assert!(p.matches(&event(json!({"state.status": "running"}))));
    assert!(!p.matches(&event(json!({"state": {"status": {"x": "running"}}}))));
    let nested = pattern(json!({"detail": {"state": {"status": ["running"]}}}));
    assert!(nested.matches(&event(json!({"state.status": "running"}))));
    // Both spellings at once: either one may supply the value.
    assert!(nested.matches(&event(
        json!({"state.status": "stopped", "state": {"status": "running"}})
    )));
    let gone = pattern(json!({"detail": {"state": {"status": [{"exists": false}]}}}));
    assert!(!gone.matches(&event(json!({"state.status": 1}))));

    let e = invalid(json!({"detail": {"a.b": [1], "a": {"b": [2]}}}));
    assert!(
        matches!(e, PatternError::DuplicateField { ref field, .. } if field == "detail.a.b"),
        "{e}"
    );
}

#[test]
fn prefix_suffix_and_case() {
    let p = pattern(json!({"detail": {"s": [{"prefix": {"equals-ignore-case": "EventB"}}]}}));
    assert!(p.matches(&event(json!({"s": "eventbridge"}))));
    assert!(!p.matches(&event(json!({"s": "Event"}))));
    let s = pattern(json!({"detail": {"s": [{"suffix": {"equals-ignore-case": ".png"}}]}}));
    assert!(s.matches(&event(json!({"s": "A.PNG"}))));
    let empty = pattern(json!({"detail": {"s": [{"prefix": ""}]}}));
    assert!(empty.matches(&event(json!({"s": "anything"}))));
    assert!(!empty.matches(&event(json!({"s": 1}))));
    invalid(json!({"detail": {"s": [{"prefix": {"equals-ignore-case": 1}}]}}));
    invalid(json!({"detail": {"s": [{"prefix": {"suffix": "x"}}]}}));
    invalid(json!({"detail": {"s": [{"equals-ignore-case": {"prefix": "x"}}]}}));
}

#[test]
fn errors_say_what_and_where() {
    let cases = [
        (json!([]), "$", "expected a JSON object"),
        (json!({}), "$", "empty objects"),
        (json!({"detail": {}}), "$.detail", "empty objects"),
        (json!({"resources": []}), "$.resources", "empty arrays"),
        (json!({"source": "crm"}), "$.source", "[\"crm\"]"),
        (json!({"detail": {"n": [[1]]}}), "$.detail.n[0]", "match value"),
        (
            json!({"detail": {"n": [{"NUMERIC": ["=", 5]}]}}),
            "$.detail.n[0]",
            "case-sensitive",
        ),
        (
            json!({"detail": {"n": [{"contains": "x"}]}}),
            "$.detail.n[0]",
            "known operators",
        ),
        (json!({"detail": {"n": [{}]}}), "$.detail.n[0]", "exactly one operator"),
        (
            json!({"detail": {"n": [{"prefix": "a", "suffix": "b"}]}}),
            "$.detail.n[0]",
            "found 2",
        ),
        (
            json!({"detail": {"n": [{"numeric": [">", 0, "<"]}]}}),
            "$.detail.n[0].numeric",
            "followed by a number",
        ),
        (
            json!({"detail": {"state.x": [{"prefix": 1}]}}),
            "$.detail[\"state.x\"][0].prefix",
            "must be a string",
        ),
    ];
    for (v, path, text) in cases {
        let e = invalid(v.clone());
        assert_eq!(e.path(), path, "{v}: {e}");
        assert!(e.to_string().contains(text), "{v}: {e} should mention {text}");
        assert!(e.to_string().contains(path), "{v}: {e} should name {path}");
    }
    assert!(matches!(EventPattern::parse("{"), Err(PatternError::Json { .. })));
}

#[test]
fn serde_round_trip() {
    let text = r#"{"detail":{"state":[{"anything-but":["a","b"]}]},"source":["crm.customer"]}"#;
    let p = EventPattern::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let back = serde_json::to_string(&p).unwrap_or_else(|e| panic!("{e}"));
    let again: EventPattern = serde_json::from_str(&back).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p, again);
    assert_eq!(
        serde_json::from_str::<Value>(&back).ok(),
        serde_json::from_str::<Value>(text).ok()
    );
    assert_eq!(p.to_string(), p.as_value().to_string());
    let parsed: Result<EventPattern, _> = text.parse();
    assert!(parsed.is_ok());

    #[derive(Debug, serde::Deserialize)]
    struct Campaign {
        #[allow(dead_code)]
        trigger: EventPattern,
    }
    let err = serde_json::from_value::<Campaign>(json!({"trigger": {"source": "x"}}));
    let msg = err.map(|_| ()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("$.source"), "{msg}");
}

#[test]
fn non_object_events_have_no_fields() {
    let p = pattern(json!({"a": [{"exists": false}]}));
    assert!(p.matches(&json!("text")));
    assert!(p.matches(&json!(null)));
    let q = pattern(json!({"a": [1]}));
    assert!(!q.matches(&json!([{"a": 1}])));
}
