//! Scopes (decision 0039): what a bearer token lets its holder do, route by
//! route. Four scopes, none implying another: `crm/read` (reads of
//! customers, carts, orders, segments, insights), `crm/write` (commands that
//! change them), `crm/privacy` (erasure and export) and `crm/admin`
//! (campaigns, templates, custom event schemas, anything operational).
//!
//! On AWS a JWT carries them in its `scope` claim (space-separated, as
//! Cognito's resource server `crm` issues them) or an `scp` claim; the HTTP
//! API's authorizer checks each route's scope (template.yaml), and the router
//! checks it again here. Locally, the token of `<data_dir>/token` carries
//! every scope, and `crm-local token --scope ...` mints narrower tokens
//! signed with it ([`mint_local_token`]).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One scope of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `crm/read`: reads of customers, carts, orders, segments, journeys and insights.
    Read,
    /// `crm/write`: commands on customers, consents, carts and orders.
    Write,
    /// `crm/privacy`: erasure and export of a customer.
    Privacy,
    /// `crm/admin`: campaigns, templates, custom event schemas, operations.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are printed.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Privacy, Scope::Admin];

    /// The scope's name, as tokens carry it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "crm/read",
            Scope::Write => "crm/write",
            Scope::Privacy => "crm/privacy",
            Scope::Admin => "crm/admin",
        }
    }

    /// The scope of this name (`None`: not a scope of this API).
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    const fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Privacy => 4,
            Scope::Admin => 8,
        }
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes: what a caller was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const fn none() -> Self {
        Scopes(0)
    }

    pub const fn all() -> Self {
        Scopes(15)
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn with(self, scope: Scope) -> Self {
        Scopes(self.0 | scope.bit())
    }

    /// The scopes in the set, in [`Scope::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The scopes of this API named in a claim's value: space-separated
    /// (`scope`, RFC 8693 and Cognito), or a list as API Gateway passes an
    /// array claim such as `scp` (`[crm/read crm/write]`) or as JSON
    /// (`["crm/read","crm/write"]`). Other names (`openid`, another API's
    /// scopes) are ignored.
    pub fn from_claim(value: &str) -> Self {
        value
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '"'))
            .filter_map(Scope::parse)
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::none(), Scopes::with)
    }
}

/// How a route is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A bearer token (a JWT on AWS) carrying this scope.
    Scope(Scope),
    /// Any valid bearer token, whatever its scopes (`/health`).
    Authenticated,
    /// No bearer token: the signed token in the path is the credential (`/u/{token}`).
    SignedLink,
    /// No bearer token: a source's write key, HTTP Basic (`/v1/*`).
    WriteKey,
    /// No credential at all: the landing page and the API description
    /// (`/`, `/openapi.yaml`, decision 0085). Counted with the signed-link
    /// routes in [`crate::PUBLIC_ROUTES`] (no bearer token, outside the auth layer).
    Public,
}

impl Access {
    /// The scope a bearer token must carry, if any.
    pub const fn scope(self) -> Option<Scope> {
        match self {
            Access::Scope(s) => Some(s),
            _ => None,
        }
    }
}

/// One route of the API and how it is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// In OpenAPI's path syntax (`/customers/{id}`), which is also axum's.
    pub path: &'static str,
    pub access: Access,
}

/// `(method, path)` of every route in `table` (for [`crate::ROUTES`]).
pub(crate) const fn pairs<const N: usize>(table: &[Route]) -> [(&'static str, &'static str); N] {
    let mut out = [("", ""); N];
    let mut i = 0;
    while i < N {
        out[i] = (table[i].method, table[i].path);
        i += 1;
    }
    out
}

const fn same_kind(a: Access, b: Access) -> bool {
    matches!(
        (a, b),
        (Access::SignedLink | Access::Public, Access::SignedLink | Access::Public)
            | (Access::WriteKey, Access::WriteKey)
    )
}

/// How many routes of `table` are authorised as `access` (`SignedLink` or `WriteKey`).
pub(crate) const fn count(table: &[Route], access: Access) -> usize {
    let (mut n, mut i) = (0, 0);
    while i < table.len() {
        if same_kind(table[i].access, access) {
            n += 1;
        }
        i += 1;
    }
    n
}

/// `(method, path)` of the routes of `table` authorised as `access`.
pub(crate) const fn pairs_of<const N: usize>(table: &[Route], access: Access) -> [(&'static str, &'static str); N] {
    let mut out = [("", ""); N];
    let (mut n, mut i) = (0, 0);
    while i < table.len() {
        if same_kind(table[i].access, access) {
            out[n] = (table[i].method, table[i].path);
            n += 1;
        }
        i += 1;
    }
    out
}

/// How the route `method path` (a path as routed: `/customers/{id}`) is
/// authorised; `None` when no route is declared there.
pub fn access_of(method: &str, path: &str) -> Option<Access> {
    crate::ROUTE_TABLE
        .iter()
        .find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
        .map(|r| r.access)
}

