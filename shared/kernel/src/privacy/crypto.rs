//! AES-256-GCM over single fields and over wrapped data keys.
//!
//! A field is written as `enc:v1:<base64url(nonce | ciphertext | tag)>`
//! (unpadded URL-safe base64, a 96-bit random nonce). The associated data
//! binds it to its customer and its field path, so a ciphertext copied to
//! another customer or another field does not decrypt.

use super::{DataKey, KeyError};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// What every encrypted field starts with (format version 1).
pub const ENCRYPTED_PREFIX: &str = "enc:v1:";

/// The start of every encrypted field, whatever its version.
const ENCRYPTED_MARK: &str = "enc:";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A field or a wrapped key could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The text does not start with `enc:`.
    #[error("not an encrypted field")]
    NotEncrypted,
    /// An `enc:` text of a format this code does not know.
    #[error("unknown encryption format {0:?}")]
    UnknownFormat(String),
    /// Not base64url, or too short to hold a nonce and a tag.
    #[error("malformed ciphertext: {0}")]
    Malformed(String),
    /// Authentication failed: another key, another customer or field, or the
    /// ciphertext was changed.
    #[error("decryption failed: wrong key, customer or field, or tampered ciphertext")]
    Decrypt,
    /// The decrypted bytes are not UTF-8 (or, for a payload field, not JSON).
    #[error("decrypted field is not valid: {0}")]
    Invalid(String),
    /// The operating system gave no randomness for a nonce.
    #[error("no randomness for a nonce: {0}")]
    Random(String),
}

/// Fills a buffer of `N` bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Whether `text` is an encrypted field (any `enc:` version).
pub fn is_encrypted(text: &str) -> bool {
    text.starts_with(ENCRYPTED_MARK)
}

/// The JSON text of `value` with every encrypted field replaced by
/// `"<ciphertext>"`: what a test searches for leaked plaintext. Random
/// ciphertext contains any short word now and then ("Ada" in base64 about
/// once in a thousand fields), so searching the raw text is flaky.
#[cfg(any(test, feature = "testing"))]
pub fn text_outside_ciphertext(value: &serde_json::Value) -> String {
    text_without_ciphertext(&value.to_string())
}

/// `text` (a stored row, a log line, JSON) with every encrypted field in it
/// (`enc:v1:` and its base64url) replaced by `<ciphertext>`: what a scan for
/// leaked plaintext reads (see [`text_outside_ciphertext`]; a lowercased
/// ciphertext once spelled "grace").
pub fn text_without_ciphertext(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(ENCRYPTED_PREFIX) {
        out.push_str(&rest[..at]);
        out.push_str("<ciphertext>");
        rest = &rest[at + ENCRYPTED_PREFIX.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '='))
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Associated data: a label, then each part with its length first, so no two
/// different (customer, field) pairs give the same bytes.
fn associated_data(label: &str, parts: &[&str]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label.len() + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    aad.extend_from_slice(label.as_bytes());
    for part in parts {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

fn cipher(key: &DataKey) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_bytes()))
}

/// `nonce | ciphertext | tag` of `plaintext` under `key` with `aad`.
fn seal(key: &DataKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce: [u8; NONCE_LEN] = random_bytes()?;
    let ciphertext = cipher(key)
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        // Only for plaintexts beyond GCM's limit (64 GiB).
        .map_err(|_| CryptoError::Malformed("plaintext too long for AES-GCM".into()))?;
    let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// The plaintext of `nonce | ciphertext | tag`.
fn open(key: &DataKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed(format!(
            "{} bytes is too short for a nonce and a tag",
            sealed.len()
        )));
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    cipher(key)
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
        .map_err(|_| CryptoError::Decrypt)
}

