//! Campaign stats: the fixed history's hand-computed stats.

use super::*;

#[tokio::test]
async fn the_fixed_history_gives_the_hand_computed_campaign_stats() {
    let docs = projected(fixed_history().await).await;
    // welcome: entered by a and b; requested m1 m2 m3; sent m1 m2 m3;
    // suppressed m4. o-a (T) is 7 d after m2 (T-7d): within the 7-day
    // window (end inclusive) → 1 conversion, 10 001 EUR. o-d: d got nothing.
    let s = campaign_stats::campaign_stats(docs.as_ref(), "welcome", 7)
        .await
        .expect("stats");
    assert_eq!(s.entered, 2);
    assert_eq!(
        (s.messages.requested, s.messages.sent, s.messages.suppressed),
        (3, 3, 1)
    );
    assert_eq!(s.conversions, 1);
    assert_eq!(s.revenue_minor.get("EUR"), Some(&10_001));
    // A 6-day window: m2 + 6 d = T-1d < T, m1 + 6 d long before: none.
    let s = campaign_stats::campaign_stats(docs.as_ref(), "welcome", 6)
        .await
        .expect("stats");
    assert_eq!((s.conversions, s.revenue_minor.len()), (0, 0));
    let none = campaign_stats::campaign_stats(docs.as_ref(), "other", 7)
        .await
        .expect("stats");
    assert_eq!((none.entered, none.messages.sent, none.conversions), (0, 0, 0));
}
