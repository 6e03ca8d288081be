//! Provider and error texts without the recipient's address (issue 16,
//! decision 0048).
//!
//! A provider's answer is free text, and it often quotes the address it is
//! about: `550 5.1.1 <ada@example.com>: user unknown`. Where such a text is
//! kept with a customer (an event on the message stream), it is encrypted
//! under the customer's key like any personal field (`privacy::paths`).
//! Where there is no customer key to encrypt it under (a dead letter's
//! reason, a log line), [`scrub`] replaces what looks like an email address
//! with [`EMAIL_MARKER`] and what looks like a phone number with
//! [`PHONE_MARKER`], and leaves every other character as it was.
//!
//! What counts:
//! * an email address: a local part (letters, digits and `.!#$%&'*+/=?^_`
//!   `` ` ``{|}~-`, or a quoted string), `@` (or `%40`, URL-encoded), and a
//!   domain of at least two labels (`d.co.uk`); the address alone is
//!   replaced, so `<ada@x.com>`, `mailto:ada@x.com` and `"ada@x.com"` keep
//!   their brackets, scheme and quotes;
//! * a phone number: `+` and 7 to 15 digits (E.164, also written with
//!   spaces, dots, dashes or brackets between the digits: `+49 30 1234 5678`),
//!   or a national number that starts with `0` or `(0` and has 9 to 15
//!   digits (`030 1234 5678`, `(030) 123-4567`). Runs of digits glued to
//!   letters (message ids, hashes), and ordinary numbers (status codes
//!   `5.1.1`, dates, IPs, counts) are left alone.

use serde_json::Value;
use std::borrow::Cow;

/// What an email address in a scrubbed text reads as.
pub const EMAIL_MARKER: &str = "[email]";
/// What a phone number in a scrubbed text reads as.
pub const PHONE_MARKER: &str = "[phone]";

/// The fewest and most digits of a phone number (E.164 allows 15).
const PHONE_DIGITS_INTERNATIONAL: std::ops::RangeInclusive<usize> = 7..=15;
const PHONE_DIGITS_NATIONAL: std::ops::RangeInclusive<usize> = 9..=15;

/// `text` with every email address replaced by [`EMAIL_MARKER`] and every
/// phone number by [`PHONE_MARKER`] (see the module documentation for what
/// counts). Borrowed when there was nothing to replace.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut found: Vec<(usize, usize, &str)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if let Some((start, end)) = email_at(&chars, i) {
            found.push((start, end, EMAIL_MARKER));
            i = end;
            continue;
        }
        i += 1;
    }
    // Phone numbers outside the addresses found.
    let mut phones = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if found.iter().any(|(s, e, _)| (*s..*e).contains(&i)) {
            i += 1;
            continue;
        }
        if let Some(end) = phone_at(&chars, i) {
            if !found.iter().any(|(s, e, _)| i < *e && *s < end) {
                phones.push((i, end, PHONE_MARKER));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    found.extend(phones);
    if found.is_empty() {
        return Cow::Borrowed(text);
    }
    found.sort_by_key(|(s, _, _)| *s);
    let offset = |i: usize| chars.get(i).map(|(o, _)| *o).unwrap_or(text.len());
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, marker) in found {
        out.push_str(&text[offset(at)..offset(start)]);
        out.push_str(marker);
        at = end;
    }
    out.push_str(&text[offset(at)..]);
    Cow::Owned(out)
}

/// Scrubs, in place, every string of `value` (object keys included).
pub fn scrub_json(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = scrub(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut v) in entries {
                scrub_json(&mut v);
                map.insert(scrub(&key).into_owned(), v);
            }
        }
        _ => {}
    }
}

fn is_atext(c: char) -> bool {
    c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c)
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '.'
}

/// The `@` of an address at `i`: its length in chars (`@` or `%40`).
fn at_sign(chars: &[(usize, char)], i: usize) -> Option<usize> {
    match chars.get(i)?.1 {
        '@' => Some(1),
        '%' if chars.get(i + 1).map(|c| c.1) == Some('4') && chars.get(i + 2).map(|c| c.1) == Some('0') => Some(3),
        _ => None,
    }
}

/// The address whose `@` is at `i`, as `(first char, one past the last)`.
fn email_at(chars: &[(usize, char)], i: usize) -> Option<(usize, usize)> {
    let at_len = at_sign(chars, i)?;
    let start = local_part_start(chars, i)?;
    let end = domain_end(chars, i + at_len)?;
    Some((start, end))
}

/// Where the local part before the `@` at `at` starts.
fn local_part_start(chars: &[(usize, char)], at: usize) -> Option<usize> {
    if at == 0 {
        return None;
    }
    // A quoted local part: "ada lovelace"@example.com.
    if chars[at - 1].1 == '"' {
        let open = (0..at - 1).rev().find(|&j| chars[j].1 == '"')?;
        return (open + 1 < at - 1).then_some(open);
    }
    let mut start = at;
    while start > 0 && is_atext(chars[start - 1].1) {
        start -= 1;
    }
    // Punctuation that opens the text around the address is not part of it
    // ('ada@x.com', .ada@x.com).
    while start < at && !chars[start].1.is_alphanumeric() && !"+_".contains(chars[start].1) {
        start += 1;
    }
    // `mailto:ada%40x.com`, `to=ada@x.com`: the scheme or key stops at `:`
    // or `=`, which atext allows; an `=` inside a local part is rare, one
    // before it common.
    if let Some(eq) = (start..at).rev().find(|&j| chars[j].1 == '=') {
        start = eq + 1;
    }
    (start < at).then_some(start)
}

