//! The value conditions of a pattern, and how one event value is tested.

use super::cidr::{same_ip, Cidr};
use super::numeric::{numbers_equal, NumericRange};
use super::wildcard::Wildcard;
use serde_json::{Number, Value};
use std::net::IpAddr;

/// One alternative in a field's value array.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Matcher {
    /// A string literal; if it is an IP address it also matches other
    /// spellings of that address.
    String {
        value: String,
        ip: Option<IpAddr>,
    },
    /// A number literal, compared by value (300 matches 300.0).
    Number(Number),
    Bool(bool),
    Null,
    /// `{"exists": true}`: any value, null included.
    Exists,
    Prefix(String),
    /// Stored lower-cased.
    PrefixIgnoreCase(String),
    Suffix(String),
    /// Stored lower-cased.
    SuffixIgnoreCase(String),
    /// Stored lower-cased.
    EqualsIgnoreCase(String),
    Wildcard(Wildcard),
    Numeric(NumericRange),
    Cidr(Cidr),
    AnythingBut(AnythingBut),
}

/// `{"anything-but": ...}`: any value that is present and not excluded.
/// Values of another type than the excluded ones (a number or null against
/// excluded strings) always match.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AnythingBut {
    Strings(Vec<String>),
    Numbers(Vec<f64>),
    Prefixes(Vec<String>),
    Suffixes(Vec<String>),
    /// Lower-cased.
    IgnoreCase(Vec<String>),
    Wildcards(Vec<Wildcard>),
}

/// Unicode-aware case folding used by every `equals-ignore-case` form.
pub(crate) fn fold(text: &str) -> String {
    text.to_lowercase()
}

impl Matcher {
    /// Whether a leaf value of the event (string, number, bool or null)
    /// satisfies this condition.
    pub fn matches(&self, value: &Value) -> bool {
        match self {
            Matcher::String { value: want, ip } => match value {
                Value::String(s) => s == want || ip.as_ref().is_some_and(|ip| same_ip(ip, s)),
                _ => false,
            },
            Matcher::Number(want) => match value {
                Value::Number(n) => numbers_equal(n, want),
                _ => false,
            },
            Matcher::Bool(want) => value.as_bool() == Some(*want),
            Matcher::Null => value.is_null(),
            Matcher::Exists => true,
            Matcher::Prefix(p) => value.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::PrefixIgnoreCase(p) => value.as_str().is_some_and(|s| fold(s).starts_with(p.as_str())),
            Matcher::Suffix(p) => value.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::SuffixIgnoreCase(p) => value.as_str().is_some_and(|s| fold(s).ends_with(p.as_str())),
            Matcher::EqualsIgnoreCase(p) => value.as_str().is_some_and(|s| fold(s) == *p),
            Matcher::Wildcard(w) => value.as_str().is_some_and(|s| w.matches(s)),
            Matcher::Numeric(range) => value
                .as_number()
                .and_then(Number::as_f64)
                .is_some_and(|n| range.contains(n)),
            Matcher::Cidr(c) => value.as_str().is_some_and(|s| c.contains(s)),
            Matcher::AnythingBut(ab) => !ab.excludes(value),
        }
    }
}

impl AnythingBut {
    fn excludes(&self, value: &Value) -> bool {
        match (self, value) {
            (AnythingBut::Strings(list), Value::String(s)) => list.iter().any(|x| x == s),
            (AnythingBut::Numbers(list), Value::Number(n)) => n.as_f64().is_some_and(|n| list.contains(&n)),
            (AnythingBut::Prefixes(list), Value::String(s)) => list.iter().any(|p| s.starts_with(p.as_str())),
            (AnythingBut::Suffixes(list), Value::String(s)) => list.iter().any(|p| s.ends_with(p.as_str())),
            (AnythingBut::IgnoreCase(list), Value::String(s)) => list.contains(&fold(s)),
            (AnythingBut::Wildcards(list), Value::String(s)) => list.iter().any(|w| w.matches(s)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wc(text: &str) -> Wildcard {
        match Wildcard::parse(text, "$", "wildcard") {
            Ok(w) => w,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn anything_but_variants() {
        let strings = Matcher::AnythingBut(AnythingBut::Strings(vec!["a".into(), "b".into()]));
        assert!(!strings.matches(&json!("a")));
        assert!(strings.matches(&json!("c")));
        assert!(strings.matches(&json!(1)), "other types are not excluded");
        assert!(strings.matches(&Value::Null), "null is anything but a string");

        let numbers = Matcher::AnythingBut(AnythingBut::Numbers(vec![100.0, 200.0]));
        assert!(!numbers.matches(&json!(100)));
        assert!(!numbers.matches(&json!(100.0)));
        assert!(numbers.matches(&json!(101)));
        assert!(numbers.matches(&json!("100")), "a string is not the number 100");

        let prefixes = Matcher::AnythingBut(AnythingBut::Prefixes(vec!["init".into()]));
        assert!(!prefixes.matches(&json!("init-x")));
        assert!(prefixes.matches(&json!("post-init")));
        assert!(prefixes.matches(&json!(12)));

        let suffixes = Matcher::AnythingBut(AnythingBut::Suffixes(vec![".txt".into()]));
        assert!(!suffixes.matches(&json!("file.txt")));
        assert!(suffixes.matches(&json!("file.txt.bak")));

        let ic = Matcher::AnythingBut(AnythingBut::IgnoreCase(vec![fold("Stopped")]));
        assert!(!ic.matches(&json!("STOPPED")));
        assert!(ic.matches(&json!("running")));

        let w = Matcher::AnythingBut(AnythingBut::Wildcards(vec![wc("*/lib/*")]));
        assert!(!w.matches(&json!("a/lib/b")));
        assert!(w.matches(&json!("a/bin/b")));
        assert!(w.matches(&json!(true)));
    }

    #[test]
    fn literals_are_type_strict() {
        let s = Matcher::String {
            value: "300".into(),
            ip: None,
        };
        assert!(s.matches(&json!("300")));
        assert!(!s.matches(&json!(300)));
        let n = Matcher::Number(serde_json::Number::from(300));
        assert!(n.matches(&json!(300.0)));
        assert!(!n.matches(&json!("300")));
        assert!(Matcher::Null.matches(&Value::Null));
        assert!(!Matcher::Null.matches(&json!("null")));
        assert!(Matcher::Bool(false).matches(&json!(false)));
        assert!(!Matcher::Bool(false).matches(&json!(0)));
    }

    #[test]
    fn ignore_case_forms() {
        assert!(Matcher::PrefixIgnoreCase(fold("EventB")).matches(&json!("eVeNtBridge")));
        assert!(Matcher::SuffixIgnoreCase(fold(".PNG")).matches(&json!("a.png")));
        assert!(Matcher::EqualsIgnoreCase(fold("ÉTÉ")).matches(&json!("été")));
        assert!(!Matcher::EqualsIgnoreCase(fold("")).matches(&json!("x")));
        assert!(!Matcher::Suffix(".PNG".into()).matches(&json!("image.png")));
    }
}
