//! `GET /u/{token}` and `POST /u/{token}`: the preference centre and RFC 8058
//! one-click unsubscribe, reached from a signed link in a message (no bearer
//! token; the signed token is the credential). These answer HTML, errors too.
//!
//! The page is plain HTML: labelled checkboxes and radio buttons in one
//! `<form method="post">`, no script, no external assets, and no personal
//! data beyond the first name.

use crate::http::{Problem, RawBody};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crm_core::consent::{Channel, ConsentMethod, Purpose};
use crm_core::customer::{
    CommandError, Customer, CustomerCommand, CustomerError, CustomerStatus, Executed, GrantConsent, RevokeConsent,
};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::messaging::render::html_escape as escape;
use crm_core::messaging::unsubscribe::{TokenError, UnsubscribeToken};
use crm_core::preferences::{EmailFrequency, Preferences};

/// The body of an RFC 8058 one-click unsubscribe.
const ONE_CLICK_BODY: &[u8] = b"List-Unsubscribe=One-Click";
const ONE_CLICK_REASON: &str = "one-click unsubscribe";
const PREFERENCE_CENTRE_REASON: &str = "preference centre";
/// Who the events name as their actor.
const ACTOR: &str = "unsubscribe-link";
/// The marketing channels the page offers.
const CHANNELS: [(Channel, &str, &str); 3] = [
    (Channel::Email, "marketing_email", "Marketing email"),
    (Channel::Sms, "marketing_sms", "Marketing text messages (SMS)"),
    (Channel::Push, "marketing_push", "Marketing push notifications"),
];
/// The email frequencies as the page words them (decision 0064: the
/// frequency governs promotional email; lifecycle email is not held back).
const FREQUENCIES: [(EmailFrequency, &str, &str); 3] = [
    (
        EmailFrequency::Daily,
        "daily",
        "Daily: at most one offer email a day, at least 24 hours after the last",
    ),
    (
        EmailFrequency::Weekly,
        "weekly",
        "Weekly: at most one offer email a week, at least 7 days after the last",
    ),
    (EmailFrequency::Never, "never", "Never: no marketing email at all"),
];
/// What the frequency covers, in plain words, under the choices.
const FREQUENCY_RULE: &str = "Offer emails are our news, recommendations and reorder reminders. Emails about something you just did (the welcome when you sign up, a reminder about your basket, the products you looked at or a checkout you did not finish, a request to review an order you received) are not held back by this choice, and they stop too if you choose Never. Emails about your orders and your account always go.";
/// Marketing push notifications are opt-in per topic (seed 000).
const PUSH_RULE: &str = "Marketing push notifications go only about the topics you have chosen in our app; until you choose one, we send none.";

