//! The benchmark workload: N customers with a realistic mix (registration,
//! consents, preferences, browsing, carts, abandonment, orders, payments,
//! shipping, unsubscribes), from a seed. The same plan renders as stored
//! events (replay and fold benches) or as API calls (latency and ingest).
//! Pure and deterministic: the same seed gives the same plans, ids and events.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use crm_core::commerce::cart::{CartEvent, CartItem};
use crm_core::commerce::order::{OrderEvent, OrderItem, PaymentMethod};
use crm_core::consent::{Channel, ConsentMethod, GdprContext, LegalBasis, Purpose};
use crm_core::customer::activity::{ActivityEvent, PageViewed, ProductViewed, Utm};
use crm_core::customer::{Address, CustomerEvent, RegistrationSource};
use crm_core::event::{DomainEvent, EventCodecError, EventEnvelope};
use crm_core::preferences::Preferences;
use serde_json::{json, Value};
use uuid::Uuid;

/// xorshift64*: small, fast and deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Never zero (xorshift's fixed point); spread small seeds.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// A product of the bench catalogue: id, name, category, price in cents.
pub const PRODUCTS: &[(&str, &str, &str, i64)] = &[
    ("lamp-01", "Desk lamp", "lighting", 4000),
    ("shade-02", "Lamp shade", "lighting", 2500),
    ("mug-03", "Stoneware mug", "kitchen", 1200),
    ("kettle-04", "Kettle", "kitchen", 5900),
    ("chair-05", "Oak chair", "furniture", 14900),
    ("rug-06", "Wool rug", "textiles", 9900),
    ("throw-07", "Linen throw", "textiles", 4500),
    ("vase-08", "Glass vase", "decor", 2900),
    ("clock-09", "Wall clock", "decor", 3500),
    ("shelf-10", "Wall shelf", "furniture", 7900),
];

const FIRST: &[&str] = &["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Berlin", "10117", "DE"),
    ("Paris", "75001", "FR"),
    ("Dublin", "D02", "IE"),
    ("Lisbon", "1100-148", "PT"),
];

