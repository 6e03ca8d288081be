//! Signed unsubscribe and preference-centre tokens.
//!
//! A token names one customer, one (purpose, channel) and an expiry, and is
//! signed with HMAC-SHA256 under a secret from configuration (Secrets Manager
//! on AWS, a file in the data directory locally). Its text is the URL-safe
//! base64 (no padding) of a compact payload followed by the 32-byte MAC:
//!
//! ```text
//! version (1) | purpose (1) | channel (1) | expires_at, unix seconds, i64 BE (8) | customer id, UTF-8 | MAC (32)
//! ```
//!
//! The MAC covers a domain-separation prefix and the whole payload, and is
//! checked in constant time before anything in the payload is trusted.

use crate::consent::{Channel, Purpose};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a token made by [`links`] stays valid.
pub const DEFAULT_VALIDITY_DAYS: i64 = 60;

const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"crm-unsubscribe-token\0";
const MAC_LEN: usize = 32;
const HEADER_LEN: usize = 1 + 1 + 1 + 8;
/// Customer ids are UUIDs; anything much longer is not a token of ours.
const MAX_CUSTOMER_ID: usize = 128;

/// What a token grants: acting on one customer's (purpose, channel) until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeToken {
    pub customer_id: String,
    pub purpose: Purpose,
    pub channel: Channel,
    pub expires_at: DateTime<Utc>,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The MAC does not match: changed, or signed with another secret.
    #[error("the token's signature does not match")]
    Tampered,
    /// Genuine, but past its expiry.
    #[error("the token has expired")]
    Expired,
    /// Not a token at all (bad base64, wrong length or version).
    #[error("the token is malformed")]
    Malformed,
}

/// Signs and verifies [`UnsubscribeToken`]s with one secret.
#[derive(Clone)]
pub struct TokenSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").finish_non_exhaustive()
    }
}

fn purpose_code(p: Purpose) -> u8 {
    match p {
        Purpose::Marketing => b'm',
        Purpose::Analytics => b'a',
        Purpose::Essential => b'e',
    }
}

fn purpose_from(code: u8) -> Option<Purpose> {
    match code {
        b'm' => Some(Purpose::Marketing),
        b'a' => Some(Purpose::Analytics),
        b'e' => Some(Purpose::Essential),
        _ => None,
    }
}

fn channel_code(c: Channel) -> u8 {
    match c {
        Channel::Email => b'e',
        Channel::Sms => b's',
        Channel::Push => b'p',
    }
}

fn channel_from(code: u8) -> Option<Channel> {
    match code {
        b'e' => Some(Channel::Email),
        b's' => Some(Channel::Sms),
        b'p' => Some(Channel::Push),
        _ => None,
    }
}

