use super::*;
use crate::consent::{ActiveConsent, ConsentMethod, Purpose};
use crate::preferences::Preferences;
use crate::vocabulary::{ChannelOption, MarketingKind, PushDevice};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("a time").to_utc()
}

fn now() -> DateTime<Utc> {
    at("2026-12-01T12:00:00Z")
}

fn consent(channel: Channel) -> ActiveConsent {
    ActiveConsent {
        purpose: Purpose::Marketing,
        channel,
        method: ConsentMethod::RegistrationCheckbox,
        granted_at: at("2026-11-01T00:00:00Z"),
    }
}

/// A verified customer with a phone, marketing consent on email and SMS,
/// SMS promotions allowed, no preferred channel.
fn customer() -> Customer {
    let mut c = crate::messaging::decision::tests::customer();
    c.preferences = Preferences {
        sms_for_promotions: true,
        ..Preferences::default()
    };
    c.consents = vec![consent(Channel::Email), consent(Channel::Sms)];
    c
}

fn prefers(channel: Channel) -> Customer {
    let mut c = customer();
    c.preferences.preferred_channel = Some(channel);
    c
}

/// A marketing send of `channel: preferred` with fallback `channels`.
fn request(channels: &[Channel]) -> MessageRequest {
    let candidates: Vec<ChannelOption> = channels
        .iter()
        .map(|c| ChannelOption {
            channel: *c,
            template: format!("tpl-{c}"),
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "message_id": "m-1", "instance_id": "i-1", "campaign_id": "checkout-abandonment",
        "campaign_version": 1, "step_id": "nudge", "customer_id": "c-1",
        "channel": channels[0], "template": candidates[0].template, "category": "marketing",
        "purpose": "marketing", "kind": MarketingKind::Lifecycle, "data": {}, "candidates": candidates,
    }))
    .expect("a request")
}

fn chosen(r: &MessageRequest, c: &Customer) -> Option<Channel> {
    choose(r, c, now()).expect("a preferred send has a choice").chosen
}

#[test]
fn a_send_on_one_channel_has_no_choice() {
    let mut r = request(&[Channel::Email]);
    r.candidates.clear();
    assert_eq!(choose(&r, &customer(), now()), None);
}

#[test]
fn the_preferred_channel_goes_first_when_it_qualifies() {
    let r = request(&[Channel::Email, Channel::Sms]);
    let choice = choose(&r, &prefers(Channel::Sms), now()).expect("choice");
    assert_eq!(choice.chosen, Some(Channel::Sms));
    assert_eq!(choice.preferred, Some(Channel::Sms));
    let order: Vec<Channel> = choice.considered.iter().map(|c| c.channel).collect();
    assert_eq!(
        order,
        [Channel::Sms, Channel::Email],
        "preferred first, then the fallback order"
    );
    assert!(choice.considered[0].taken);
    assert!(
        choice.considered[0].reason.contains("preferred"),
        "{:?}",
        choice.considered[0]
    );
    assert!(!choice.considered[1].taken);
    assert!(
        choice.considered[1].reason.contains("sms was taken"),
        "{:?}",
        choice.considered[1]
    );
    let on = on_channel(&r, Channel::Sms);
    assert_eq!((on.channel, on.template.as_str()), (Channel::Sms, "tpl-sms"));
}

#[test]
fn without_a_preference_the_fallback_order_decides() {
    let r = request(&[Channel::Sms, Channel::Email]);
    assert_eq!(chosen(&r, &customer()), Some(Channel::Sms));
    let r = request(&[Channel::Email, Channel::Sms]);
    assert_eq!(chosen(&r, &customer()), Some(Channel::Email));
}

#[test]
fn no_consent_on_the_preferred_channel_falls_back_and_says_why() {
    let mut c = prefers(Channel::Sms);
    c.consents.retain(|x| x.channel != Channel::Sms);
    let choice = choose(&request(&[Channel::Email, Channel::Sms]), &c, now()).expect("choice");
    assert_eq!(choice.chosen, Some(Channel::Email));
    assert_eq!(choice.considered[0].channel, Channel::Sms);
    assert_eq!(
        choice.considered[0].reason,
        "passed over: no marketing consent for sms in force"
    );
    assert!(choice.considered[1].taken);
}

#[test]
fn a_lapsed_consent_does_not_qualify() {
    let c = prefers(Channel::Sms);
    let three_years = now() + chrono::Duration::days(3 * 365);
    let choice = choose(&request(&[Channel::Sms]), &c, three_years).expect("choice");
    assert_eq!(choice.chosen, None);
}

#[test]
fn reachability_unverified_or_invalid_email_no_phone_no_device() {
    let r = request(&[Channel::Email, Channel::Sms, Channel::Push]);
    let mut c = customer();
    c.consents.push(consent(Channel::Push));
    c.preferences.push_categories = vec!["checkout-abandonment".into()];
    c.email_verified = false;
    c.phone = None;
    let choice = choose(&r, &c, now()).expect("choice");
    assert_eq!(choice.chosen, None, "no device either");
    let reasons: Vec<&str> = choice.considered.iter().map(|c| c.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "passed over: the email address is not verified",
            "passed over: no phone number",
            "passed over: no push device"
        ]
    );
    c.push_devices.push(PushDevice {
        platform: "fcm".into(),
        token: "tok".into(),
    });
    assert_eq!(chosen(&r, &c), Some(Channel::Push));
    c.email_verified = true;
    c.email_invalidated = true;
    assert_eq!(
        chosen(&r, &c),
        Some(Channel::Push),
        "an invalidated address does not reach"
    );
}

#[test]
fn marketing_preferences_rule_a_channel_out() {
    let mut c = prefers(Channel::Sms);
    c.preferences.sms_for_promotions = false;
    let choice = choose(&request(&[Channel::Sms, Channel::Email]), &c, now()).expect("choice");
    assert_eq!(choice.chosen, Some(Channel::Email));
    assert_eq!(choice.considered[0].reason, "passed over: no SMS for promotions");
    // A transactional send needs no promotions preference, and no consent.
    let mut r = request(&[Channel::Sms, Channel::Email]);
    r.category = Category::Transactional;
    r.purpose = None;
    c.consents.clear();
    assert_eq!(chosen(&r, &c), Some(Channel::Sms));
}

#[test]
fn a_preferred_channel_the_step_does_not_offer_is_not_tried() {
    let choice = choose(&request(&[Channel::Email]), &prefers(Channel::Push), now()).expect("choice");
    assert_eq!(choice.chosen, Some(Channel::Email));
    assert_eq!(choice.considered.len(), 1);
    assert!(
        choice.considered[0]
            .reason
            .contains("the preferred push is not among the step's channels"),
        "{:?}",
        choice.considered[0]
    );
}

#[test]
fn when_none_qualifies_the_refusal_names_each_reason() {
    let mut c = customer();
    c.consents.clear();
    let choice = choose(&request(&[Channel::Email, Channel::Sms]), &c, now()).expect("choice");
    assert_eq!(choice.chosen, None);
    assert_eq!(
        none_qualified(&choice),
        "no channel qualifies (email: no marketing consent for email in force; sms: no marketing consent for sms in \
         force)"
    );
}
