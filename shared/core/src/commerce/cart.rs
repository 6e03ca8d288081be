//! The cart aggregate: `decide` turns a command into events against the
//! current state, `evolve` folds one event into the state. Both are pure.

use crate::event::DomainEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The stream of cart `id`.
pub fn stream_id(cart_id: &str) -> String {
    format!("cart-{cart_id}")
}

/// The cart id of a `cart-<id>` stream.
pub fn cart_id_of(stream_id: &str) -> Option<&str> {
    stream_id.strip_prefix("cart-").filter(|id| !id.is_empty())
}

/// Most distinct products one cart holds.
pub const MAX_LINES: usize = 100;
/// Most units of one product in one cart.
pub const MAX_QUANTITY: u32 = 10_000;

/// Why a cart command was refused, as an HTTP-free kind of refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    /// The input is not acceptable (422), naming the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such cart (404).
    #[error("cart not found")]
    NotFound,
    /// The cart holds no such product (404).
    #[error("product {0} is not in the cart")]
    ItemNotFound(String),
    /// The command is valid but the cart's state forbids it (409).
    #[error("{message}")]
    Conflict { field: Option<String>, message: String },
}

impl CartError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CartError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn conflict(field: Option<&str>, message: impl Into<String>) -> Self {
        CartError::Conflict {
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCart {
    pub customer_id: String,
    /// ISO 4217, three uppercase letters, e.g. `EUR`.
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    pub product_id: String,
    pub name: String,
    pub quantity: u32,
    /// The price of one unit in minor units of the cart's currency (cents).
    pub unit_price_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveItem {
    pub product_id: String,
}

/// A checkout a shop reports (Segment's `Checkout Started`): the cart's
/// checkout starts; a cart the CRM does not know yet is created with these
/// lines first, in the same write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportCheckout {
    pub customer_id: String,
    pub currency: String,
    pub items: Vec<AddItem>,
}

/// Everything a cart can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartCommand {
    Create(CreateCart),
    AddItem(AddItem),
    RemoveItem(RemoveItem),
    StartCheckout,
    ReportCheckout(ReportCheckout),
    /// The inactivity timer fired (the service checked it is the current one).
    MarkAbandoned {
        now: DateTime<Utc>,
    },
    /// The checkout timer fired: the checkout was not completed in time
    /// (the service checked no order holds the cart; decision 0069).
    MarkCheckoutAbandoned {
        now: DateTime<Utc>,
    },
}

impl CartCommand {
    /// Is this a shopper's activity on the cart (which restarts the inactivity timer)?
    pub fn is_activity(&self) -> bool {
        matches!(
            self,
            CartCommand::Create(_) | CartCommand::AddItem(_) | CartCommand::RemoveItem(_)
        )
    }
}

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CartItem {
    pub product_id: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price_minor: i64,
}

impl CartItem {
    pub fn line_total_minor(&self) -> i64 {
        self.unit_price_minor.saturating_mul(i64::from(self.quantity))
    }
}

/// What happened to a cart. Every event's envelope carries the customer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum CartEvent {
    CartCreated {
        cart_id: String,
        customer_id: String,
        currency: String,
    },
    /// `quantity` units were added; a product already in the cart gets them
    /// on top, at this (latest) name and price.
    ItemAddedToCart {
        product_id: String,
        name: String,
        quantity: u32,
        unit_price_minor: i64,
    },
    ItemRemovedFromCart {
        product_id: String,
        quantity: u32,
    },
    CheckoutStarted {
        items: Vec<CartItem>,
        total_value_minor: i64,
        currency: String,
    },
    CartAbandoned {
        cart_id: String,
        customer_id: String,
        items: Vec<CartItem>,
        total_value_minor: i64,
        currency: String,
        abandoned_at: DateTime<Utc>,
        time_in_cart_seconds: i64,
    },
    /// The checkout started `time_in_checkout_seconds` ago and no order was
    /// placed from the cart within the checkout period (1 h by default;
    /// decision 0069).
    CheckoutAbandoned {
        cart_id: String,
        customer_id: String,
        items: Vec<CartItem>,
        total_value_minor: i64,
        currency: String,
        checkout_started_at: DateTime<Utc>,
        abandoned_at: DateTime<Utc>,
        time_in_checkout_seconds: i64,
    },
}

