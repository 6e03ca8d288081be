//! Attribution: the credit rules, a property test of the split, and the
//! fixed history's hand-computed attribution.

use super::*;

fn touch(age_days: i64, channel: &str, campaign: Option<&str>) -> Touchpoint {
    Touchpoint {
        at: t() - days(age_days),
        channel: channel.into(),
        campaign: campaign.map(str::to_string),
        event_type: "PageViewed".into(),
    }
}

/// (key, credit_bp, value_minor) of a model's channels or campaigns.
fn rows(credits: &[attr::Credit]) -> Vec<(Option<&str>, i64, i64)> {
    credits
        .iter()
        .map(|c| (c.key.as_deref(), c.credit_bp, c.value_minor))
        .collect()
}

#[test]
fn allocate_is_exact_and_gives_the_remainder_to_the_largest_remainders() {
    // 10 / 3 = 3 r 1 each: the tie goes to the first.
    assert_eq!(allocate(10, &[1, 1, 1]), vec![4, 3, 3]);
    // 100 * 1/6 = 16.67, 100 * 2/6 = 33.33, 100 * 3/6 = 50: 16 r 4, 33 r 2, 50 r 0 → +1 to the first.
    assert_eq!(allocate(100, &[1, 2, 3]), vec![17, 33, 50]);
    assert_eq!(allocate(7, &[0, 0]), vec![7, 0], "all-zero weights: all to the first");
    assert_eq!(allocate(-10, &[1, 1, 1]), vec![-4, -3, -3]);
    assert_eq!(allocate(0, &[5, 1]), vec![0, 0]);
    assert!(allocate(5, &[]).is_empty());
}

#[test]
fn position_based_follows_the_seed_for_one_and_two_touchpoints() {
    let one = attribute(Model::PositionBased, &[touch(3, "email", None)], t(), 999);
    assert_eq!(rows(&one.channels), vec![(Some("email"), 10_000, 999)]);
    // Two: the 40 % and 40 % of first and last, nothing in the middle,
    // scaled to 100 %: 50/50 (999 = 500 + 499, the odd unit to the first).
    let two = attribute(
        Model::PositionBased,
        &[touch(3, "email", None), touch(1, "sms", None)],
        t(),
        999,
    );
    assert_eq!(
        rows(&two.channels),
        vec![(Some("email"), 5_000, 500), (Some("sms"), 5_000, 499)]
    );
    // Three: 40/20/40.
    let three = attribute(
        Model::PositionBased,
        &[touch(3, "email", None), touch(2, "cpc", None), touch(1, "sms", None)],
        t(),
        1_000,
    );
    assert_eq!(
        rows(&three.channels),
        vec![
            (Some("cpc"), 2_000, 200),
            (Some("email"), 4_000, 400),
            (Some("sms"), 4_000, 400)
        ]
    );
}

#[test]
fn time_decay_weighs_touchpoints_by_exp_of_minus_age_over_seven_days() {
    // The seed's weight, exp(-age / 7 d), scaled by 2^40 and rounded:
    // e^-2 · 2^40, e^-1 · 2^40, 2^40 (a half-life would give 2^38, 2^39, 2^40).
    let w = attr::weights(
        Model::TimeDecay,
        &[touch(14, "a", None), touch(7, "b", None), touch(0, "c", None)],
        t(),
    );
    assert_eq!(w, vec![148_802_717_567, 404_487_723_188, 1 << 40]);
    // e^-2 : e^-1 : 1 of 700: 63.02, 171.31, 465.67 → floors 63, 171, 465
    // (699); the unit left goes to the largest remainder (0.67, the newest).
    let a = attribute(
        Model::TimeDecay,
        &[touch(14, "a", None), touch(7, "b", None), touch(0, "c", None)],
        t(),
        700,
    );
    assert_eq!(
        a.touches.iter().map(|c| c.value_minor).collect::<Vec<_>>(),
        vec![63, 171, 466]
    );
}

