//! The activity event types, as stored: one payload type each, with the
//! `session_id` and `utm` every one may carry.

use crate::event::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Campaign parameters of the visit; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Utm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Declares one activity payload: its own fields plus the `session_id` and
/// `utm` every activity event may carry.
macro_rules! activity {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub session_id: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub utm: Option<Utm>,
            /// Set by ingestion when the event arrived later than the
            /// tolerance allows: stored, but flagged (seed 001).
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            pub late: bool,
        }
    };
}

activity!(ProductViewed {
    product_id: String,
    name: String,
    category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    price_minor: Option<i64>,
});
activity!(PageViewed {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    referrer: Option<String>,
});
activity!(SearchPerformed {
    query: String,
    results_count: u64,
});
activity!(ProductCompared { product_ids: Vec<String> });
activity!(ReviewRead { product_id: String });
activity!(VideoWatched {
    video_id: String,
    seconds_watched: u64,
});
activity!(CheckoutStepCompleted {
    cart_id: String,
    step: String,
});
activity!(SessionStarted {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<String>,
});
activity!(
    /// A login; `session_id` (optional) is the session it opened.
    CustomerLoggedIn {}
);

activity!(
    /// A product list or category was shown (Segment `Product List Viewed`).
    ProductListViewed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        list_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        /// The products shown, in order (at most 100).
        #[serde(default)]
        product_ids: Vec<String>,
    }
);
activity!(
    /// A product was clicked in a list (Segment `Product Clicked`).
    ProductClicked {
        product_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
    }
);
activity!(
    /// The shopper looked at their cart (Segment `Cart Viewed`); `cart_id`
    /// is the CRM's id of the cart.
    ShoppingCartViewed {
        cart_id: String,
        #[serde(default)]
        product_ids: Vec<String>,
    }
);
activity!(
    /// A checkout step was shown (Segment `Checkout Step Viewed`).
    CheckoutStepViewed { cart_id: String, step: String }
);
activity!(
    /// A coupon was entered, applied, denied or removed (Segment's four
    /// `Coupon ...` events), on a cart or an order (the CRM's ids).
    CouponChanged {
        change: CouponChange,
        coupon: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        coupon_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cart_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        discount_minor: Option<i64>,
    }
);
activity!(
    /// A product was added to a wish list (Segment `Product Added to Wishlist`).
    ProductWishlisted {
        product_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wishlist_id: Option<String>,
    }
);
activity!(
    /// The customer reviewed a product (Segment `Product Reviewed`): its
    /// rating, not its text (the review's body stays with the shop).
    ProductReviewed {
        product_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        review_id: Option<String>,
        /// 0 to 100 (a shop's 1 to 5 stars as sent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rating: Option<u32>,
    }
);

/// What happened to a coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CouponChange {
    Entered,
    Applied,
    Denied,
    Removed,
}

activity!(
    /// Any other tracked event: a `track` whose name the CRM does not map
    /// to a typed event, with its properties as sent (ingestion, issue 8).
    CustomEvent {
        event: String,
        #[serde(default)]
        properties: Value,
    }
);

/// One activity event, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum ActivityEvent {
    ProductViewed(ProductViewed),
    PageViewed(PageViewed),
    SearchPerformed(SearchPerformed),
    ProductCompared(ProductCompared),
    ReviewRead(ReviewRead),
    VideoWatched(VideoWatched),
    CheckoutStepCompleted(CheckoutStepCompleted),
    SessionStarted(SessionStarted),
    CustomerLoggedIn(CustomerLoggedIn),
    ProductListViewed(ProductListViewed),
    ProductClicked(ProductClicked),
    ShoppingCartViewed(ShoppingCartViewed),
    CheckoutStepViewed(CheckoutStepViewed),
    CouponChanged(CouponChanged),
    ProductWishlisted(ProductWishlisted),
    ProductReviewed(ProductReviewed),
    CustomEvent(CustomEvent),
}

/// Every activity event type, as `type` names it.
pub const ACTIVITY_EVENT_TYPES: &[&str] = &[
    "ProductViewed",
    "PageViewed",
    "SearchPerformed",
    "ProductCompared",
    "ReviewRead",
    "VideoWatched",
    "CheckoutStepCompleted",
    "SessionStarted",
    "CustomerLoggedIn",
    "ProductListViewed",
    "ProductClicked",
    "ShoppingCartViewed",
    "CheckoutStepViewed",
    "CouponChanged",
    "ProductWishlisted",
    "ProductReviewed",
    "CustomEvent",
];

impl DomainEvent for ActivityEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

impl ActivityEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            ActivityEvent::ProductViewed(_) => "ProductViewed",
            ActivityEvent::PageViewed(_) => "PageViewed",
            ActivityEvent::SearchPerformed(_) => "SearchPerformed",
            ActivityEvent::ProductCompared(_) => "ProductCompared",
            ActivityEvent::ReviewRead(_) => "ReviewRead",
            ActivityEvent::VideoWatched(_) => "VideoWatched",
            ActivityEvent::CheckoutStepCompleted(_) => "CheckoutStepCompleted",
            ActivityEvent::SessionStarted(_) => "SessionStarted",
            ActivityEvent::CustomerLoggedIn(_) => "CustomerLoggedIn",
            ActivityEvent::ProductListViewed(_) => "ProductListViewed",
            ActivityEvent::ProductClicked(_) => "ProductClicked",
            ActivityEvent::ShoppingCartViewed(_) => "ShoppingCartViewed",
            ActivityEvent::CheckoutStepViewed(_) => "CheckoutStepViewed",
            ActivityEvent::CouponChanged(_) => "CouponChanged",
            ActivityEvent::ProductWishlisted(_) => "ProductWishlisted",
            ActivityEvent::ProductReviewed(_) => "ProductReviewed",
            ActivityEvent::CustomEvent(_) => "CustomEvent",
        }
    }
}
