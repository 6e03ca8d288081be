//! Input rules shared by several customer commands.

use super::CustomerError;
use crate::privacy::IdentifierHasher;
use sha2::{Digest, Sha256};
use std::str::FromStr;

/// Validates an email address and returns its normal form (trimmed, lower case).
pub fn normalise_email(field: &str, raw: &str) -> Result<String, CustomerError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(CustomerError::invalid(field, "is required"));
    }
    if trimmed.len() > 254 {
        return Err(CustomerError::invalid(field, "is longer than 254 characters"));
    }
    let parsed = email_address::EmailAddress::from_str(trimmed)
        .map_err(|e| CustomerError::invalid(field, format!("is not a valid email address: {e}")))?;
    let domain = parsed.domain();
    if !domain.contains('.') || domain.starts_with('[') {
        return Err(CustomerError::invalid(
            field,
            "is not a deliverable email address (domain needs a dot)",
        ));
    }
    Ok(trimmed.to_lowercase())
}

/// How the aggregate names the reservation that keeps an email unique:
/// `email-address:<normal form>`. A logical name, never stored: the
/// customer service's store ([`super::keyed_reservations`]) turns it into
/// [`email_reservation_key`] before anything is written, and refuses to
/// write it when it has no identifier secret.
pub fn email_reservation_name(normalised_email: &str) -> String {
    format!("{EMAIL_RESERVATION_NAME_PREFIX}{normalised_email}")
}

/// The prefix of [`email_reservation_name`].
pub(crate) const EMAIL_RESERVATION_NAME_PREFIX: &str = "email-address:";

/// The stored reservation key that keeps an email unique:
/// `email#<HMAC-SHA256 of its normal form under the identifier secret>`
/// (decision 0046), so neither the key nor a backup of it names the address,
/// and a dictionary of addresses cannot be hashed to find it without the
/// secret. The same keyed hash names the address in the email index.
pub fn email_reservation_key(identifiers: &IdentifierHasher, normalised_email: &str) -> String {
    format!("email#{}", identifiers.email(normalised_email))
}

/// The key email reservations had before decision 0046: `email#<SHA-256 of
/// the normal form>`, unkeyed. Only the re-key migration
/// ([`super::rekey`]) still computes it, to find and release those items.
pub fn unkeyed_email_reservation_key(normalised_email: &str) -> String {
    let digest = Sha256::digest(normalised_email.as_bytes());
    format!("email#{}", hex::encode(digest))
}

pub fn name(field: &str, raw: &str) -> Result<String, CustomerError> {
    let v = raw.trim();
    if v.is_empty() {
        return Err(CustomerError::invalid(field, "is required"));
    }
    if v.chars().count() > 100 {
        return Err(CustomerError::invalid(field, "is longer than 100 characters"));
    }
    if v.chars().any(char::is_control) {
        return Err(CustomerError::invalid(field, "contains control characters"));
    }
    Ok(v.to_string())
}

/// A name that may be absent (a registration by ingestion, decision 0051):
/// empty (or only white space) reads as `""`, anything else is checked as
/// [`name`] checks it.
pub fn optional_name(field: &str, raw: &str) -> Result<String, CustomerError> {
    if raw.trim().is_empty() {
        return Ok(String::new());
    }
    name(field, raw)
}

/// A phone number in E.164: `+`, then 8 to 15 digits, not starting with 0.
pub fn phone(field: &str, raw: &str) -> Result<String, CustomerError> {
    let v = raw.trim();
    let digits = v.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) && !digits.starts_with('0');
    if !ok {
        return Err(CustomerError::invalid(
            field,
            "is not a phone number in E.164 form (e.g. +4915112345678)",
        ));
    }
    Ok(v.to_string())
}

pub fn ip(field: &str, raw: &str) -> Result<String, CustomerError> {
    raw.trim()
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| CustomerError::invalid(field, "is not an IPv4 or IPv6 address"))
}

pub fn user_agent(field: &str, raw: &str) -> Result<String, CustomerError> {
    let v = raw.trim();
    if v.len() > 512 {
        return Err(CustomerError::invalid(field, "is longer than 512 characters"));
    }
    if v.chars().any(char::is_control) {
        return Err(CustomerError::invalid(field, "contains control characters"));
    }
    Ok(v.to_string())
}

pub fn timezone(field: &str, raw: &str) -> Result<String, CustomerError> {
    if crate::preferences::is_valid_timezone(raw) {
        Ok(raw.to_string())
    } else {
        Err(CustomerError::invalid(
            field,
            format!("'{raw}' is not an IANA time zone"),
        ))
    }
}

/// A BCP 47 language tag in its common form: `en`, `de-DE`, `pt-BR`, `zh-Hant-TW`.
pub fn locale(field: &str, raw: &str) -> Result<String, CustomerError> {
    let mut parts = raw.split('-');
    let lang_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic()));
    let rest_ok = parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if lang_ok && rest_ok && raw.len() <= 35 {
        Ok(raw.to_string())
    } else {
        Err(CustomerError::invalid(
            field,
            format!("'{raw}' is not a language tag such as en-GB"),
        ))
    }
}

pub fn free_text(field: &str, raw: &str, max: usize) -> Result<String, CustomerError> {
    if raw.chars().count() > max {
        return Err(CustomerError::invalid(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    Ok(raw.trim().to_string())
}