/// What happened to one cart.
#[derive(Debug, Clone, PartialEq)]
pub enum CartOutcome {
    /// Left alone: `CartAbandoned` after an hour.
    Abandoned,
    /// Ordered and paid (after one failed attempt when `payment_failed_first`),
    /// shipped when `shipped`.
    Ordered { payment_failed_first: bool, shipped: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CartPlan {
    pub cart_id: String,
    pub order_id: String,
    /// Indexes into [`PRODUCTS`] with quantities.
    pub items: Vec<(usize, u32)>,
    pub outcome: CartOutcome,
}

/// One customer's story.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerPlan {
    pub index: u64,
    pub customer_id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub city: usize,
    pub marketing_email: bool,
    pub marketing_sms: bool,
    pub preferences: bool,
    /// Browsing: product views (indexes into [`PRODUCTS`]) and page views.
    pub views: Vec<usize>,
    pub pages: u32,
    pub carts: Vec<CartPlan>,
    /// Unsubscribes from marketing email at the end (only if it consented).
    pub unsubscribes: bool,
    /// When the story starts.
    pub start: DateTime<Utc>,
}

/// The generator: `plan(i)` is customer `i`'s story, the same for a seed.
#[derive(Debug, Clone)]
pub struct Workload {
    pub seed: u64,
    /// When the first customer's story starts; each next one a minute later.
    pub start: DateTime<Utc>,
}

fn id(rng: &mut Rng) -> Uuid {
    Uuid::from_u64_pair(rng.next_u64(), rng.next_u64())
}

fn v7(rng: &mut Rng, at: DateTime<Utc>) -> Uuid {
    let mut bytes = [0u8; 10];
    bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(at.timestamp_millis().max(0) as u64, &bytes).into_uuid()
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Workload {
            seed,
            start: DateTime::parse_from_rfc3339("2026-11-01T08:00:00Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|_| Utc::now()),
        }
    }

    fn rng(&self, index: u64, salt: u64) -> Rng {
        Rng::new(self.seed ^ index.wrapping_mul(0x100_0000_01B3) ^ salt.rotate_left(40))
    }

    /// Customer `index`'s story.
    pub fn plan(&self, index: u64) -> CustomerPlan {
        let mut rng = self.rng(index, 1);
        let customer_id = id(&mut rng).to_string();
        let marketing_email = rng.chance(0.6);
        let views = (0..rng.range(2, 10))
            .map(|_| rng.range(0, PRODUCTS.len() as u64 - 1) as usize)
            .collect();
        let carts = (0..(if rng.chance(0.5) { rng.range(1, 2) } else { 0 }))
            .map(|_| CartPlan {
                cart_id: id(&mut rng).to_string(),
                order_id: id(&mut rng).to_string(),
                items: (0..rng.range(1, 3))
                    .map(|_| (rng.range(0, PRODUCTS.len() as u64 - 1) as usize, rng.range(1, 2) as u32))
                    .collect(),
                outcome: if rng.chance(0.55) {
                    CartOutcome::Abandoned
                } else {
                    CartOutcome::Ordered {
                        payment_failed_first: rng.chance(0.1),
                        shipped: rng.chance(0.8),
                    }
                },
            })
            .collect();
        CustomerPlan {
            index,
            email: format!("bench{index}.{}@example.com", self.seed),
            first_name: rng.pick(FIRST).to_string(),
            last_name: rng.pick(LAST).to_string(),
            city: rng.range(0, CITIES.len() as u64 - 1) as usize,
            customer_id,
            marketing_email,
            marketing_sms: rng.chance(0.15),
            preferences: rng.chance(0.3),
            views,
            pages: rng.range(0, 4) as u32,
            carts,
            unsubscribes: marketing_email && rng.chance(0.08),
            start: self.start + Duration::minutes(index as i64),
        }
    }

    /// Customer `index`'s story as stored events (every stream, in order).
    pub fn events(&self, index: u64) -> Result<Vec<EventEnvelope>, EventCodecError> {
        self.plan(index).events(&mut self.rng(index, 2))
    }
}

fn address(city: usize) -> Address {
    let (city, postal_code, country) = CITIES[city];
    Address {
        line1: "1 Bench Street".into(),
        line2: None,
        city: city.into(),
        region: None,
        postal_code: postal_code.into(),
        country: country.into(),
    }
}

fn preferences() -> Preferences {
    serde_json::from_value(
        json!({ "email_frequency": "weekly", "categories": ["lighting", "kitchen"],
        "timezone": "Europe/Berlin", "quiet_hours": { "start": "22:00", "end": "08:00" } }),
    )
    .unwrap_or_default()
}

/// Appends typed events as envelopes of one stream, versions from 1.
struct Streams<'a> {
    rng: &'a mut Rng,
    customer_id: String,
    out: Vec<EventEnvelope>,
    versions: std::collections::HashMap<String, u64>,
    correlation: Uuid,
}

impl Streams<'_> {
    fn push<E: DomainEvent>(&mut self, stream: &str, at: DateTime<Utc>, event: E) -> Result<(), EventCodecError> {
        let (event_type, data) = event.to_parts()?;
        let version = self.versions.entry(stream.to_string()).or_insert(0);
        *version += 1;
        self.out.push(EventEnvelope {
            event_id: v7(self.rng, at),
            stream_id: stream.to_string(),
            version: *version,
            schema_version: E::schema_version(&event_type),
            event_type,
            customer_id: Some(self.customer_id.clone()),
            occurred_at: at,
            recorded_at: at,
            causation_id: None,
            correlation_id: self.correlation,
            actor: "api:bench".into(),
            data,
        });
        Ok(())
    }
}

impl CustomerPlan {
    fn cart_items(&self, cart: &CartPlan) -> Vec<CartItem> {
        cart.items
            .iter()
            .map(|&(p, quantity)| CartItem {
                product_id: PRODUCTS[p].0.into(),
                name: PRODUCTS[p].1.into(),
                quantity,
                unit_price_minor: PRODUCTS[p].3,
            })
            .collect()
    }

    fn total(&self, cart: &CartPlan) -> i64 {
        self.cart_items(cart).iter().map(CartItem::line_total_minor).sum()
    }

