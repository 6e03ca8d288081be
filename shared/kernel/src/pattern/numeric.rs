//! `{"numeric": [...]}` ranges and the number rules shared with `anything-but`.
//!
//! EventBridge (its engine, aws/event-ruler) compares numbers in a fixed-point
//! form: operands must lie in [-5e9, 5e9] and have at most six digits after
//! the decimal point. Event values outside that range never satisfy a numeric
//! condition.

use super::error::{index_path, PatternError};
use serde_json::{Number, Value};

/// The largest magnitude numeric matching supports.
pub const NUMERIC_LIMIT: f64 = 5e9;
/// The most digits after the decimal point a numeric operand may have.
pub const MAX_DECIMALS: usize = 6;

/// One bound of a range: the value and whether it is included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bound {
    pub value: f64,
    pub inclusive: bool,
}

/// A numeric range; `=` is the range `[v, v]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NumericRange {
    pub lower: Option<Bound>,
    pub upper: Option<Bound>,
}

impl NumericRange {
    pub fn contains(&self, value: f64) -> bool {
        if !(-NUMERIC_LIMIT..=NUMERIC_LIMIT).contains(&value) {
            return false;
        }
        let above = match self.lower {
            None => true,
            Some(b) if b.inclusive => value >= b.value,
            Some(b) => value > b.value,
        };
        let below = match self.upper {
            None => true,
            Some(b) if b.inclusive => value <= b.value,
            Some(b) => value < b.value,
        };
        above && below
    }

    /// Parses the operand of `numeric`: `["=", v]`, `[">"|">=", v]`,
    /// `["<"|"<=", v]` or `[">"|">=", low, "<"|"<=", high]` with low < high.
    pub fn parse(operand: &Value, path: &str) -> Result<Self, PatternError> {
        const OP: &str = "numeric";
        let Value::Array(items) = operand else {
            return Err(PatternError::operand(
                path,
                OP,
                "the value of numeric must be an array such as [\">\", 0, \"<=\", 5]",
            ));
        };
        if items.is_empty() {
            return Err(PatternError::EmptyArray { path: path.to_string() });
        }
        let operator = |i: usize| -> Result<&str, PatternError> {
            match items.get(i) {
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(other) => Err(PatternError::operand(
                    &index_path(path, i),
                    OP,
                    format!(
                        "expected an operator (\"<\", \"<=\", \"=\", \">\", \">=\"), found {}",
                        super::error::describe(other)
                    ),
                )),
                None => Err(PatternError::operand(path, OP, "an operator is missing at the end")),
            }
        };
        let number = |i: usize, op: &str| -> Result<f64, PatternError> {
            match items.get(i) {
                Some(Value::Number(n)) => check_operand(n, &index_path(path, i), OP),
                Some(other) => Err(PatternError::operand(
                    &index_path(path, i),
                    OP,
                    format!(
                        "the value after \"{op}\" must be a number, found {}",
                        super::error::describe(other)
                    ),
                )),
                None => Err(PatternError::operand(
                    path,
                    OP,
                    format!("\"{op}\" must be followed by a number"),
                )),
            }
        };
        let end = |i: usize, why: &str| -> Result<(), PatternError> {
            if items.len() > i {
                Err(PatternError::operand(&index_path(path, i), OP, why))
            } else {
                Ok(())
            }
        };

        let first = operator(0)?;
        let value = number(1, first)?;
        match first {
            "=" => {
                end(2, "\"=\" cannot be combined with other operators")?;
                let b = Some(Bound { value, inclusive: true });
                Ok(NumericRange { lower: b, upper: b })
            }
            "<" | "<=" => {
                end(
                    2,
                    "too many elements: an upper bound must come last, as in [\">\", 0, \"<\", 5]",
                )?;
                Ok(NumericRange {
                    lower: None,
                    upper: Some(Bound {
                        value,
                        inclusive: first == "<=",
                    }),
                })
            }
            ">" | ">=" => {
                let lower = Some(Bound {
                    value,
                    inclusive: first == ">=",
                });
                if items.len() == 2 {
                    return Ok(NumericRange { lower, upper: None });
                }
                let second = operator(2)?;
                if second != "<" && second != "<=" {
                    return Err(PatternError::operand(
                        &index_path(path, 2),
                        OP,
                        format!("a lower bound can only be followed by \"<\" or \"<=\", found \"{second}\""),
                    ));
                }
                let top = number(3, second)?;
                end(4, "too many elements in numeric range expression")?;
                if top <= value {
                    return Err(PatternError::operand(
                        path,
                        OP,
                        format!("the lower bound {value} must be less than the upper bound {top}"),
                    ));
                }
                Ok(NumericRange {
                    lower,
                    upper: Some(Bound {
                        value: top,
                        inclusive: second == "<=",
                    }),
                })
            }
            other => Err(PatternError::operand(
                &index_path(path, 0),
                OP,
                format!("unknown numeric operator \"{other}\" (use \"<\", \"<=\", \"=\", \">\" or \">=\")"),
            )),
        }
    }
}