/// Encrypts one field of `customer_id` at `field_path` (for example `email` or
/// `shipping_address`): `enc:v1:<base64url(nonce | ciphertext | tag)>`, a new
/// random nonce every time.
pub fn encrypt_field(
    key: &DataKey,
    customer_id: &str,
    field_path: &str,
    plaintext: &str,
) -> Result<String, CryptoError> {
    let aad = associated_data(ENCRYPTED_PREFIX, &[customer_id, field_path]);
    let sealed = seal(key, &aad, plaintext.as_bytes())?;
    Ok(format!("{ENCRYPTED_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed)))
}

/// Decrypts a field written by [`encrypt_field`] for the same customer and
/// field path.
pub fn decrypt_field(key: &DataKey, customer_id: &str, field_path: &str, text: &str) -> Result<String, CryptoError> {
    let Some(encoded) = text.strip_prefix(ENCRYPTED_PREFIX) else {
        if is_encrypted(text) {
            let format = text.splitn(3, ':').take(2).collect::<Vec<_>>().join(":");
            return Err(CryptoError::UnknownFormat(format));
        }
        return Err(CryptoError::NotEncrypted);
    };
    let sealed = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|e| CryptoError::Malformed(e.to_string()))?;
    let aad = associated_data(ENCRYPTED_PREFIX, &[customer_id, field_path]);
    let plaintext = open(key, &aad, &sealed)?;
    String::from_utf8(plaintext).map_err(|e| CryptoError::Invalid(e.to_string()))
}

const WRAP_LABEL: &str = "crm-data-key:v1";

/// Wraps `customer_id`'s data key under a master key (the local adapter's key
/// file): `nonce | ciphertext | tag`, bound to the customer id.
pub fn wrap_key(master: &DataKey, customer_id: &str, data_key: &DataKey) -> Result<Vec<u8>, KeyError> {
    let aad = associated_data(WRAP_LABEL, &[customer_id]);
    seal(master, &aad, data_key.as_bytes()).map_err(|e| KeyError::Unavailable(e.to_string()))
}

/// Unwraps a key written by [`wrap_key`]; another master key or another
/// customer id fails with [`KeyError::Corrupt`].
pub fn unwrap_key(master: &DataKey, customer_id: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
    let aad = associated_data(WRAP_LABEL, &[customer_id]);
    let mut bytes = open(master, &aad, wrapped).map_err(|e| {
        KeyError::Corrupt(format!(
            "data key of {customer_id} does not unwrap under this master key: {e}"
        ))
    })?;
    let key = DataKey::from_slice(&bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    key
}

#[cfg(test)]
mod tests {

    #[test]
    fn text_without_ciphertext_cuts_every_field_and_keeps_the_rest() {
        let field = encrypt_field(&key(), "c1", "name", "Grace Hopper").expect("encrypt");
        let row = format!("customer-c1 | {{\"name\":\"{field}\",\"city\":\"Arlington\"}} | {field}");
        let cut = text_without_ciphertext(&row);
        assert_eq!(
            cut,
            "customer-c1 | {\"name\":\"<ciphertext>\",\"city\":\"Arlington\"} | <ciphertext>"
        );
        assert_eq!(text_without_ciphertext("no fields here"), "no fields here");
        assert_eq!(text_without_ciphertext("enc:v1:"), "<ciphertext>");
    }

    use super::*;

    fn key() -> DataKey {
        DataKey::generate().expect("a key")
    }

    #[test]
    fn round_trip() {
        let k = key();
        let text = encrypt_field(&k, "cus-1", "email", "ada@example.com").expect("encrypt");
        assert!(text.starts_with("enc:v1:"), "{text}");
        assert!(is_encrypted(&text));
        assert!(!text.contains("ada@example.com"), "{text}");
        assert_eq!(
            decrypt_field(&k, "cus-1", "email", &text).expect("decrypt"),
            "ada@example.com"
        );
        // Empty and non-ASCII text too.
        for plain in ["", "Zoë Ångström 🙂"] {
            let t = encrypt_field(&k, "cus-1", "first_name", plain).expect("encrypt");
            assert_eq!(decrypt_field(&k, "cus-1", "first_name", &t).expect("decrypt"), plain);
        }
    }

    #[test]
    fn the_format_is_prefix_then_base64url_of_nonce_and_ciphertext() {
        let k = key();
        let text = encrypt_field(&k, "cus-1", "email", "abc").expect("encrypt");
        let body = text.strip_prefix("enc:v1:").expect("prefix");
        assert!(
            body.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{body}"
        );
        let raw = URL_SAFE_NO_PAD.decode(body).expect("base64url");
        assert_eq!(raw.len(), NONCE_LEN + 3 + TAG_LEN);
    }

    #[test]
    fn nonces_differ() {
        let k = key();
        let a = encrypt_field(&k, "cus-1", "email", "same").expect("encrypt");
        let b = encrypt_field(&k, "cus-1", "email", "same").expect("encrypt");
        assert_ne!(a, b);
        let nonce = |t: &str| URL_SAFE_NO_PAD.decode(&t[ENCRYPTED_PREFIX.len()..]).expect("b64")[..NONCE_LEN].to_vec();
        assert_ne!(nonce(&a), nonce(&b));
    }

    #[test]
    fn another_customer_field_or_key_fails() {
        let k = key();
        let text = encrypt_field(&k, "cus-1", "email", "ada@example.com").expect("encrypt");
        assert_eq!(decrypt_field(&k, "cus-2", "email", &text), Err(CryptoError::Decrypt));
        assert_eq!(
            decrypt_field(&k, "cus-1", "new_email", &text),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            decrypt_field(&key(), "cus-1", "email", &text),
            Err(CryptoError::Decrypt)
        );
        // The length prefixes keep ("cus-1e", "mail") apart from ("cus-1", "email").
        assert_eq!(decrypt_field(&k, "cus-1e", "mail", &text), Err(CryptoError::Decrypt));
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let k = key();
        let text = encrypt_field(&k, "cus-1", "email", "ada@example.com").expect("encrypt");
        let mut raw = URL_SAFE_NO_PAD.decode(&text[ENCRYPTED_PREFIX.len()..]).expect("b64");
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 0x01;
            let tampered = format!("{ENCRYPTED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw));
            assert_eq!(
                decrypt_field(&k, "cus-1", "email", &tampered),
                Err(CryptoError::Decrypt),
                "byte {i}"
            );
            raw[i] ^= 0x01;
        }
        // Truncated, not base64, another version, not encrypted at all.
        let short = format!("{ENCRYPTED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw[..20]));
        assert!(matches!(
            decrypt_field(&k, "cus-1", "email", &short),
            Err(CryptoError::Malformed(_))
        ));
        assert!(matches!(
            decrypt_field(&k, "cus-1", "email", "enc:v1:***"),
            Err(CryptoError::Malformed(_))
        ));
        assert_eq!(
            decrypt_field(&k, "cus-1", "email", "enc:v9:AAAA"),
            Err(CryptoError::UnknownFormat("enc:v9".into()))
        );
        assert_eq!(
            decrypt_field(&k, "cus-1", "email", "ada@example.com"),
            Err(CryptoError::NotEncrypted)
        );
        assert!(!is_encrypted("ada@example.com"));
    }

    #[test]
    fn wrapped_keys_unwrap_only_under_their_master_and_customer() {
        let master = key();
        let data = key();
        let wrapped = wrap_key(&master, "cus-1", &data).expect("wrap");
        assert!(!wrapped.windows(8).any(|w| w == &data.as_bytes()[..8]));
        assert_eq!(unwrap_key(&master, "cus-1", &wrapped).expect("unwrap"), data);
        assert!(matches!(
            unwrap_key(&key(), "cus-1", &wrapped),
            Err(KeyError::Corrupt(_))
        ));
        assert!(matches!(
            unwrap_key(&master, "cus-2", &wrapped),
            Err(KeyError::Corrupt(_))
        ));
        assert!(matches!(
            unwrap_key(&master, "cus-1", &wrapped[..10]),
            Err(KeyError::Corrupt(_))
        ));
    }
}