    /// The story as stored events, in the order they happen.
    pub fn events(&self, rng: &mut Rng) -> Result<Vec<EventEnvelope>, EventCodecError> {
        let customer = format!("customer-{}", self.customer_id);
        let activity = format!("activity-{}", self.customer_id);
        let correlation = id(rng);
        let mut s = Streams {
            rng,
            customer_id: self.customer_id.clone(),
            out: Vec::new(),
            versions: Default::default(),
            correlation,
        };
        let mut t = self.start;
        s.push(
            &customer,
            t,
            CustomerEvent::CustomerRegistered {
                customer_id: self.customer_id.clone(),
                email: self.email.clone(),
                first_name: self.first_name.clone(),
                last_name: self.last_name.clone(),
                phone: Some("+12025550123".into()),
                source: RegistrationSource::Web,
                ip: "198.51.100.4".into(),
                user_agent: "crm-bench".into(),
                timezone: Some("Europe/Berlin".into()),
                locale: Some("en-GB".into()),
                terms_accepted: true,
            },
        )?;
        for (wanted, channel) in [
            (self.marketing_email, Channel::Email),
            (self.marketing_sms, Channel::Sms),
        ] {
            if wanted {
                s.push(
                    &customer,
                    t,
                    CustomerEvent::ConsentGranted {
                        purpose: Purpose::Marketing,
                        channel,
                        method: ConsentMethod::RegistrationCheckbox,
                        ip: Some("198.51.100.4".into()),
                        user_agent: Some("crm-bench".into()),
                        gdpr: GdprContext {
                            legal_basis: LegalBasis::Consent,
                            jurisdiction: Some(CITIES[self.city].2.into()),
                            explicit: true,
                        },
                    },
                )?;
            }
        }
        s.push(
            &customer,
            t,
            CustomerEvent::EmailVerificationRequested {
                email: self.email.clone(),
                token: format!("tok-{}", self.index),
            },
        )?;
        t += Duration::minutes(5);
        s.push(
            &customer,
            t,
            CustomerEvent::EmailVerified {
                email: self.email.clone(),
            },
        )?;
        if self.preferences {
            t += Duration::minutes(1);
            s.push(
                &customer,
                t,
                CustomerEvent::PreferencesUpdated {
                    preferences: preferences(),
                },
            )?;
        }
        for (i, &p) in self.views.iter().enumerate() {
            t += Duration::seconds(40);
            let (product_id, name, category, price) = PRODUCTS[p];
            s.push(
                &activity,
                t,
                ActivityEvent::ProductViewed(ProductViewed {
                    product_id: product_id.into(),
                    name: name.into(),
                    category: category.into(),
                    price_minor: Some(price),
                    session_id: Some(format!("s-{}", self.index)),
                    utm: (i == 0).then(|| Utm {
                        source: Some("newsletter".into()),
                        medium: Some("email".into()),
                        campaign: Some("autumn".into()),
                        term: None,
                        content: None,
                    }),
                    late: false,
                }),
            )?;
        }
        for page in 0..self.pages {
            t += Duration::seconds(20);
            s.push(
                &activity,
                t,
                ActivityEvent::PageViewed(PageViewed {
                    url: format!("https://shop.example.com/p/{page}"),
                    title: Some("Shop".into()),
                    referrer: None,
                    session_id: Some(format!("s-{}", self.index)),
                    utm: None,
                    late: false,
                }),
            )?;
        }
        for cart in &self.carts {
            let stream = format!("cart-{}", cart.cart_id);
            let created = t + Duration::minutes(1);
            t = created;
            s.push(
                &stream,
                t,
                CartEvent::CartCreated {
                    cart_id: cart.cart_id.clone(),
                    customer_id: self.customer_id.clone(),
                    currency: "EUR".into(),
                },
            )?;
            for item in self.cart_items(cart) {
                t += Duration::seconds(30);
                s.push(
                    &stream,
                    t,
                    CartEvent::ItemAddedToCart {
                        product_id: item.product_id,
                        name: item.name,
                        quantity: item.quantity,
                        unit_price_minor: item.unit_price_minor,
                    },
                )?;
            }
            let total = self.total(cart);
            match &cart.outcome {
                CartOutcome::Abandoned => {
                    let last = t;
                    t += Duration::minutes(60);
                    s.push(
                        &stream,
                        t,
                        CartEvent::CartAbandoned {
                            cart_id: cart.cart_id.clone(),
                            customer_id: self.customer_id.clone(),
                            items: self.cart_items(cart),
                            total_value_minor: total,
                            currency: "EUR".into(),
                            abandoned_at: t,
                            time_in_cart_seconds: (last - created).num_seconds(),
                        },
                    )?;
                }
                CartOutcome::Ordered {
                    payment_failed_first,
                    shipped,
                } => {
                    let order = format!("order-{}", cart.order_id);
                    let items: Vec<OrderItem> = self
                        .cart_items(cart)
                        .into_iter()
                        .map(|i| OrderItem {
                            product_id: i.product_id,
                            name: i.name,
                            category: None,
                            quantity: i.quantity,
                            unit_price_minor: i.unit_price_minor,
                        })
                        .collect();
                    t += Duration::minutes(2);
                    s.push(
                        &order,
                        t,
                        OrderEvent::OrderPlaced {
                            order_id: cart.order_id.clone(),
                            customer_id: self.customer_id.clone(),
                            cart_id: Some(cart.cart_id.clone()),
                            items: items.clone(),
                            subtotal_minor: total,
                            tax_minor: 0,
                            shipping_minor: 0,
                            total_minor: total,
                            currency: "EUR".into(),
                            shipping_address: Some(address(self.city)),
                            billing_address: Some(address(self.city)),
                            discount_minor: 0,
                            adjustment_minor: 0,
                        },
                    )?;
                    let payment_id = format!("pay-{}", self.index);
                    s.push(
                        &order,
                        t,
                        OrderEvent::PaymentInitiated {
                            order_id: cart.order_id.clone(),
                            payment_id: payment_id.clone(),
                            method: PaymentMethod::CreditCard,
                            amount_minor: total,
                            currency: "EUR".into(),
                            provider: "bench".into(),
                        },
                    )?;
                    if *payment_failed_first {
                        t += Duration::seconds(5);
                        s.push(
                            &order,
                            t,
                            OrderEvent::PaymentFailed {
                                order_id: cart.order_id.clone(),
                                payment_id: payment_id.clone(),
                                amount_minor: total,
                                currency: "EUR".into(),
                                error_code: "card_declined".into(),
                                error_message: "declined".into(),
                                retryable: true,
                                attempt: 1,
                            },
                        )?;
                    }
                    t += Duration::seconds(5);
                    s.push(
                        &order,
                        t,
                        OrderEvent::PaymentSucceeded {
                            order_id: cart.order_id.clone(),
                            payment_id,
                            amount_minor: total,
                            currency: "EUR".into(),
                            transaction_id: format!("tx-{}", self.index),
                        },
                    )?;
                    let delivery = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default();
                    s.push(
                        &order,
                        t,
                        OrderEvent::OrderConfirmed {
                            order_id: cart.order_id.clone(),
                            confirmation_number: format!("C{}", self.index),
                            estimated_delivery: delivery,
                            items,
                            total_minor: total,
                            currency: "EUR".into(),
                        },
                    )?;
                    if *shipped {
                        t += Duration::hours(20);
                        s.push(
                            &order,
                            t,
                            OrderEvent::OrderShipped {
                                order_id: cart.order_id.clone(),
                                carrier: "DHL".into(),
                                tracking_number: format!("TRK{}", self.index),
                                tracking_url: None,
                                shipped_at: t,
                                estimated_delivery: Some(delivery),
                            },
                        )?;
                    }
                }
            }
        }
        if self.unsubscribes {
            t += Duration::days(3);
            s.push(
                &customer,
                t,
                CustomerEvent::ConsentRevoked {
                    purpose: Purpose::Marketing,
                    channel: Channel::Email,
                    reason: "too many emails".into(),
                    method: Some(ConsentMethod::OneClick),
                },
            )?;
        }
        Ok(s.out)
    }