/// An HTML answer: a whole page with `status`.
struct Page {
    status: StatusCode,
    title: &'static str,
    body: String,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let html = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"robots\" content=\"noindex\">\n<title>{title}</title>\n<style>{STYLE}</style>\n\
             </head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}</main>\n</body>\n</html>\n",
            title = escape(self.title),
            body = self.body,
        );
        let mut response = (self.status, html).into_response();
        let headers = response.headers_mut();
        let fixed = [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The token is in the URL: never cache it, never send it on.
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::HeaderName::from_static("x-robots-tag"), "noindex"),
        ];
        for (name, value) in fixed {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;line-height:1.5;margin:0;padding:1rem;color:#1a1a1a;background:#fff}\
main{max-width:36rem;margin:0 auto}fieldset{margin:0 0 1rem;padding:.5rem 1rem 1rem;border:1px solid #767676}\
legend{font-weight:600}.choice{display:block;padding:.25rem 0}input{width:1.1rem;height:1.1rem;margin-right:.5rem}\
button{font-size:1rem;padding:.5rem 1.25rem}.status{padding:.5rem 1rem;border-left:4px solid #1a7f37;background:#eef8f0}\
.error{border-left-color:#b3261e;background:#fdeceb}:focus-visible{outline:3px solid #0b57d0;outline-offset:2px}";

fn message_page(status: StatusCode, title: &'static str, text: &str) -> Page {
    Page {
        status,
        title,
        body: format!("<p>{}</p>\n", escape(text)),
    }
}

/// What a tampered, expired or malformed token gets: 400, nothing changed.
fn bad_token(e: TokenError) -> Page {
    let text = match e {
        TokenError::Expired => "This link has expired. Please use the link in a more recent message.",
        TokenError::Tampered | TokenError::Malformed => {
            "This link is not valid. Please use the link exactly as it appears in the message."
        }
    };
    message_page(StatusCode::BAD_REQUEST, "Link not valid", text)
}

fn not_found() -> Page {
    message_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "We could not find the subscription this link belongs to.",
    )
}

/// A refused or failed command: the status the API would answer, and what to tell the customer.
fn failure(e: CommandError) -> (StatusCode, String) {
    if matches!(e, CommandError::Rejected(CustomerError::NotFound)) {
        return (
            StatusCode::NOT_FOUND,
            "We could not find the subscription this link belongs to.".into(),
        );
    }
    let problem = Problem::from(e);
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        (
            status,
            "Something went wrong on our side. Please try again in a moment.".into(),
        )
    } else {
        (status, problem.detail)
    }
}

fn failed(e: CommandError) -> Page {
    match failure(e) {
        (StatusCode::NOT_FOUND, _) => not_found(),
        (status, text) => message_page(status, "Could not save", &text),
    }
}

fn verify(state: &AppState, token: &str) -> Result<UnsubscribeToken, Page> {
    state.unsubscribe.verify(token, state.clock.now()).map_err(bad_token)
}

async fn load(state: &AppState, id: &str) -> Result<Customer, Page> {
    match state.customers.load(id).await {
        // An erased customer has no preferences left to manage.
        Ok(Some(c)) if !c.is_erased() => Ok(c),
        Ok(_) => Err(not_found()),
        Err(e) => Err(failed(e)),
    }
}

/// The preference centre for `c` at `now`, with an optional status line. A
/// lapsed consent shows unticked: ticking it gives it again; one in its
/// last 30 days says when it ends: saving it ticked renews it.
fn centre(c: &Customer, now: DateTime<Utc>, status: StatusCode, notice: Option<(&str, bool)>) -> Page {
    let mut body = String::new();
    if let Some((text, ok)) = notice {
        let (class, role) = if ok {
            ("status", "status")
        } else {
            ("status error", "alert")
        };
        body.push_str(&format!("<p class=\"{class}\" role=\"{role}\">{}</p>\n", escape(text)));
    }
    body.push_str(&format!(
        "<p>Hello {}, choose what we may send you.</p>\n",
        escape(&c.first_name)
    ));
    if c.status == CustomerStatus::Deactivated {
        body.push_str("<p>This account is closed: we send it nothing.</p>\n");
        return Page {
            status,
            title: "Your communication preferences",
            body,
        };
    }
    body.push_str("<form method=\"post\">\n<input type=\"hidden\" name=\"form\" value=\"preferences\">\n");
    body.push_str("<fieldset>\n<legend>Marketing messages</legend>\n");
    for (channel, name, label) in CHANNELS {
        let active = c.consent_in_force(Purpose::Marketing, channel, now);
        let on = active.is_some();
        // SMS consent needs a phone number on the profile.
        let unavailable = channel == Channel::Sms && c.phone.is_none() && !on;
        // In its last 30 days a consent is renewed by saving it ticked.
        let renewal = active
            .filter(|a| a.is_due_for_renewal_at(now))
            .and_then(|a| a.expires_at())
            .map(|expires| {
                format!(
                    " (ends on {}: save to keep it for two more years)",
                    expires.format("%-d %B %Y")
                )
            });
        body.push_str(&format!(
            "<label class=\"choice\" for=\"{name}\"><input type=\"checkbox\" id=\"{name}\" name=\"{name}\" value=\"on\"{}{}> {label}{}{}</label>\n",
            if on { " checked" } else { "" },
            if unavailable { " disabled" } else { "" },
            if unavailable { " (add a phone number to your account first)" } else { "" },
            renewal.unwrap_or_default(),
        ));
    }
    body.push_str(&format!("<p>{}</p>\n", escape(PUSH_RULE)));
    body.push_str("</fieldset>\n<fieldset>\n<legend>How often we may email you offers</legend>\n");
    for (frequency, value, label) in FREQUENCIES {
        let id = format!("email_frequency_{value}");
        body.push_str(&format!(
            "<label class=\"choice\" for=\"{id}\"><input type=\"radio\" id=\"{id}\" name=\"email_frequency\" value=\"{value}\"{}> {label}</label>\n",
            if c.preferences.email_frequency == frequency { " checked" } else { "" },
        ));
    }
    body.push_str(&format!("<p>{}</p>\n", escape(FREQUENCY_RULE)));
    body.push_str("</fieldset>\n<button type=\"submit\">Save preferences</button>\n</form>\n");
    Page {
        status,
        title: "Your communication preferences",
        body,
    }
}

/// `GET /u/{token}`: the preference centre.
pub async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let shown = async {
        let token = verify(&state, &token)?;
        let c = load(&state, &token.customer_id).await?;
        Ok::<_, Page>(centre(&c, state.clock.now(), StatusCode::OK, None))
    };
    match shown.await {
        Ok(p) | Err(p) => p.into_response(),
    }
}

/// `POST /u/{token}`: RFC 8058 one-click unsubscribe, or the preference-centre form.
pub async fn submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Result<RawBody, Problem>,
) -> Response {
    let done = async {
        let token = verify(&state, &token)?;
        let body = body.map_err(|p| {
            message_page(
                StatusCode::from_u16(p.status).unwrap_or(StatusCode::PAYLOAD_TOO_LARGE),
                "Could not save",
                &p.detail,
            )
        })?;
        if is_one_click(&headers, &body.0) {
            one_click(&state, &token).await
        } else {
            preferences(&state, &token, &headers, &body.0).await
        }
    };
    match done.await {
        Ok(p) | Err(p) => p.into_response(),
    }
}