#[test]
fn no_touchpoint_credits_direct() {
    for model in Model::ALL {
        let a = attribute(model, &[], t(), 4_200);
        assert_eq!(rows(&a.channels), vec![(Some("direct"), 10_000, 4_200)]);
        assert_eq!(rows(&a.campaigns), vec![(None, 10_000, 4_200)]);
    }
}

#[test]
fn utm_medium_else_source_is_the_channel() {
    let at = t();
    let tp = attr::utm_touchpoint(
        "PageViewed",
        at,
        &json!({ "source": "google", "medium": "cpc", "campaign": "autumn" }),
    );
    assert_eq!(
        tp.map(|t| (t.channel, t.campaign)),
        Some(("cpc".into(), Some("autumn".into())))
    );
    let tp = attr::utm_touchpoint("PageViewed", at, &json!({ "source": "newsletter" }));
    assert_eq!(tp.map(|t| (t.channel, t.campaign)), Some(("newsletter".into(), None)));
    assert_eq!(
        attr::utm_touchpoint("PageViewed", at, &json!({ "campaign": "x", "medium": " " })),
        None
    );
    assert_eq!(attr::utm_touchpoint("PageViewed", at, &json!("nonsense")), None);
}

/// Over random touchpoint sets (0 to 15 touchpoints, any ages in the
/// window, any channels and campaigns, totals from 0 to 10^12 minor units):
/// under every model the credits sum to exactly 100 % and the values to
/// exactly the order total, per touchpoint, per channel and per campaign;
/// no share is negative; first- and last-touch give everything to one touchpoint.
#[test]
fn credits_sum_to_100_percent_and_values_to_the_total_for_every_model() {
    let mut rng = Rng(0x00A7_71B0_7E57);
    let channels = ["email", "sms", "push", "cpc", "social", "newsletter"];
    let campaigns = [None, Some("welcome"), Some("autumn"), Some("win-back")];
    for case in 0..3_000 {
        let n = rng.below(16) as usize;
        let mut ages: Vec<i64> = (0..n).map(|_| rng.below(30 * 24 * 3600 * 1000) as i64).collect();
        ages.sort_unstable_by(|a, b| b.cmp(a));
        let touches: Vec<Touchpoint> = ages
            .iter()
            .map(|ms| Touchpoint {
                at: t() - Duration::milliseconds(*ms),
                channel: channels[rng.below(channels.len() as u64) as usize].into(),
                campaign: campaigns[rng.below(campaigns.len() as u64) as usize].map(str::to_string),
                event_type: "MessageSent".into(),
            })
            .collect();
        let total = match rng.below(4) {
            0 => 0,
            1 => rng.below(100) as i64,
            2 => rng.below(1_000_000) as i64,
            _ => rng.below(1_000_000_000_000) as i64,
        };
        for model in Model::ALL {
            let a = attribute(model, &touches, t(), total);
            let ctx = format!("case {case}, {model:?}, {n} touchpoints, total {total}");
            assert_eq!(a.touches.len(), n, "{ctx}");
            assert!(
                a.touches.iter().all(|c| c.credit_bp >= 0 && c.value_minor >= 0),
                "{ctx}"
            );
            if n > 0 {
                assert_eq!(a.touches.iter().map(|c| c.credit_bp).sum::<i64>(), FULL_CREDIT, "{ctx}");
                assert_eq!(a.touches.iter().map(|c| c.value_minor).sum::<i64>(), total, "{ctx}");
            }
            for grouped in [&a.channels, &a.campaigns] {
                assert_eq!(grouped.iter().map(|c| c.credit_bp).sum::<i64>(), FULL_CREDIT, "{ctx}");
                assert_eq!(grouped.iter().map(|c| c.value_minor).sum::<i64>(), total, "{ctx}");
                let percent: f64 = grouped.iter().map(|c| c.credit).sum();
                assert!((percent - 100.0).abs() < 1e-6, "{ctx}: {percent}");
            }
            if n > 0 && matches!(model, Model::FirstTouch | Model::LastTouch) {
                let i = if model == Model::FirstTouch { 0 } else { n - 1 };
                assert_eq!(a.touches[i].credit_bp, FULL_CREDIT, "{ctx}");
                assert_eq!(a.touches[i].value_minor, total, "{ctx}");
            }
        }
    }
}