    /// The story as API calls. Paths hold `{customer}`, `{cart}` and
    /// `{order}`, filled from the answers as the calls run (carts in order).
    ///
    /// The commands are the same as they always were (so the command
    /// figures stay comparable across runs); reads and ingestion calls are
    /// interleaved (issue 22 item 4): after the registration the customer's
    /// stored events (`GET /customers/{customer}/events`, the event store:
    /// a stable 200) and a Segment `identify` of the customer; after the
    /// browsing a `track` of a product view; after each order the order
    /// (`GET /orders/{order}`, the aggregate); at the end the customer 360
    /// (`GET /customers/{customer}`, a projection: 200, or 503 while the
    /// projector has not caught up, which is accepted and counted).
    pub fn calls(&self) -> Vec<ApiCall> {
        let mut calls = self.command_calls();
        // Where the reads and ingestion calls go: after the registration
        // (index 0), after the browsing, after each order's last command,
        // and at the end.
        let browsed = 1 + usize::from(self.preferences) + self.views.len() + self.pages as usize;
        let mut extra: Vec<(usize, ApiCall)> = vec![
            (
                1,
                ApiCall::new("GET", "/customers/{customer}/events?limit=10", None).group(RouteGroup::Reads),
            ),
            (
                1,
                ApiCall::new(
                    "POST",
                    "/v1/identify",
                    Some(
                        json!({ "userId": "{customer}", "messageId": format!("bench-{}-identify", self.index),
                        "traits": { "email": self.email, "firstName": self.first_name,
                            "lastName": self.last_name } }),
                    ),
                )
                .group(RouteGroup::Ingestion),
            ),
        ];
        if let Some(&p) = self.views.first() {
            let (product_id, name, category, price) = PRODUCTS[p];
            extra.push((
                browsed,
                ApiCall::new(
                    "POST",
                    "/v1/track",
                    Some(json!({ "userId": "{customer}", "event": "Product Viewed",
                        "messageId": format!("bench-{}-track", self.index),
                        "properties": { "product_id": product_id, "name": name, "category": category,
                            "price": price as f64 / 100.0, "currency": "EUR" } })),
                )
                .group(RouteGroup::Ingestion),
            ));
        }
        // After each order's last command (the next cart's creation or the end).
        let mut position = 0;
        let mut ordered = false;
        for (i, call) in calls.iter().enumerate() {
            if call.capture == Some(Capture::Order) {
                ordered = true;
            } else if ordered && (call.capture == Some(Capture::Cart) || call.method == "DELETE") {
                extra.push((i, order_read()));
                ordered = false;
            }
            position = i + 1;
        }
        if ordered {
            extra.push((position, order_read()));
        }
        extra.push((
            position,
            ApiCall::new("GET", "/customers/{customer}", None)
                .group(RouteGroup::Reads)
                .accept(503),
        ));
        // Insert from the back so earlier positions stay valid (the sort is
        // stable: calls at one position keep their order).
        extra.sort_by_key(|(at, _)| *at);
        for (at, call) in extra.into_iter().rev() {
            calls.insert(at.min(calls.len()), call);
        }
        calls
    }