async fn execute(state: &AppState, id: &str, command: CustomerCommand) -> Result<(), CommandError> {
    let meta = CommandMeta::new(Actor::api(ACTOR));
    let respond = |_: &Customer, _: &[EventEnvelope]| (200, serde_json::Value::Null);
    match state.customers.execute(id, &command, &meta, None, &respond).await? {
        Executed::Applied { .. } | Executed::Replayed { .. } => Ok(()),
    }
}

/// Revokes the token's (purpose, channel) at once; already revoked is fine.
async fn one_click(state: &AppState, token: &UnsubscribeToken) -> Result<Page, Page> {
    let c = load(state, &token.customer_id).await?;
    if c.consent_in_force(token.purpose, token.channel, state.clock.now())
        .is_some()
    {
        let command = CustomerCommand::RevokeConsent(RevokeConsent {
            purpose: token.purpose,
            channel: token.channel,
            reason: ONE_CLICK_REASON.into(),
            method: Some(ConsentMethod::OneClick),
        });
        match execute(state, &token.customer_id, command).await {
            // Revoked meanwhile by another request: the outcome is the same.
            Ok(()) | Err(CommandError::Rejected(CustomerError::Conflict { .. })) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    let what = match token.channel {
        Channel::Email => "email",
        Channel::Sms => "text messages",
        Channel::Push => "push notifications",
    };
    Ok(message_page(
        StatusCode::OK,
        "You are unsubscribed",
        &format!("You will no longer receive {} {what} from us.", token.purpose),
    ))
}

/// Is this the RFC 8058 one-click POST? `List-Unsubscribe=One-Click` as
/// `application/x-www-form-urlencoded`, or as the one field of a
/// `multipart/form-data` body (what RFC 8058 recommends senders accept).
fn is_one_click(headers: &HeaderMap, body: &[u8]) -> bool {
    if body.trim_ascii() == ONE_CLICK_BODY {
        return true;
    }
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart_boundary);
    match boundary {
        Some(boundary) => multipart_fields(body, &boundary)
            .is_some_and(|fields| fields == [("List-Unsubscribe".to_string(), "One-Click".to_string())]),
        None => false,
    }
}

/// The boundary of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

/// The (name, value) fields of a `multipart/form-data` body; `None` if it is not one.
fn multipart_fields(body: &[u8], boundary: &str) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    let mut closed = false;
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            closed = true;
            break;
        }
        let part = part.strip_prefix("\r\n").or_else(|| part.strip_prefix('\n'))?;
        let (head, value) = part.split_once("\r\n\r\n").or_else(|| part.split_once("\n\n"))?;
        let name = head.lines().find_map(|line| {
            let (key, v) = line.split_once(':')?;
            if !key.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            v.split(';')
                .find_map(|p| p.trim().strip_prefix("name="))
                .map(|n| n.trim_matches('"').to_string())
        })?;
        let value = value
            .strip_suffix("\r\n")
            .or_else(|| value.strip_suffix('\n'))
            .unwrap_or(value);
        fields.push((name, value.to_string()));
    }
    closed.then_some(fields)
}

