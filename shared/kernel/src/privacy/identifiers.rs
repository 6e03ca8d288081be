//! Salted hashes of identifiers (decision 0019): what the proof ledger and
//! the suppression list key their entries by, so that neither holds an
//! address in plain text, and a stolen copy cannot be reversed by hashing a
//! list of known addresses (the salt is a secret of the deployment: Secrets
//! Manager on AWS, a row of the local database locally).
//!
//! A hash is `HMAC-SHA256(secret, "crm-identifier\0" | kind | "\0" | value)`
//! in lowercase hex, over the normalised value: an email trimmed and
//! lowercased, a phone number reduced to its digits and a leading `+`.

use crate::vocabulary::Channel;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const DOMAIN: &[u8] = b"crm-identifier\0";

/// The kind of identifier a hash names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IdentifierKind {
    Email,
    Phone,
}

impl IdentifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
        }
    }

    /// The identifier a channel addresses, if it is one we hash (push
    /// device tokens are not identifiers of a person).
    pub fn of_channel(channel: Channel) -> Option<Self> {
        match channel {
            Channel::Email => Some(IdentifierKind::Email),
            Channel::Sms => Some(IdentifierKind::Phone),
            Channel::Push => None,
        }
    }

    fn normalise(self, value: &str) -> String {
        match self {
            IdentifierKind::Email => value.trim().to_lowercase(),
            IdentifierKind::Phone => {
                let value = value.trim();
                let digits: String = value.chars().filter(char::is_ascii_digit).collect();
                if value.starts_with('+') {
                    format!("+{digits}")
                } else {
                    digits
                }
            }
        }
    }
}

impl std::fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a keyed lookup names besides an identifier (decision 0046): the
/// equality lookups that must not name their value in the clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// A first or last name, normalised by the name index.
    NameToken,
    /// A source's `userId` (it may be an email address), as sent.
    UserId,
}

impl LookupKind {
    fn label(self) -> &'static str {
        match self {
            LookupKind::NameToken => "name-token",
            LookupKind::UserId => "user-id",
        }
    }
}

/// One identifier, hashed: personal-data-free as long as the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HashedIdentifier {
    pub kind: IdentifierKind,
    pub hash: String,
}

/// Hashes identifiers under one secret.
#[derive(Clone)]
pub struct IdentifierHasher {
    secret: Vec<u8>,
}

impl std::fmt::Debug for IdentifierHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentifierHasher(..)")
    }
}

impl IdentifierHasher {
    pub fn new(secret: &[u8]) -> Self {
        IdentifierHasher {
            secret: secret.to_vec(),
        }
    }

    /// The hash of `value` as an identifier of `kind`.
    pub fn hash(&self, kind: IdentifierKind, value: &str) -> String {
        self.mac(kind.as_str(), &kind.normalise(value))
    }

    fn mac(&self, label: &str, value: &str) -> String {
        // HMAC takes a key of any length: `new_from_slice` cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            unreachable!("HMAC accepts keys of every length")
        };
        mac.update(DOMAIN);
        mac.update(label.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The keyed hash of `value` for a lookup of `kind` (the value as given:
    /// the caller normalises it).
    pub fn lookup(&self, kind: LookupKind, value: &str) -> String {
        self.mac(kind.label(), value)
    }

    pub fn email(&self, address: &str) -> String {
        self.hash(IdentifierKind::Email, address)
    }

    /// The hash of a channel's address: an email or a phone number as
    /// identifiers, a push device token as it is.
    pub fn address(&self, channel: Channel, address: &str) -> String {
        match IdentifierKind::of_channel(channel) {
            Some(kind) => self.hash(kind, address),
            None => self.mac("push", address.trim()),
        }
    }

    /// The hashed identifiers of a customer's current email and phone (the
    /// ones that are set and not erased).
    pub fn identifiers_of(&self, email: &str, phone: Option<&str>) -> Vec<HashedIdentifier> {
        let usable = |v: &&str| !v.trim().is_empty() && *v != super::ERASED;
        let mut out = Vec::new();
        if let Some(email) = Some(email).filter(usable) {
            out.push(HashedIdentifier {
                kind: IdentifierKind::Email,
                hash: self.hash(IdentifierKind::Email, email),
            });
        }
        if let Some(phone) = phone.filter(usable) {
            out.push(HashedIdentifier {
                kind: IdentifierKind::Phone,
                hash: self.hash(IdentifierKind::Phone, phone),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_address_hashes_alike_after_normalising() {
        let h = IdentifierHasher::new(b"secret");
        assert_eq!(
            h.email("  Grace.Hopper@Example.COM "),
            h.email("grace.hopper@example.com")
        );
        assert_eq!(
            h.hash(IdentifierKind::Phone, "+44 7700 900-123"),
            h.hash(IdentifierKind::Phone, "+447700900123")
        );
        assert_eq!(h.email("a@example.com").len(), 64);
    }

    #[test]
    fn the_secret_and_the_kind_change_the_hash() {
        let (a, b) = (IdentifierHasher::new(b"one"), IdentifierHasher::new(b"two"));
        assert_ne!(a.email("ana@example.com"), b.email("ana@example.com"));
        assert_ne!(
            a.hash(IdentifierKind::Email, "12345"),
            a.hash(IdentifierKind::Phone, "12345")
        );
        // Not the unsalted SHA-256 a dictionary would find.
        use sha2::Digest;
        assert_ne!(
            a.email("ana@example.com"),
            hex::encode(Sha256::digest(b"ana@example.com"))
        );
    }

    #[test]
    fn identifiers_skip_what_is_missing_or_erased() {
        let h = IdentifierHasher::new(b"s");
        let both = h.identifiers_of("ana@example.com", Some("+15550100"));
        assert_eq!(
            both.iter().map(|i| i.kind).collect::<Vec<_>>(),
            [IdentifierKind::Email, IdentifierKind::Phone]
        );
        assert_eq!(both[0].hash, h.email("ana@example.com"));
        assert!(h.identifiers_of(super::super::ERASED, Some("")).is_empty());
        assert_eq!(h.identifiers_of("", Some("+15550100")).len(), 1);
    }

    #[test]
    fn debug_hides_the_secret() {
        assert_eq!(
            format!("{:?}", IdentifierHasher::new(b"hunter2")),
            "IdentifierHasher(..)"
        );
    }
}