    /// The story's commands alone, in order.
    pub fn command_calls(&self) -> Vec<ApiCall> {
        let mut calls = vec![ApiCall::new(
            "POST",
            "/customers",
            Some(json!({
                "email": self.email,
                "first_name": self.first_name,
                "last_name": self.last_name,
                "phone": "+12025550123",
                "source": "web",
                "marketing_consent": { "email": self.marketing_email, "sms": self.marketing_sms, "push": false },
                "terms_accepted": true,
                "ip": "198.51.100.4",
                "user_agent": "crm-bench",
                "timezone": "Europe/Berlin",
                "locale": "en-GB"
            })),
        )
        .capture(Capture::Customer)];
        if self.preferences {
            calls.push(ApiCall::new(
                "PUT",
                "/customers/{customer}/preferences",
                serde_json::to_value(preferences()).ok(),
            ));
        }
        for (i, &p) in self.views.iter().enumerate() {
            let (product_id, name, category, price) = PRODUCTS[p];
            let mut body = json!({ "type": "ProductViewed", "product_id": product_id, "name": name,
                "category": category, "price_minor": price, "session_id": format!("s-{}", self.index) });
            if i == 0 {
                body["utm"] = json!({ "source": "newsletter", "medium": "email", "campaign": "autumn" });
            }
            calls.push(ApiCall::new("POST", "/customers/{customer}/activity", Some(body)));
        }
        for page in 0..self.pages {
            calls.push(ApiCall::new(
                "POST",
                "/customers/{customer}/activity",
                Some(
                    json!({ "type": "PageViewed", "url": format!("https://shop.example.com/p/{page}"),
                    "session_id": format!("s-{}", self.index) }),
                ),
            ));
        }
        for cart in &self.carts {
            calls.push(
                ApiCall::new(
                    "POST",
                    "/carts",
                    Some(json!({ "customer_id": "{customer}", "currency": "EUR" })),
                )
                .capture(Capture::Cart),
            );
            for item in self.cart_items(cart) {
                calls.push(ApiCall::new(
                    "POST",
                    "/carts/{cart}/items",
                    Some(json!({ "product_id": item.product_id, "name": item.name,
                        "quantity": item.quantity, "unit_price_minor": item.unit_price_minor })),
                ));
            }
            // Abandonment is the cart timer's business (an hour later): nothing to call.
            if let CartOutcome::Ordered {
                payment_failed_first,
                shipped,
            } = &cart.outcome
            {
                let total = self.total(cart);
                let (city, postal_code, country) = CITIES[self.city];
                calls.push(
                    ApiCall::new(
                        "POST",
                        "/orders",
                        Some(
                            json!({ "customer_id": "{customer}", "cart_id": "{cart}", "tax_minor": 0,
                            "shipping_minor": 0, "total_minor": total,
                            "shipping_address": { "line1": "1 Bench Street", "city": city,
                                "postal_code": postal_code, "country": country } }),
                        ),
                    )
                    .capture(Capture::Order),
                );
                let mut statuses = vec!["initiated"];
                if *payment_failed_first {
                    statuses.push("failed");
                    statuses.push("initiated");
                }
                statuses.push("succeeded");
                for (n, status) in statuses.into_iter().enumerate() {
                    let mut body = json!({ "payment_id": format!("pay-{}-{}", self.index, n / 2),
                        "status": status, "method": "credit-card", "amount_minor": total, "currency": "EUR",
                        "provider": "bench", "transaction_id": format!("tx-{}", self.index) });
                    if status == "failed" {
                        body["error_code"] = json!("card_declined");
                        body["error_message"] = json!("declined");
                    }
                    calls.push(ApiCall::new("POST", "/orders/{order}/payments", Some(body)));
                }
                if *shipped {
                    calls.push(ApiCall::new(
                        "POST",
                        "/orders/{order}/ship",
                        Some(json!({ "carrier": "DHL", "tracking_number": format!("TRK{}", self.index) })),
                    ));
                }
            }
        }
        if self.unsubscribes {
            calls.push(ApiCall::new(
                "DELETE",
                "/customers/{customer}/consents/marketing/email?reason=too%20many%20emails",
                None,
            ));
        }
        calls
    }
}

