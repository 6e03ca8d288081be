//! Funnels: the fixed history's hand-computed funnels.

use super::*;

#[tokio::test]
async fn the_fixed_history_gives_the_hand_computed_funnels() {
    let docs = projected(fixed_history().await).await;
    let now = t() + days(1);
    let t = t();

    // a: awareness at T-40d (PageViewed), consideration T-20d, intent T-2d,
    // checkout T-1d, purchase T. Time in stage: 20 d = 1 728 000 s,
    // 18 d = 1 555 200 s, 1 d = 86 400 s, 1 d = 86 400 s; purchase: none.
    let a = funnel::customer_funnel(docs.as_ref(), "a", None, None, now)
        .await
        .expect("funnel");
    let got: Vec<_> = a
        .stages
        .iter()
        .map(|s| (s.stage, s.entered_at, s.time_in_stage_seconds))
        .collect();
    assert_eq!(
        got,
        vec![
            (Stage::Awareness, t - days(40), Some(1_728_000)),
            (Stage::Consideration, t - days(20), Some(1_555_200)),
            (Stage::Intent, t - days(2), Some(86_400)),
            (Stage::Checkout, t - days(1), Some(86_400)),
            (Stage::Purchase, t, None),
        ]
    );
    assert!(a.completed);
    assert_eq!(a.drop_off, None);
    assert_eq!(a.conversion_rate, 1.0);

    // b: awareness T-3d, consideration +1 h (3 600 s), intent +2 h, then
    // nothing: dropped off at intent, checkout expected; last activity
    // T-3d+2h, now T+1d: 4 d - 2 h = 345 600 - 7 200 = 338 400 s.
    let b = funnel::customer_funnel(docs.as_ref(), "b", None, None, now)
        .await
        .expect("funnel");
    assert_eq!(b.current_stage, Some(Stage::Intent));
    assert_eq!(b.stages[0].time_in_stage_seconds, Some(3_600));
    assert_eq!(b.stages[1].time_in_stage_seconds, Some(3_600));
    assert_eq!(
        b.drop_off,
        Some(funnel::DropOff {
            stage: Stage::Intent,
            next_expected_stage: Stage::Checkout,
            seconds_since_last_activity: 338_400,
        })
    );
    assert_eq!(b.conversion_rate, 0.6);

    // c: only SessionStarted: dropped off at awareness.
    let c = funnel::customer_funnel(docs.as_ref(), "c", None, None, now)
        .await
        .expect("funnel");
    assert_eq!(
        c.drop_off.map(|d| (d.stage, d.next_expected_stage)),
        Some((Stage::Awareness, Stage::Consideration))
    );
    // d: consideration then purchase (intent and checkout skipped).
    let d = funnel::customer_funnel(docs.as_ref(), "d", None, None, now)
        .await
        .expect("funnel");
    assert_eq!(
        d.stages.iter().map(|s| s.stage).collect::<Vec<_>>(),
        vec![Stage::Consideration, Stage::Purchase]
    );
    assert!(d.completed);
    let nobody = funnel::customer_funnel(docs.as_ref(), "nobody", None, None, now)
        .await
        .expect("funnel");
    assert_eq!((nobody.current_stage, nobody.drop_off), (None, None));

    // The period [T-30d, T+1d): a's T-40d view is outside, so a enters at
    // T-21d. Furthest stages: a purchase, b intent, c awareness, d purchase.
    // Reached at least: awareness 4, consideration 3 (a b d), intent 3,
    // checkout 2 (a d), purchase 2. Conversion from the previous stage:
    // 4/4 = 1, 3/4 = 0.75, 3/3 = 1, 2/3 = 0.6667, 2/2 = 1; dropped off:
    // c at awareness, b at intent.
    let report = funnel::funnel_report(docs.as_ref(), t - days(30), t + days(1), now)
        .await
        .expect("report");
    assert_eq!(report.customers, 4);
    let got: Vec<_> = report
        .stages
        .iter()
        .map(|s| {
            (
                s.stage,
                s.customers,
                s.dropped_off,
                s.conversion_from_previous,
                s.conversion_from_start,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Stage::Awareness, 4, 1, 1.0, 1.0),
            (Stage::Consideration, 3, 0, 0.75, 0.75),
            (Stage::Intent, 3, 1, 1.0, 0.75),
            (Stage::Checkout, 2, 0, 0.6667, 0.5),
            (Stage::Purchase, 2, 0, 1.0, 0.5),
        ]
    );
    // Only b, c and d act in [T-6d, T-1d) ... and a (ItemAddedToCart T-2d):
    // a intent, b intent, c awareness, d consideration (its order is at T-1d, excluded).
    let narrow = funnel::funnel_report(docs.as_ref(), t - days(6), t - days(1), now)
        .await
        .expect("report");
    assert_eq!(
        narrow.stages.iter().map(|s| s.customers).collect::<Vec<_>>(),
        vec![4, 3, 2, 0, 0]
    );
}

/// Seed 000's analyzer puts `ProductViewed` in awareness with `PageViewed`
/// (and its event list `SearchPerformed`); consideration is comparing,
/// reviews and videos (decision 0066).
#[tokio::test]
async fn a_product_view_is_awareness_as_the_seed_says() {
    for event_type in ["PageViewed", "ProductViewed", "SearchPerformed"] {
        assert_eq!(funnel::stage_of(event_type), Some(Stage::Awareness), "{event_type}");
    }
    for event_type in ["ProductCompared", "ReviewRead", "VideoWatched"] {
        assert_eq!(funnel::stage_of(event_type), Some(Stage::Consideration), "{event_type}");
    }
    // A shopper who views a product and adds it to a cart skipped
    // consideration: awareness from the product view for an hour, then intent.
    let store = Arc::new(InMemoryEventStore::default());
    let t = t();
    let view = json!({ "product_id": "p-1", "name": "Mug", "category": "kitchen" });
    put(&store, "activity-v", "ProductViewed", "v", t - days(1), view).await;
    let item = json!({ "cart_id": "cv", "customer_id": "v", "product_id": "p-1", "quantity": 1 });
    put(
        &store,
        "cart-cv",
        "ItemAddedToCart",
        "v",
        t - days(1) + Duration::hours(1),
        item,
    )
    .await;
    let docs = projected(store).await;
    let v = funnel::customer_funnel(docs.as_ref(), "v", None, None, t)
        .await
        .expect("funnel");
    let got: Vec<_> = v
        .stages
        .iter()
        .map(|s| (s.stage, s.event_type.as_str(), s.time_in_stage_seconds))
        .collect();
    assert_eq!(
        got,
        vec![
            (Stage::Awareness, "ProductViewed", Some(3_600)),
            (Stage::Intent, "ItemAddedToCart", None),
        ]
    );
}