#[tokio::test]
async fn the_fixed_history_gives_the_hand_computed_attribution() {
    let docs = projected(fixed_history().await).await;
    let t = t();
    let a = attr::order_attribution(docs.as_ref(), "o-a")
        .await
        .expect("read")
        .expect("order o-a");
    assert_eq!(
        (a.order.total_minor, a.order.currency.as_str(), a.order.placed_at),
        (10_001, "EUR", t)
    );
    // In the 30-day window, oldest first (the T-40d visit and the open after
    // the order are not): t1 cpc/autumn T-21d, t2 email/welcome T-14d,
    // t3 sms/welcome T-7d, t4 email/welcome (the click on m1) at T.
    let touches: Vec<_> = a
        .touchpoints
        .iter()
        .map(|p| (p.at, p.channel.as_str(), p.campaign.as_deref(), p.event_type.as_str()))
        .collect();
    assert_eq!(
        touches,
        vec![
            (t - days(21), "cpc", Some("autumn"), "PageViewed"),
            (t - days(14), "email", Some("welcome"), "MessageSent"),
            (t - days(7), "sms", Some("welcome"), "MessageSent"),
            (t, "email", Some("welcome"), "EmailClicked"),
        ]
    );
    let model = |m: Model| a.models.iter().find(|x| x.model == m).expect("model").clone();
    let per_touch = |m: Model| {
        model(m)
            .touches
            .iter()
            .map(|c| (c.credit_bp, c.value_minor))
            .collect::<Vec<_>>()
    };

    // First touch: t1 takes 100 % and 10 001.
    assert_eq!(
        rows(&model(Model::FirstTouch).channels),
        vec![(Some("cpc"), 10_000, 10_001)]
    );
    assert_eq!(
        rows(&model(Model::FirstTouch).campaigns),
        vec![(Some("autumn"), 10_000, 10_001)]
    );
    // Last touch: t4 (email, welcome).
    assert_eq!(
        rows(&model(Model::LastTouch).channels),
        vec![(Some("email"), 10_000, 10_001)]
    );
    assert_eq!(
        rows(&model(Model::LastTouch).campaigns),
        vec![(Some("welcome"), 10_000, 10_001)]
    );

    // Linear: 25 % each = 2 500 bp; 10 001 / 4 = 2 500 r 1, the unit to the
    // first (all remainders tie): 2 501, 2 500, 2 500, 2 500.
    assert_eq!(
        per_touch(Model::Linear),
        vec![(2_500, 2_501), (2_500, 2_500), (2_500, 2_500), (2_500, 2_500)]
    );
    // email = t2 + t4 = 5 000 bp, 5 000; sms = t3; welcome = t2 + t3 + t4.
    assert_eq!(
        rows(&model(Model::Linear).channels),
        vec![
            (Some("cpc"), 2_500, 2_501),
            (Some("email"), 5_000, 5_000),
            (Some("sms"), 2_500, 2_500)
        ]
    );
    assert_eq!(
        rows(&model(Model::Linear).campaigns),
        vec![(Some("autumn"), 2_500, 2_501), (Some("welcome"), 7_500, 7_500)]
    );

    // Time decay, exp(-age / 7 d): ages 21, 14, 7, 0 d → weights e^-3, e^-2,
    // e^-1, 1 (as integers scaled by 2^40; sum 1.5530).
    // Credit: 10 000 · w / sum = 320.59, 871.44, 2 368.83, 6 439.14 (floors
    //   9 998; the 2 left to the remainders 0.83 and 0.59: t3 and t1)
    //   → 321, 871, 2 369, 6 439.
    // Value: 10 001 · w / sum = 320.62, 871.53, 2 369.07, 6 439.79 (floors
    //   9 999; 2 left to 0.79 and 0.62: t4 and t1) → 321, 871, 2 369, 6 440.
    assert_eq!(
        per_touch(Model::TimeDecay),
        vec![(321, 321), (871, 871), (2_369, 2_369), (6_439, 6_440)]
    );
    // email = t2 + t4 = 871 + 6 439 = 7 310 bp, 871 + 6 440 = 7 311.
    assert_eq!(
        rows(&model(Model::TimeDecay).channels),
        vec![
            (Some("cpc"), 321, 321),
            (Some("email"), 7_310, 7_311),
            (Some("sms"), 2_369, 2_369)
        ]
    );
    // welcome = 871 + 2 369 + 6 439 = 9 679 bp; 871 + 2 369 + 6 440 = 9 680.
    assert_eq!(
        rows(&model(Model::TimeDecay).campaigns),
        vec![(Some("autumn"), 321, 321), (Some("welcome"), 9_679, 9_680)]
    );

    // Position based, 4 touchpoints: 40 / 10 / 10 / 40 (20 % over 2 middle).
    // Value: 4 000.4, 1 000.1, 1 000.1, 4 000.4 → floors 10 000, the unit to
    // the largest remainder (0.4, first of the tie: t1): 4 001, 1 000, 1 000, 4 000.
    assert_eq!(
        per_touch(Model::PositionBased),
        vec![(4_000, 4_001), (1_000, 1_000), (1_000, 1_000), (4_000, 4_000)]
    );
    assert_eq!(
        rows(&model(Model::PositionBased).channels),
        vec![
            (Some("cpc"), 4_000, 4_001),
            (Some("email"), 5_000, 5_000),
            (Some("sms"), 1_000, 1_000)
        ]
    );
    assert_eq!(
        rows(&model(Model::PositionBased).campaigns),
        vec![(Some("autumn"), 4_000, 4_001), (Some("welcome"), 6_000, 6_000)]
    );

    // o-d has no touchpoint: direct under every model.
    let d = attr::order_attribution(docs.as_ref(), "o-d")
        .await
        .expect("read")
        .expect("order o-d");
    assert!(d.touchpoints.is_empty());
    assert!(d
        .models
        .iter()
        .all(|m| rows(&m.channels) == vec![(Some("direct"), 10_000, 5_000)]));
    assert_eq!(attr::order_attribution(docs.as_ref(), "o-x").await.expect("read"), None);

    // The period [T-30d, T+1d) under linear: o-a and o-d, 15 001 EUR.
    // cpc 0.25 orders, 2 501; direct 1.0, 5 000; email 0.5, 5 000; sms 0.25, 2 500.
    let r = attr::attribution_report(docs.as_ref(), Model::Linear, t - days(30), t + days(1))
        .await
        .expect("report");
    assert_eq!(r.orders, 2);
    assert_eq!(r.revenue_minor.get("EUR"), Some(&15_001));
    let got: Vec<_> = r
        .channels
        .iter()
        .map(|s| (s.key.as_deref(), s.conversions, s.value_minor.get("EUR").copied()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("cpc"), 0.25, Some(2_501)),
            (Some("direct"), 1.0, Some(5_000)),
            (Some("email"), 0.5, Some(5_000)),
            (Some("sms"), 0.25, Some(2_500)),
        ]
    );
    // The end is exclusive: [T-30d, T) holds o-d only.
    let r = attr::attribution_report(docs.as_ref(), Model::FirstTouch, t - days(30), t)
        .await
        .expect("report");
    assert_eq!((r.orders, r.revenue_minor.get("EUR")), (1, Some(&5_000)));
}