/// One past the domain that starts at `from`: two or more labels of letters,
/// digits and dashes, the last at least two letters long.
fn domain_end(chars: &[(usize, char)], from: usize) -> Option<usize> {
    let mut end = from;
    while end < chars.len() && is_domain_char(chars[end].1) {
        end += 1;
    }
    // A sentence's full stop or a dash after the address is not part of it.
    while end > from && matches!(chars[end - 1].1, '.' | '-') {
        end -= 1;
    }
    let domain: String = chars[from..end].iter().map(|c| c.1).collect();
    let labels: Vec<&str> = domain.split('.').collect();
    let top = labels.last()?;
    let well_formed = labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
        && top.chars().count() >= 2
        && top.chars().all(char::is_alphabetic);
    well_formed.then_some(end)
}

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}')
}

/// One past the phone number that starts at `i`, if one does.
fn phone_at(chars: &[(usize, char)], i: usize) -> Option<usize> {
    let first = chars[i].1;
    // Not glued to a word or number before it (a hash, an id, `v1+2`).
    if i > 0 {
        let before = chars[i - 1].1;
        if before.is_alphanumeric() || before == '+' || before == '_' {
            return None;
        }
    }
    let international = first == '+';
    let national = first == '0' || (first == '(' && chars.get(i + 1).map(|c| c.1) == Some('0'));
    if !international && !national {
        return None;
    }
    let mut digits = 0;
    let mut end = i + usize::from(international);
    let mut last_digit_end = end;
    let mut separators_in_a_row = 0;
    while end < chars.len() {
        let c = chars[end].1;
        if c.is_ascii_digit() {
            digits += 1;
            separators_in_a_row = 0;
            end += 1;
            last_digit_end = end;
        } else if is_separator(c) && separators_in_a_row < 2 {
            separators_in_a_row += 1;
            end += 1;
        } else {
            break;
        }
    }
    let end = last_digit_end;
    // Not glued to a word after it either.
    if chars.get(end).is_some_and(|c| c.1.is_alphanumeric() || c.1 == '_') {
        return None;
    }
    let enough = if international {
        PHONE_DIGITS_INTERNATIONAL.contains(&digits)
    } else {
        PHONE_DIGITS_NATIONAL.contains(&digits)
    };
    enough.then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn same(text: &str) {
        assert!(
            matches!(scrub(text), Cow::Borrowed(_)),
            "{text} was changed to {}",
            scrub(text)
        );
    }

    #[test]
    fn addresses_in_provider_answers_become_the_marker() {
        for (text, clean) in [
            (
                "550 5.1.1 <ada@example.com>: user unknown",
                "550 5.1.1 <[email]>: user unknown",
            ),
            (
                "smtp; 550 <a.b+c@d.co.uk>... No such user",
                "smtp; 550 <[email]>... No such user",
            ),
            ("mailto:a.b+c@d.co.uk", "mailto:[email]"),
            ("mailto:ada%40example.com?subject=x", "mailto:[email]?subject=x"),
            ("recipient \"ada@example.com\" refused", "recipient \"[email]\" refused"),
            ("recipient 'ada@example.com' refused", "recipient '[email]' refused"),
            ("\"ada lovelace\"@example.com is full", "[email] is full"),
            (
                "to=ada.lovelace@example.com, status=bounced",
                "to=[email], status=bounced",
            ),
            ("Mailbox ADA_L@Example.ORG.", "Mailbox [email]."),
            ("two: x@y.io and ü.ser@bücher.de", "two: [email] and [email]"),
        ] {
            assert_eq!(scrub(text), clean, "{text}");
        }
    }

    #[test]
    fn phone_numbers_become_the_marker() {
        for (text, clean) in [
            ("SNS: +4915112345678 opted out", "SNS: [phone] opted out"),
            ("endpoint +49 151 1234 5678 unreachable", "endpoint [phone] unreachable"),
            ("call +1 (555) 010-9999.", "call [phone]."),
            ("Tel. 030 1234 5678, please", "Tel. [phone], please"),
            ("(030) 123-45678", "[phone]"),
            ("to +44 20 7946 0958 and ada@x.com", "to [phone] and [email]"),
        ] {
            assert_eq!(scrub(text), clean, "{text}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "",
            "smtp; 550 5.1.1 The email account that you tried to reach does not exist.",
            "provider outcome unknown: timeout after 30 s",
            "no outcome recorded within 86400 s of the claim",
            "2026-11-29T10:15:02.455Z from 192.0.2.25 (dns; a1-23.smtp-out.eu-west-1.amazonses.com)",
            "message 010001937a5b2c3d-8f2e4a1b-6c7d-4e8f-9a0b-1c2d3e4f5a6b-000000",
            "customer 0193a6f3-1a2b-7c3d-8e4f-5a6b7c8d9e0f, sha256 00112233445566778899",
            "an @ alone, user@localhost, @example.com, ada@, a@b.c1",
            "status 421 4.7.0 try again later; 3 of 12 attempts",
            "version 1.2.3+4 on port 0",
            "throttled: Maximum sending rate exceeded.",
        ] {
            same(text);
        }
    }

    #[test]
    fn json_is_scrubbed_in_every_string_and_key() {
        let mut value = json!({
            "destination": ["ada.lovelace-distinct@example.com"],
            "ada@example.com": { "diagnostic": "550 <ada@example.com> unknown", "n": 5 },
            "phone": "+4930123456",
            "subject": "Hello"
        });
        scrub_json(&mut value);
        assert_eq!(
            value,
            json!({
                "destination": ["[email]"],
                "[email]": { "diagnostic": "550 <[email]> unknown", "n": 5 },
                "phone": "[phone]",
                "subject": "Hello"
            })
        );
    }
}