/// The preference-centre form, read from `application/x-www-form-urlencoded`.
#[derive(Debug, PartialEq, Eq)]
struct Form {
    marketing: [bool; 3],
    email_frequency: Option<EmailFrequency>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum FormError {
    #[error("the form could not be read")]
    Encoding,
    #[error("the form is not the preference-centre form")]
    NotOurs,
    #[error("unknown field {0}")]
    Unknown(String),
    #[error("{0} is not a valid email frequency")]
    Frequency(String),
}

/// Decodes one `application/x-www-form-urlencoded` component.
fn decode(raw: &str) -> Result<String, FormError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(FormError::Encoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| FormError::Encoding)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| FormError::Encoding)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::Encoding)
}

fn parse_form(body: &[u8]) -> Result<Form, FormError> {
    let text = std::str::from_utf8(body).map_err(|_| FormError::Encoding)?;
    let mut form = Form {
        marketing: [false; 3],
        email_frequency: None,
    };
    let mut ours = false;
    for pair in text.trim().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode(key)?, decode(value)?);
        if key == "form" && value == "preferences" {
            ours = true;
        } else if key == "email_frequency" {
            let frequency = FREQUENCIES
                .iter()
                .find(|(_, v, _)| *v == value)
                .map(|(f, _, _)| *f)
                .ok_or_else(|| FormError::Frequency(value.chars().take(40).collect()))?;
            form.email_frequency = Some(frequency);
        } else if let Some(i) = CHANNELS.iter().position(|(_, name, _)| *name == key) {
            form.marketing[i] = true;
        } else {
            return Err(FormError::Unknown(key.chars().take(40).collect()));
        }
    }
    if !ours {
        return Err(FormError::NotOurs);
    }
    Ok(form)
}

/// The user agent as consent proof, when it is one the aggregate accepts.
fn user_agent(headers: &HeaderMap) -> Option<String> {
    let ua = headers.get(header::USER_AGENT)?.to_str().ok()?.trim();
    (!ua.is_empty() && ua.len() <= 512 && !ua.chars().any(char::is_control)).then(|| ua.to_string())
}