impl DomainEvent for CartEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

impl CartEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            CartEvent::CartCreated { .. } => "CartCreated",
            CartEvent::ItemAddedToCart { .. } => "ItemAddedToCart",
            CartEvent::ItemRemovedFromCart { .. } => "ItemRemovedFromCart",
            CartEvent::CheckoutStarted { .. } => "CheckoutStarted",
            CartEvent::CartAbandoned { .. } => "CartAbandoned",
            CartEvent::CheckoutAbandoned { .. } => "CheckoutAbandoned",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CartStatus {
    Open,
    CheckedOut,
    Abandoned,
}

/// The cart as the write side knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    pub id: String,
    pub customer_id: String,
    pub currency: String,
    pub status: CartStatus,
    pub items: Vec<CartItem>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the shopper last touched it (create, add, remove).
    pub last_activity_at: DateTime<Utc>,
    /// When its checkout started, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_started_at: Option<DateTime<Utc>>,
    /// When its checkout was abandoned (no order within the checkout period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_abandoned_at: Option<DateTime<Utc>>,
    pub version: u64,
}

impl Cart {
    pub fn total_value_minor(&self) -> i64 {
        self.items
            .iter()
            .fold(0i64, |sum, item| sum.saturating_add(item.line_total_minor()))
    }

    pub fn item(&self, product_id: &str) -> Option<&CartItem> {
        self.items.iter().find(|i| i.product_id == product_id)
    }

    fn ensure_open(&self) -> Result<(), CartError> {
        match self.status {
            CartStatus::Open => Ok(()),
            CartStatus::CheckedOut => Err(CartError::conflict(None, "the cart is checked out")),
            CartStatus::Abandoned => Err(CartError::conflict(None, "the cart was abandoned")),
        }
    }
}

/// Decides which events a command produces, or why it is refused. `cart_id`
/// is the id a new cart gets (used by `Create` only).
pub fn decide(state: Option<&Cart>, command: &CartCommand, cart_id: &str) -> Result<Vec<CartEvent>, CartError> {
    match (state, command) {
        (Some(_), CartCommand::Create(_)) => Err(CartError::conflict(None, "cart already exists")),
        (None, CartCommand::Create(cmd)) => create(cmd, cart_id),
        (None, CartCommand::ReportCheckout(cmd)) => report_checkout(cmd, cart_id),
        (Some(c), CartCommand::ReportCheckout(_)) => start_checkout(c),
        (None, _) => Err(CartError::NotFound),
        (Some(c), CartCommand::AddItem(cmd)) => add_item(c, cmd),
        (Some(c), CartCommand::RemoveItem(cmd)) => remove_item(c, cmd),
        (Some(c), CartCommand::StartCheckout) => start_checkout(c),
        (Some(c), CartCommand::MarkAbandoned { now }) => mark_abandoned(c, *now),
        (Some(c), CartCommand::MarkCheckoutAbandoned { now }) => mark_checkout_abandoned(c, *now),
    }
}

fn create(cmd: &CreateCart, cart_id: &str) -> Result<Vec<CartEvent>, CartError> {
    let customer_id = cmd.customer_id.trim();
    if customer_id.is_empty() {
        return Err(CartError::invalid("customer_id", "is required"));
    }
    let currency = cmd.currency.trim();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(CartError::invalid(
            "currency",
            "is not an ISO 4217 currency code of three uppercase letters such as EUR",
        ));
    }
    Ok(vec![CartEvent::CartCreated {
        cart_id: cart_id.to_string(),
        customer_id: customer_id.to_string(),
        currency: currency.to_string(),
    }])
}

pub use crate::vocabulary::valid_product_id;