/// Checks a number used as an operand (numeric ranges, `anything-but`
/// numbers) against the limits of numeric matching, and returns it.
pub(crate) fn check_operand(n: &Number, path: &str, operator: &str) -> Result<f64, PatternError> {
    let Some(value) = n.as_f64().filter(|v| v.is_finite()) else {
        return Err(PatternError::operand(
            path,
            operator,
            format!("{n} is not a finite number"),
        ));
    };
    if !(-NUMERIC_LIMIT..=NUMERIC_LIMIT).contains(&value) {
        return Err(PatternError::operand(
            path,
            operator,
            format!("{n} is out of range: numbers must be between -5e9 and 5e9 inclusive"),
        ));
    }
    if decimals(n, value) > MAX_DECIMALS {
        return Err(PatternError::operand(
            path,
            operator,
            format!("{n} has more than {MAX_DECIMALS} digits after the decimal point"),
        ));
    }
    Ok(value)
}

/// Digits after the decimal point in the shortest form of the number.
fn decimals(n: &Number, value: f64) -> usize {
    if n.is_i64() || n.is_u64() {
        return 0;
    }
    // `Display` for f64 prints the shortest round-trip form, never in
    // exponent notation: 1e-7 is "0.0000001".
    let text = value.to_string();
    text.split_once('.').map_or(0, |(_, frac)| frac.len())
}

/// Whether two JSON numbers are equal as numbers (300 == 300.0), exactly for
/// integers and as f64 otherwise.
pub(crate) fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn range(v: Value) -> NumericRange {
        match NumericRange::parse(&v, "$.n[0].numeric") {
            Ok(r) => r,
            Err(e) => panic!("{v} should parse: {e}"),
        }
    }

    fn rejects(v: Value) -> String {
        match NumericRange::parse(&v, "$.n[0].numeric") {
            Ok(r) => panic!("{v} should be rejected, got {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn single_operators() {
        assert!(range(json!(["<", 5])).contains(4.999));
        assert!(!range(json!(["<", 5])).contains(5.0));
        assert!(range(json!(["<=", 5])).contains(5.0));
        assert!(range(json!([">", 5])).contains(5.000001));
        assert!(!range(json!([">", 5])).contains(5.0));
        assert!(range(json!([">=", 5])).contains(5.0));
        assert!(range(json!(["=", 301.8])).contains(301.8));
        assert!(!range(json!(["=", 301.8])).contains(301.80001));
        assert!(range(json!(["=", 3.018e2])).contains(301.8));
    }

    #[test]
    fn ranges_respect_open_and_closed_ends() {
        let r = range(json!([">", 0, "<=", 5]));
        assert!(!r.contains(0.0));
        assert!(r.contains(0.5));
        assert!(r.contains(5.0));
        assert!(!r.contains(5.1));
        let r = range(json!([">=", -1.5, "<", 2]));
        assert!(r.contains(-1.5));
        assert!(!r.contains(2.0));
        assert!(!r.contains(-1.6));
    }

    #[test]
    fn values_outside_the_supported_range_never_match() {
        assert!(!range(json!([">", 0])).contains(6e9));
        assert!(!range(json!(["<", 0])).contains(-6e9));
        assert!(range(json!([">", 0])).contains(5e9));
    }

    #[test]
    fn malformed_ranges_are_rejected_with_a_reason() {
        assert!(rejects(json!([])).contains("empty arrays"));
        assert!(rejects(json!("<")).contains("must be an array"));
        assert!(rejects(json!([">", 0, ">", 0])).contains("can only be followed by"));
        assert!(rejects(json!([">", 0, "<"])).contains("must be followed by a number"));
        assert!(rejects(json!(["<", 5, ">", 0])).contains("upper bound must come last"));
        assert!(rejects(json!(["=", 5, "<", 10])).contains("cannot be combined"));
        assert!(rejects(json!([">", 5, "<", 5])).contains("must be less than"));
        assert!(rejects(json!([">=", 5, "<=", 5])).contains("must be less than"));
        assert!(rejects(json!(["<", "5"])).contains("must be a number"));
        assert!(rejects(json!([5, "<"])).contains("expected an operator"));
        assert!(rejects(json!(["!=", 5])).contains("unknown numeric operator"));
        assert!(rejects(json!([">", 0, "<", 5, "<", 6])).contains("too many elements"));
        assert!(rejects(json!([">", 1e10])).contains("out of range"));
        assert!(rejects(json!([">", 0.1234567])).contains("more than 6 digits"));
        // The error names the element at fault.
        let e = NumericRange::parse(&json!([">", 0, "<", "x"]), "$.n[0].numeric");
        assert_eq!(e.err().map(|e| e.path().to_string()), Some("$.n[0].numeric[3]".into()));
    }

    #[test]
    fn six_decimals_are_allowed() {
        assert!(range(json!([">", 0.123456])).contains(0.2));
        assert!(range(json!([">", -5e9, "<", 5e9])).contains(0.0));
    }

    #[test]
    fn numbers_compare_by_value() {
        let n = |v: Value| match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        };
        assert!(numbers_equal(&n(json!(300)), &n(json!(300.0))));
        assert!(numbers_equal(&n(json!(-3)), &n(json!(-3))));
        assert!(!numbers_equal(&n(json!(-3)), &n(json!(3))));
        assert!(numbers_equal(&n(json!(u64::MAX)), &n(json!(u64::MAX))));
        assert!(!numbers_equal(&n(json!(123456789012_u64)), &n(json!(123456789013_u64))));
    }
}