/// Applies the form: grants and revokes marketing consents (method
/// preference-centre) and sets the email frequency, keeping the other preferences.
async fn preferences(
    state: &AppState,
    token: &UnsubscribeToken,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Page, Page> {
    let form = parse_form(body).map_err(|e| message_page(StatusCode::BAD_REQUEST, "Could not save", &e.to_string()))?;
    let c = load(state, &token.customer_id).await?;
    let mut commands = Vec::new();
    for ((channel, _, _), wanted) in CHANNELS.iter().zip(form.marketing) {
        let now = state.clock.now();
        let in_force = c.consent_in_force(Purpose::Marketing, *channel, now);
        let active = in_force.is_some();
        // Saved ticked in its last 30 days: renewed for two more years.
        let due = in_force.is_some_and(|a| a.is_due_for_renewal_at(now));
        if wanted && (!active || due) {
            commands.push(CustomerCommand::GrantConsent(GrantConsent {
                purpose: Purpose::Marketing,
                channel: *channel,
                method: ConsentMethod::PreferenceCentre,
                ip: None,
                user_agent: user_agent(headers),
            }));
        } else if !wanted && active {
            commands.push(CustomerCommand::RevokeConsent(RevokeConsent {
                purpose: Purpose::Marketing,
                channel: *channel,
                reason: PREFERENCE_CENTRE_REASON.into(),
                method: Some(ConsentMethod::PreferenceCentre),
            }));
        }
    }
    if let Some(frequency) = form.email_frequency.filter(|f| *f != c.preferences.email_frequency) {
        commands.push(CustomerCommand::UpdatePreferences(Preferences {
            email_frequency: frequency,
            ..c.preferences.clone()
        }));
    }
    for command in commands {
        if let Err(e) = execute(state, &token.customer_id, command).await {
            let (status, text) = failure(e);
            if status == StatusCode::NOT_FOUND || status.is_server_error() {
                return Err(message_page(status, "Could not save", &text));
            }
            // Show the form again (with what did get saved), saying what did not.
            let c = load(state, &token.customer_id).await?;
            return Err(centre(
                &c,
                state.clock.now(),
                status,
                Some((&format!("Not saved: {text}"), false)),
            ));
        }
    }
    let c = load(state, &token.customer_id).await?;
    Ok(centre(&c, state.clock.now(), StatusCode::OK, Some(("Saved", true))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_preference_form() {
        let form =
            parse_form(b"form=preferences&marketing_email=on&marketing_push=on&email_frequency=never").expect("form");
        assert_eq!(
            form,
            Form {
                marketing: [true, false, true],
                email_frequency: Some(EmailFrequency::Never),
            }
        );
        assert_eq!(
            parse_form(b"form=preferences").expect("form"),
            Form {
                marketing: [false; 3],
                email_frequency: None
            }
        );
    }

    #[test]
    fn refuses_other_forms() {
        assert_eq!(parse_form(b"marketing_email=on"), Err(FormError::NotOurs));
        assert_eq!(
            parse_form(b"form=preferences&admin=1"),
            Err(FormError::Unknown("admin".into()))
        );
        assert_eq!(
            parse_form(b"form=preferences&email_frequency=hourly"),
            Err(FormError::Frequency("hourly".into()))
        );
        assert_eq!(parse_form(b"form=preferences&x=%zz"), Err(FormError::Encoding));
        assert_eq!(parse_form(b"form=preferences&x=%4"), Err(FormError::Encoding));
        assert_eq!(parse_form(&[0xff, 0xfe]), Err(FormError::Encoding));
    }

    #[test]
    fn recognises_the_one_click_post_in_both_encodings() {
        let mut headers = HeaderMap::new();
        assert!(is_one_click(&headers, b"List-Unsubscribe=One-Click"));
        assert!(!is_one_click(&headers, b"List-Unsubscribe=One-Click&x=1"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=\"b0undary\""),
        );
        let body = "--b0undary\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b0undary--\r\n";
        assert!(is_one_click(&headers, body.as_bytes()));
        let other = body.replace("One-Click", "Other");
        assert!(!is_one_click(&headers, other.as_bytes()));
        let unclosed = body.replace("--b0undary--", "");
        assert!(!is_one_click(&headers, unclosed.as_bytes()));
        assert!(!is_one_click(&headers, b"garbage"));
    }

    #[test]
    fn decodes_form_components() {
        assert_eq!(decode("a+b%20c%C3%A9").expect("decoded"), "a b cé");
    }

    #[test]
    fn escapes_html() {
        assert_eq!(escape("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }
}