fn add_item(c: &Cart, cmd: &AddItem) -> Result<Vec<CartEvent>, CartError> {
    c.ensure_open()?;
    if !valid_product_id(&cmd.product_id) {
        return Err(CartError::invalid(
            "product_id",
            "must be 1 to 64 letters, digits or . _ : -",
        ));
    }
    let name = cmd.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(CartError::invalid(
            "name",
            "must be 1 to 200 characters without control characters",
        ));
    }
    if cmd.quantity < 1 || cmd.quantity > MAX_QUANTITY {
        return Err(CartError::invalid(
            "quantity",
            format!("must be between 1 and {MAX_QUANTITY}"),
        ));
    }
    if cmd.unit_price_minor < 0 {
        return Err(CartError::invalid("unit_price_minor", "must not be negative"));
    }
    let existing = c.item(&cmd.product_id);
    let quantity = existing.map_or(0, |i| i.quantity).saturating_add(cmd.quantity);
    if quantity > MAX_QUANTITY {
        return Err(CartError::invalid(
            "quantity",
            format!("the cart would hold more than {MAX_QUANTITY} of this product"),
        ));
    }
    if existing.is_none() && c.items.len() >= MAX_LINES {
        return Err(CartError::conflict(
            Some("product_id"),
            format!("a cart holds at most {MAX_LINES} products"),
        ));
    }
    // The new total must stay representable.
    let others = c
        .items
        .iter()
        .filter(|i| i.product_id != cmd.product_id)
        .try_fold(0i64, |sum, i| {
            i.unit_price_minor
                .checked_mul(i64::from(i.quantity))
                .and_then(|v| sum.checked_add(v))
        });
    let total = others.and_then(|o| {
        cmd.unit_price_minor
            .checked_mul(i64::from(quantity))
            .and_then(|v| o.checked_add(v))
    });
    if total.is_none() {
        return Err(CartError::invalid(
            "unit_price_minor",
            "the cart's total would be too large",
        ));
    }
    Ok(vec![CartEvent::ItemAddedToCart {
        product_id: cmd.product_id.clone(),
        name: name.to_string(),
        quantity: cmd.quantity,
        unit_price_minor: cmd.unit_price_minor,
    }])
}

fn remove_item(c: &Cart, cmd: &RemoveItem) -> Result<Vec<CartEvent>, CartError> {
    c.ensure_open()?;
    let Some(item) = c.item(&cmd.product_id) else {
        return Err(CartError::ItemNotFound(cmd.product_id.clone()));
    };
    Ok(vec![CartEvent::ItemRemovedFromCart {
        product_id: item.product_id.clone(),
        quantity: item.quantity,
    }])
}

/// A new cart with `cmd`'s lines, then its checkout (one write).
fn report_checkout(cmd: &ReportCheckout, cart_id: &str) -> Result<Vec<CartEvent>, CartError> {
    let mut events = create(
        &CreateCart {
            customer_id: cmd.customer_id.clone(),
            currency: cmd.currency.clone(),
        },
        cart_id,
    )?;
    let mut state = fold(None, events.iter().map(|e| (e, DateTime::<Utc>::MIN_UTC, 0)));
    for (i, item) in cmd.items.iter().enumerate() {
        let Some(cart) = state.as_ref() else { break };
        let added = add_item(cart, item).map_err(|e| match e {
            CartError::Invalid { field, message } => CartError::invalid(format!("items[{i}].{field}"), message),
            other => other,
        })?;
        state = fold(state, added.iter().map(|e| (e, DateTime::<Utc>::MIN_UTC, 0)));
        events.extend(added);
    }
    let Some(cart) = state.as_ref() else {
        return Err(CartError::NotFound);
    };
    events.extend(start_checkout(cart)?);
    Ok(events)
}

fn start_checkout(c: &Cart) -> Result<Vec<CartEvent>, CartError> {
    c.ensure_open()?;
    if c.items.is_empty() {
        return Err(CartError::conflict(None, "the cart is empty"));
    }
    Ok(vec![CartEvent::CheckoutStarted {
        items: c.items.clone(),
        total_value_minor: c.total_value_minor(),
        currency: c.currency.clone(),
    }])
}

fn mark_abandoned(c: &Cart, now: DateTime<Utc>) -> Result<Vec<CartEvent>, CartError> {
    c.ensure_open()?;
    Ok(vec![CartEvent::CartAbandoned {
        cart_id: c.id.clone(),
        customer_id: c.customer_id.clone(),
        items: c.items.clone(),
        total_value_minor: c.total_value_minor(),
        currency: c.currency.clone(),
        abandoned_at: now,
        time_in_cart_seconds: (now - c.created_at).num_seconds().max(0),
    }])
}