/// The prefix of tokens minted by [`mint_local_token`].
const LOCAL_PREFIX: &str = "local.";

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `label` under the all-scopes token, base64url.
fn local_mac(all_scopes_token: &str, label: &str) -> String {
    use base64::Engine;
    // Keyed by the all-scopes token itself: whoever holds it may mint, and
    // replacing it (deleting <data_dir>/token) revokes every minted token.
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let Ok(mut mac) = HmacSha256::new_from_slice(all_scopes_token.as_bytes()) else {
        unreachable!("HMAC accepts keys of every length")
    };
    mac.update(label.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// A local bearer token carrying exactly `scopes`, signed with the
/// all-scopes token (`<data_dir>/token`): `local.<scope>+<scope>.<mac>`.
/// The scopes are readable in the token; the MAC (HMAC-SHA256) makes them
/// unforgeable without the all-scopes token. The same scopes always give the
/// same token.
pub fn mint_local_token(all_scopes_token: &str, scopes: Scopes) -> String {
    let names = scopes.iter().map(Scope::as_str).collect::<Vec<_>>().join("+");
    format!(
        "{LOCAL_PREFIX}{names}.{}",
        local_mac(all_scopes_token, &token_label(&names))
    )
}

fn token_label(names: &str) -> String {
    format!("crm-local scoped token v1\n{names}")
}

/// A session value for one local, non-API `purpose` (`mail`: the mail
/// viewer), signed with the all-scopes token: it opens that purpose only,
/// is no bearer token of the API, and dies with the all-scopes token.
pub fn local_session(all_scopes_token: &str, purpose: &str) -> String {
    local_mac(all_scopes_token, &format!("crm-local session v1\n{purpose}"))
}

/// Whether `presented` is the session value of `purpose` (constant time).
pub fn is_local_session(all_scopes_token: &str, purpose: &str, presented: &str) -> bool {
    constant_time_eq(
        presented.as_bytes(),
        local_session(all_scopes_token, purpose).as_bytes(),
    )
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The scopes a presented local bearer token grants: every scope for the
/// all-scopes token, the signed ones for a token of [`mint_local_token`];
/// `None` when it is neither.
pub fn local_token_scopes(all_scopes_token: &str, presented: &str) -> Option<Scopes> {
    if constant_time_eq(presented.as_bytes(), all_scopes_token.as_bytes()) {
        return Some(Scopes::all());
    }
    let rest = presented.strip_prefix(LOCAL_PREFIX)?;
    let (names, mac) = rest.rsplit_once('.')?;
    if !constant_time_eq(
        mac.as_bytes(),
        local_mac(all_scopes_token, &token_label(names)).as_bytes(),
    ) {
        return None;
    }
    names.split('+').map(Scope::parse).collect::<Option<Scopes>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_from_claims_as_identity_providers_send_them() {
        assert_eq!(
            Scopes::from_claim("openid crm/read crm/privacy"),
            Scopes::none().with(Scope::Read).with(Scope::Privacy)
        );
        assert_eq!(
            Scopes::from_claim("[crm/write crm/admin]"),
            Scopes::none().with(Scope::Write).with(Scope::Admin)
        );
        assert_eq!(
            Scopes::from_claim(r#"["crm/read","crm/write"]"#),
            Scopes::none().with(Scope::Read).with(Scope::Write)
        );
        assert_eq!(Scopes::from_claim("crm/reader crm crm/*"), Scopes::none());
    }

    #[test]
    fn minted_local_tokens_carry_their_scopes_and_no_more() {
        let all = "0123456789abcdef0123456789abcdef";
        let read = mint_local_token(all, Scopes::none().with(Scope::Read));
        assert!(read.starts_with("local.crm/read."), "{read}");
        assert_eq!(local_token_scopes(all, &read), Some(Scopes::none().with(Scope::Read)));
        assert_eq!(local_token_scopes(all, all), Some(Scopes::all()));
        // Widening the scopes in the token breaks its MAC.
        let forged = read.replacen("crm/read", "crm/read+crm/privacy", 1);
        assert_eq!(local_token_scopes(all, &forged), None);
        // Another data directory's token does not sign for this one.
        assert_eq!(local_token_scopes("another-all-scopes-token", &read), None);
        assert_eq!(local_token_scopes(all, "local.crm/read"), None);
        assert_eq!(local_token_scopes(all, ""), None);
        // A session is not a bearer token, and a token is not a session.
        let session = local_session(all, "mail");
        assert_eq!(local_token_scopes(all, &session), None);
        assert!(is_local_session(all, "mail", &session));
        assert!(!is_local_session(all, "mail", &read));
        assert!(!is_local_session(all, "dev", &session));
        let none = mint_local_token(all, Scopes::none());
        assert_eq!(local_token_scopes(all, &none), None, "{none}: names no scope");
    }
}