fn order_read() -> ApiCall {
    ApiCall::new("GET", "/orders/{order}", None).group(RouteGroup::Reads)
}

/// The route groups whose latency the bench reports apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteGroup {
    /// The API's commands (bearer token).
    Commands,
    /// The API's reads (bearer token).
    Reads,
    /// The Segment-compatible ingestion API (`/v1/*`, a source's write key).
    Ingestion,
}

impl RouteGroup {
    pub const ALL: [RouteGroup; 3] = [RouteGroup::Commands, RouteGroup::Reads, RouteGroup::Ingestion];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteGroup::Commands => "commands",
            RouteGroup::Reads => "reads",
            RouteGroup::Ingestion => "ingestion",
        }
    }

    /// Its place in [`RouteGroup::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which id an answer's `id` fills in for the next calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    Customer,
    Cart,
    Order,
}

/// One API call of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
    pub capture: Option<Capture>,
    pub group: RouteGroup,
    /// A status besides 2xx that is an answer, not a failure (a
    /// projection's 503 while it catches up); counted apart.
    pub also_accepted: Option<u16>,
}

impl ApiCall {
    fn new(method: &'static str, path: &str, body: Option<Value>) -> Self {
        ApiCall {
            method,
            path: path.to_string(),
            body,
            capture: None,
            group: RouteGroup::Commands,
            also_accepted: None,
        }
    }

    fn capture(mut self, capture: Capture) -> Self {
        self.capture = Some(capture);
        self
    }

    fn group(mut self, group: RouteGroup) -> Self {
        self.group = group;
        self
    }

    fn accept(mut self, status: u16) -> Self {
        self.also_accepted = Some(status);
        self
    }

    /// Whether `status` answers the call: 2xx, or the status it also accepts.
    pub fn answered(&self, status: u16) -> bool {
        (200..300).contains(&status) || self.also_accepted == Some(status)
    }
}