fn mark_checkout_abandoned(c: &Cart, now: DateTime<Utc>) -> Result<Vec<CartEvent>, CartError> {
    let started = match (c.status, c.checkout_started_at, c.checkout_abandoned_at) {
        (CartStatus::CheckedOut, Some(started), None) => started,
        (CartStatus::CheckedOut, _, Some(_)) => {
            return Err(CartError::conflict(None, "the checkout was already abandoned"))
        }
        _ => return Err(CartError::conflict(None, "the cart's checkout has not started")),
    };
    Ok(vec![CartEvent::CheckoutAbandoned {
        cart_id: c.id.clone(),
        customer_id: c.customer_id.clone(),
        items: c.items.clone(),
        total_value_minor: c.total_value_minor(),
        currency: c.currency.clone(),
        checkout_started_at: started,
        abandoned_at: now,
        time_in_checkout_seconds: (now - started).num_seconds().max(0),
    }])
}

/// Folds one event into the state. `at` is when it occurred, `version` its
/// position in the stream.
pub fn evolve(state: Option<Cart>, event: &CartEvent, at: DateTime<Utc>, version: u64) -> Option<Cart> {
    if let CartEvent::CartCreated {
        cart_id,
        customer_id,
        currency,
    } = event
    {
        return Some(Cart {
            id: cart_id.clone(),
            customer_id: customer_id.clone(),
            currency: currency.clone(),
            status: CartStatus::Open,
            items: Vec::new(),
            created_at: at,
            updated_at: at,
            last_activity_at: at,
            checkout_started_at: None,
            checkout_abandoned_at: None,
            version,
        });
    }
    let mut c = state?;
    c.updated_at = at;
    c.version = version;
    match event {
        CartEvent::CartCreated { .. } => {}
        CartEvent::ItemAddedToCart {
            product_id,
            name,
            quantity,
            unit_price_minor,
        } => {
            c.last_activity_at = at;
            match c.items.iter_mut().find(|i| &i.product_id == product_id) {
                Some(item) => {
                    item.quantity = item.quantity.saturating_add(*quantity);
                    item.name = name.clone();
                    item.unit_price_minor = *unit_price_minor;
                }
                None => c.items.push(CartItem {
                    product_id: product_id.clone(),
                    name: name.clone(),
                    quantity: *quantity,
                    unit_price_minor: *unit_price_minor,
                }),
            }
        }
        CartEvent::ItemRemovedFromCart { product_id, .. } => {
            c.last_activity_at = at;
            c.items.retain(|i| &i.product_id != product_id);
        }
        CartEvent::CheckoutStarted { .. } => {
            c.status = CartStatus::CheckedOut;
            c.checkout_started_at = Some(at);
        }
        CartEvent::CartAbandoned { .. } => c.status = CartStatus::Abandoned,
        CartEvent::CheckoutAbandoned { abandoned_at, .. } => c.checkout_abandoned_at = Some(*abandoned_at),
    }
    Some(c)
}

/// Folds a sequence of (event, occurred_at, version) onto a starting state.
pub fn fold<'a>(
    start: Option<Cart>,
    events: impl IntoIterator<Item = (&'a CartEvent, DateTime<Utc>, u64)>,
) -> Option<Cart> {
    events
        .into_iter()
        .fold(start, |state, (event, at, version)| evolve(state, event, at, version))
}

/// The cart aggregate for [`crate::aggregate::AggregateService`].
pub struct CartAggregate;

impl crate::aggregate::Aggregate for CartAggregate {
    type State = Cart;
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;
    type Input = ();

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }
    fn customer_id(state: &Cart) -> Option<&str> {
        Some(&state.customer_id)
    }
    fn version(state: &Cart) -> u64 {
        state.version
    }
    fn not_found() -> CartError {
        CartError::NotFound
    }
    fn decide(
        state: Option<&Cart>,
        command: &CartCommand,
        ctx: &crate::aggregate::DecideContext<'_, ()>,
    ) -> Result<Vec<CartEvent>, CartError> {
        decide(state, command, ctx.id)
    }
    fn evolve(state: Option<Cart>, event: &CartEvent, at: DateTime<Utc>, version: u64) -> Option<Cart> {
        evolve(state, event, at, version)
    }
}
