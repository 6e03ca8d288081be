//! Delivery settings: the settle window and its growth, resends, and reading
//! them from the environment.

use super::*;

#[test]
fn resends_are_bounded_and_each_window_is_longer() {
    let settings = DeliverySettings::default();
    assert_eq!(settings.max_email_sends, 3);
    let windows: Vec<Duration> = (0..3).map(|n| settings.settle_window_for(n)).collect();
    assert_eq!(
        windows,
        vec![Duration::minutes(15), Duration::minutes(30), Duration::minutes(60)]
    );
    // Email only, and three sends at the most.
    let may: Vec<bool> = (0..4).map(|n| settings.may_resend(Channel::Email, n)).collect();
    assert_eq!(may, vec![true, true, false, false]);
    assert!(!settings.may_resend(Channel::Sms, 0));
    assert!(!settings.may_resend(Channel::Push, 0));
    for sends in [0, 1] {
        let once = DeliverySettings {
            max_email_sends: sends,
            ..DeliverySettings::default()
        };
        assert!(!once.may_resend(Channel::Email, 0), "{sends}");
    }
    for growth in [0, 1] {
        let fixed = DeliverySettings {
            settle_window_growth: growth,
            ..DeliverySettings::default()
        };
        assert_eq!(fixed.settle_window_for(5), Duration::minutes(15), "{growth}");
    }
    // A grown window stops at a day; a longer base window is kept.
    assert_eq!(settings.settle_window_for(10), Duration::days(1));
    assert_eq!(settings.settle_window_for(usize::MAX), Duration::days(1));
    let long = DeliverySettings {
        settle_window: Duration::days(2),
        ..DeliverySettings::default()
    };
    assert_eq!(long.settle_window_for(2), Duration::days(2));
}

#[test]
fn the_settle_window_setting_is_whole_seconds() {
    assert_eq!(DeliverySettings::default().settle_window, Duration::minutes(15));
    assert_eq!(
        DeliverySettings::parse_settle_window(" 900 "),
        Ok(Duration::minutes(15))
    );
    assert_eq!(DeliverySettings::parse_settle_window("5"), Ok(Duration::seconds(5)));
    for bad in ["0", "-3", "15m", ""] {
        let err = DeliverySettings::parse_settle_window(bad).expect_err(bad);
        assert!(err.contains(SETTLE_WINDOW_SETTING), "{err}");
    }
}

#[test]
fn settings_come_from_one_lookup_and_blank_keeps_the_default() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    };
    let settings = DeliverySettings::from_lookup(&env(&[
        ("FROM_ADDRESS", "Shop <news@shop.example.com>"),
        ("PUBLIC_BASE_URL", "https://crm.example.com"),
        ("SHOP_URL", " "),
        ("DELIVERY_CAPS", "email:2/24h"),
        ("MESSAGE_SETTLE_SECONDS", "30"),
    ]))
    .expect("settings");
    assert_eq!(settings.from_address, "Shop <news@shop.example.com>");
    assert_eq!(settings.public_base_url, "https://crm.example.com");
    assert_eq!(settings.shop_url, DeliverySettings::default().shop_url);
    assert_eq!(settings.policy.caps.len(), 1);
    assert_eq!(settings.settle_window, chrono::Duration::seconds(30));
    assert_eq!(
        DeliverySettings::from_lookup(&env(&[]))
            .expect("defaults")
            .settle_window,
        DeliverySettings::default().settle_window
    );
    for bad in [
        &[("DELIVERY_CAPS", "email:often")][..],
        &[("MESSAGE_SETTLE_SECONDS", "0")][..],
    ] {
        let pairs: &'static [(&'static str, &'static str)] = bad;
        assert!(DeliverySettings::from_lookup(&env(pairs)).is_err(), "{bad:?}");
    }
}