/// The ids captured so far while running one plan's calls.
#[derive(Debug, Clone, Default)]
pub struct Ids {
    pub customer: String,
    pub cart: String,
    pub order: String,
}

impl Ids {
    pub fn fill(&self, text: &str) -> String {
        text.replace("{customer}", &self.customer)
            .replace("{cart}", &self.cart)
            .replace("{order}", &self.order)
    }

    pub fn take(&mut self, capture: Capture, id: String) {
        match capture {
            Capture::Customer => self.customer = id,
            Capture::Cart => self.cart = id,
            Capture::Order => self.order = id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        let (a, b) = (Workload::new(7), Workload::new(7));
        for i in 0..50 {
            assert_eq!(a.plan(i), b.plan(i));
            assert_eq!(a.events(i).expect("events"), b.events(i).expect("events"));
        }
        assert_ne!(Workload::new(8).plan(0), a.plan(0));
    }

    #[test]
    fn the_calls_are_the_commands_in_their_order_with_reads_and_ingestion_between() {
        let w = Workload::new(3);
        let mut orders = 0;
        for i in 0..200 {
            let plan = w.plan(i);
            let calls = plan.calls();
            // The commands alone are the same as before, in the same order.
            let commands: Vec<ApiCall> = calls
                .iter()
                .filter(|c| c.group == RouteGroup::Commands)
                .cloned()
                .collect();
            assert_eq!(commands, plan.command_calls());
            assert!(commands
                .iter()
                .all(|c| !c.path.starts_with("/v1/") && c.method != "GET"));
            // The registration comes first: every later call names its customer.
            assert_eq!(calls[0].capture, Some(Capture::Customer));
            let count = |g: RouteGroup| calls.iter().filter(|c| c.group == g).count();
            let ordered = plan
                .carts
                .iter()
                .filter(|c| matches!(c.outcome, CartOutcome::Ordered { .. }))
                .count();
            orders += ordered;
            assert_eq!(count(RouteGroup::Reads), 2 + ordered, "{calls:#?}");
            assert_eq!(count(RouteGroup::Ingestion), 2);
            for c in &calls {
                match c.group {
                    RouteGroup::Ingestion => assert!(c.path.starts_with("/v1/") && c.method == "POST"),
                    RouteGroup::Reads => assert_eq!(c.method, "GET"),
                    RouteGroup::Commands => {}
                }
            }
            // An order is read after it was placed, never before.
            for (at, c) in calls.iter().enumerate() {
                if c.path == "/orders/{order}" {
                    assert!(calls[..at].iter().any(|p| p.capture == Some(Capture::Order)));
                }
            }
            // Only the 360 (a projection) accepts a 503.
            let last = calls.last().expect("calls");
            assert_eq!(
                (last.path.as_str(), last.also_accepted),
                ("/customers/{customer}", Some(503))
            );
            assert_eq!(calls.iter().filter(|c| c.also_accepted.is_some()).count(), 1);
            assert!(last.answered(503) && last.answered(200) && !last.answered(404));
            assert!(!calls[0].answered(503));
        }
        assert!(orders > 0, "some customers order");
    }

    #[test]
    fn the_mix_has_every_kind_of_event_and_each_decodes_as_its_type() {
        let w = Workload::new(1);
        let mut types = std::collections::BTreeSet::new();
        for i in 0..300 {
            for e in w.events(i).expect("events") {
                match e.stream_id.split('-').next() {
                    Some("customer") => drop(CustomerEvent::from_envelope(&e).expect("customer event")),
                    Some("activity") => drop(ActivityEvent::from_envelope(&e).expect("activity event")),
                    Some("cart") => drop(CartEvent::from_envelope(&e).expect("cart event")),
                    Some("order") => drop(OrderEvent::from_envelope(&e).expect("order event")),
                    other => panic!("unexpected stream {other:?}"),
                }
                types.insert(e.event_type);
            }
        }
        for t in [
            "CustomerRegistered",
            "ConsentGranted",
            "PreferencesUpdated",
            "ProductViewed",
            "CartCreated",
            "CartAbandoned",
            "OrderPlaced",
            "PaymentSucceeded",
            "OrderShipped",
            "ConsentRevoked",
        ] {
            assert!(types.contains(t), "no {t} in {types:?}");
        }
    }
}