impl TokenSigner {
    pub fn new(secret: &[u8]) -> Self {
        TokenSigner {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(DOMAIN);
        mac
    }

    /// The discount code of message `message_id` (decision 0074): minted
    /// under this same secret, with its own domain separation.
    pub fn discount_code(&self, message_id: &str) -> String {
        crate::commerce::discount::mint_code(&self.secret, message_id)
    }

    /// The token's text: URL-safe base64 without padding.
    pub fn sign(&self, t: &UnsubscribeToken) -> String {
        let mut bytes = Vec::with_capacity(HEADER_LEN + t.customer_id.len() + MAC_LEN);
        bytes.push(VERSION);
        bytes.push(purpose_code(t.purpose));
        bytes.push(channel_code(t.channel));
        bytes.extend_from_slice(&t.expires_at.timestamp().to_be_bytes());
        bytes.extend_from_slice(t.customer_id.as_bytes());
        let mut mac = self.mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks the signature (in constant time), then the expiry at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<UnsubscribeToken, TokenError> {
        let max_text = (HEADER_LEN + MAX_CUSTOMER_ID + MAC_LEN).div_ceil(3) * 4;
        if token.len() > max_text {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() <= HEADER_LEN + MAC_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        let mut mac = self.mac();
        mac.update(payload);
        mac.verify_slice(tag).map_err(|_| TokenError::Tampered)?;
        // Signed by us: the payload is as we wrote it, unless the format changed.
        if payload[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let purpose = purpose_from(payload[1]).ok_or(TokenError::Malformed)?;
        let channel = channel_from(payload[2]).ok_or(TokenError::Malformed)?;
        let mut seconds = [0u8; 8];
        seconds.copy_from_slice(&payload[3..HEADER_LEN]);
        let expires_at =
            DateTime::<Utc>::from_timestamp(i64::from_be_bytes(seconds), 0).ok_or(TokenError::Malformed)?;
        let customer_id = std::str::from_utf8(&payload[HEADER_LEN..])
            .map_err(|_| TokenError::Malformed)?
            .to_string();
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(UnsubscribeToken {
            customer_id,
            purpose,
            channel,
            expires_at,
        })
    }
}

/// The one-click unsubscribe URL (for `List-Unsubscribe`) and the
/// preference-centre URL of a customer's (purpose, channel), valid for
/// [`DEFAULT_VALIDITY_DAYS`] from `now`. Both are `<base_url>/u/<token>`: a
/// `GET` shows the preference centre, the RFC 8058 `POST` unsubscribes.
pub fn links(
    signer: &TokenSigner,
    base_url: &str,
    customer_id: &str,
    purpose: Purpose,
    channel: Channel,
    now: DateTime<Utc>,
) -> (String, String) {
    let token = signer.sign(&UnsubscribeToken {
        customer_id: customer_id.to_string(),
        purpose,
        channel,
        expires_at: now + Duration::days(DEFAULT_VALIDITY_DAYS),
    });
    let url = format!("{}/u/{token}", base_url.trim_end_matches('/'));
    (url.clone(), url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().expect("valid time")
    }

    fn token() -> UnsubscribeToken {
        UnsubscribeToken {
            customer_id: "0191e5a8-7c3e-7000-8000-000000000001".into(),
            purpose: Purpose::Marketing,
            channel: Channel::Email,
            expires_at: now() + Duration::days(60),
        }
    }

    #[test]
    fn round_trip() {
        let signer = TokenSigner::new(b"secret");
        let text = signer.sign(&token());
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(signer.verify(&text, now()), Ok(token()));
        for (purpose, channel) in [(Purpose::Analytics, Channel::Sms), (Purpose::Essential, Channel::Push)] {
            let t = UnsubscribeToken {
                purpose,
                channel,
                ..token()
            };
            assert_eq!(signer.verify(&signer.sign(&t), now()), Ok(t));
        }
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let signer = TokenSigner::new(b"secret");
        let bytes = URL_SAFE_NO_PAD.decode(signer.sign(&token())).expect("base64");
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            let text = URL_SAFE_NO_PAD.encode(&changed);
            assert_eq!(signer.verify(&text, now()), Err(TokenError::Tampered), "byte {i}");
        }
    }

    #[test]
    fn another_secret_is_refused() {
        let text = TokenSigner::new(b"secret").sign(&token());
        assert_eq!(
            TokenSigner::new(b"other secret").verify(&text, now()),
            Err(TokenError::Tampered)
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let signer = TokenSigner::new(b"secret");
        let text = signer.sign(&token());
        let later = token().expires_at;
        assert_eq!(signer.verify(&text, later), Err(TokenError::Expired));
        assert!(signer.verify(&text, later - Duration::seconds(1)).is_ok());
    }

    #[test]
    fn garbage_is_malformed() {
        let signer = TokenSigner::new(b"secret");
        for text in ["", "not base64!", "abc", &"A".repeat(400)] {
            assert_eq!(signer.verify(text, now()), Err(TokenError::Malformed), "{text}");
        }
    }

    #[test]
    fn links_point_at_the_preference_centre_for_sixty_days() {
        let signer = TokenSigner::new(b"secret");
        let (unsubscribe, preferences) = links(
            &signer,
            "https://crm.example/",
            "c1",
            Purpose::Marketing,
            Channel::Email,
            now(),
        );
        assert_eq!(unsubscribe, preferences);
        let token = unsubscribe.strip_prefix("https://crm.example/u/").expect("prefix");
        let t = signer.verify(token, now()).expect("valid");
        assert_eq!(t.expires_at, now() + Duration::days(60));
        assert_eq!(t.customer_id, "c1");
    }
}
