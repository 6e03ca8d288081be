//! Segment-compatible ingestion (issue 8, decision 0023): `track`,
//! `identify`, `alias`, `page` and `screen` messages become the CRM's own
//! events.
//!
//! * Known event names map onto typed events ([`mapping`]): `Product
//!   Viewed`, `Products Searched`, `Checkout Step Completed`, `Signed In` onto
//!   activity; `Product Added` / `Product Removed` onto the cart (so carts
//!   abandoned while anonymous start the abandoned-cart journey); `Order
//!   Completed` onto an order. Other names become `CustomEvent` on the
//!   activity stream, checked against a registered schema when there is one.
//! * Each message is taken once per source: its receipt (`ingest#<hash of
//!   source and messageId>`) is written in the same atomic write as its
//!   events, so a repeat, however late, appends nothing. Identify and alias
//!   are idempotent by construction (link once, merge once).
//! * Activity from an `anonymousId` goes to the anonymous profile, or to the
//!   customer it was merged into ([`crate::identity`]).
//! * An event older than the tolerance (`late_after`, default 7 days) is
//!   stored, flagged `late` (seed 001), not dropped.
//! * Each source is trusted as its key is kept ([`SourceKind`], decision
//!   0042). A `client` source (a browser's or an app's public key) records
//!   activity and links a `userId` to its `anonymousId`; it never creates,
//!   finds (by email), changes or merges a customer, and its `Order
//!   Completed` is activity, not an order. Its identify traits are kept
//!   unverified on the activity stream ([`UNVERIFIED_TRAITS_EVENT`]). A
//!   `server` source (the shop's backend, a secret key) may do all of that.

pub mod mapping;
pub mod message;

use crate::commerce::{AddItem, CartCommand, CartCommandError, CartError, CartService, CreateCart, RemoveItem};
use crate::commerce::{OrderCommand, OrderCommandError, OrderError, OrderService, PlaceOrder};
use crate::customer::activity::{activity_stream_id, ActivityEvent};
use crate::customer::{
    CommandError, Customer, CustomerCommand, CustomerError, CustomerService, MarketingConsentChoice, RegisterCustomer,
    RegistrationSource, UpdateProfile,
};
use crate::event::{envelopes, Actor, CommandMeta, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::identity::{anonymous_profile_id, is_anonymous_profile, IdentityError, IdentityService};
use crate::ports::{
    AppendError, AppendRequest, CommandReceipt, EventStore, ExpectedVersion, ReservationChange, StoreError,
};
use crate::privacy::{IdentifierHasher, LookupKind};
use chrono::{DateTime, Duration, Utc};
use mapping::Mapped;
pub use message::{Kind, Rejection, SegmentMessage, MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// How far a source is trusted: as far as its write key is secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A public key (a browser, an app): activity, and a `userId` linked to
    /// its `anonymousId`; never a customer's profile, consent or orders.
    Client,
    /// A secret key (the shop's backend): everything ingestion does.
    Server,
}

impl SourceKind {
    /// `client` or `server`.
    pub fn parse(text: &str) -> Option<SourceKind> {
        match text {
            "client" => Some(SourceKind::Client),
            "server" => Some(SourceKind::Server),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Client => "client",
            SourceKind::Server => "server",
        }
    }
}

/// A source of messages: its name (receipts and derived ids are per name)
/// and how far it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
}

impl Source {
    pub fn client(name: &str) -> Self {
        Source {
            name: name.to_string(),
            kind: SourceKind::Client,
        }
    }

    pub fn server(name: &str) -> Self {
        Source {
            name: name.to_string(),
            kind: SourceKind::Server,
        }
    }
}

/// The `CustomEvent` name under which a client source's `identify` is
/// kept on the activity stream: `properties.traits` as sent (unverified,
/// never applied to the profile) and `properties.user_id`.
pub const UNVERIFIED_TRAITS_EVENT: &str = "Identify";

/// How many anonymous ids a client source may link to one `userId` not yet
/// known to the CRM (its devices and browsers); a server source's later
/// identify merges them all.
pub const MAX_PENDING_ANONYMOUS_IDS: usize = 20;

/// The reservation that records the `slot`-th anonymous profile a client
/// source linked to `user_id` (owner `anonymous-<profile id>`). The user id
/// is named by its keyed hash (HMAC under the identifier secret, decision
/// 0046): it may be an email address.
pub fn pending_link_key(identifiers: &IdentifierHasher, user_id: &str, slot: usize) -> String {
    format!("client-user#{}#{slot}", identifiers.lookup(LookupKind::UserId, user_id))
}

/// The key [`pending_link_key`] had before decision 0046 (an unkeyed
/// SHA-256 of the user id): links recorded then are still merged, never
/// written any more.
pub fn unkeyed_pending_link_key(user_id: &str, slot: usize) -> String {
    let mut h = Sha256::new();
    h.update(b"crm-client-user-link");
    h.update([0u8]);
    h.update(user_id.as_bytes());
    format!("client-user#{}#{slot}", hex::encode(h.finalize()))
}

const PENDING_OWNER_PREFIX: &str = "anonymous-";

/// What happened to one accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Its events were stored (`late`: older than the tolerance, flagged).
    Stored { late: bool },
    /// The same messageId from the same source was taken before: nothing appended.
    Duplicate,
}

/// Why a message was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestError {
    /// Bad or impossible: the client must change it (naming the field).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The stores failed: send it again.
    #[error("try again: {0}")]
    Retry(String),
}

fn reject(field: &str, message: impl Into<String>) -> IngestError {
    IngestError::Rejected(Rejection::new(field, message))
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        IngestError::Retry(e.to_string())
    }
}

impl From<IdentityError> for IngestError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Refused(m) => reject("userId", m),
            e if e.is_retryable() => IngestError::Retry(e.to_string()),
            e => reject("userId", e.to_string()),
        }
    }
}

/// A customer command's refusal, with its field under `prefix` (`traits`).
fn command_error(e: CommandError, prefix: &str) -> IngestError {
    match e {
        CommandError::Rejected(CustomerError::Invalid { field, message }) => {
            reject(&format!("{prefix}.{field}"), message)
        }
        CommandError::Rejected(CustomerError::NotFound) => reject("userId", "no such customer"),
        CommandError::Rejected(CustomerError::Conflict { message, .. }) => reject("userId", message),
        CommandError::EmailTaken { .. } => reject(&format!("{prefix}.email"), "belongs to another customer"),
        e if e.is_retryable() => IngestError::Retry(e.to_string()),
        e => reject("body", e.to_string()),
    }
}

fn cart_error(e: CartCommandError) -> IngestError {
    match e {
        CartCommandError::Rejected(CartError::Invalid { field, message }) => {
            reject(&format!("properties.{field}"), message)
        }
        CartCommandError::Rejected(e) => reject("properties.cart_id", e.to_string()),
        e if e.is_retryable() => IngestError::Retry(e.to_string()),
        e => reject("properties", e.to_string()),
    }
}

fn order_error(e: OrderCommandError) -> IngestError {
    if e.is_retryable() {
        return IngestError::Retry(e.to_string());
    }
    match e {
        OrderCommandError::Command(crate::aggregate::AggregateError::Rejected(OrderError::Invalid {
            field,
            message,
        })) => reject(&format!("properties.{field}"), message),
        e => reject("properties", e.to_string()),
    }
}

/// Settings of ingestion.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Events older than this when they arrive are flagged `late`.
    pub late_after: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            late_after: Duration::days(7),
        }
    }
}

/// The receipt key of a source's message.
pub fn receipt_key(source: &str, message_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0u8]);
    h.update(message_id.as_bytes());
    format!("ingest#{}", hex::encode(h.finalize()))
}

/// The CRM's id of a client's cart or order id (per source): stable, so the
/// same client id always names the same cart.
pub fn derived_id(kind: &str, source: &str, client_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [kind, source, client_id] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.finalize()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// What an append of activity did.
enum Appended {
    /// `true`: stored; `false`: its receipt was there (a duplicate).
    Taken(bool),
    /// The reservation it claimed belongs to someone else now.
    ReservationTaken,
}

/// Takes Segment messages in.
pub struct Ingestion {
    /// Registered schemas of custom events (`None`: none are checked).
    schemas: Option<Arc<crate::schemas::CustomEventSchemas>>,
    store: Arc<dyn EventStore>,
    customers: Arc<CustomerService>,
    carts: Arc<CartService>,
    orders: Arc<OrderService>,
    identity: IdentityService,
    settings: IngestSettings,
}

impl Ingestion {
    pub fn new(
        store: Arc<dyn EventStore>,
        customers: Arc<CustomerService>,
        carts: Arc<CartService>,
        orders: Arc<OrderService>,
        settings: IngestSettings,
    ) -> Self {
        Ingestion {
            schemas: None,
            identity: IdentityService::new(store.clone(), customers.clone()),
            store,
            customers,
            carts,
            orders,
            settings,
        }
    }

    /// Checks custom events against the schemas registered for their names.
    pub fn with_schemas(mut self, schemas: Arc<crate::schemas::CustomEventSchemas>) -> Self {
        self.schemas = Some(schemas);
        self
    }

    pub fn identity(&self) -> &IdentityService {
        &self.identity
    }

    /// The identifier secret's hasher (of the customer service): user ids
    /// and emails are looked up by their keyed hashes (decision 0046).
    fn identifiers(&self) -> Result<&IdentifierHasher, StoreError> {
        self.customers
            .identifiers()
            .ok_or_else(|| StoreError::Failed(crate::customer::NO_IDENTIFIER_SECRET.into()))
    }

    /// Takes one message from `source`, within what its kind may do.
    pub async fn ingest(&self, from: &Source, message: &SegmentMessage) -> Result<Accepted, IngestError> {
        let source = from.name.as_str();
        let key = receipt_key(source, &message.message_id);
        if self.store.receipt(&key).await?.is_some() {
            return Ok(Accepted::Duplicate);
        }
        let now = self.customers.now();
        let occurred_at = message.timestamp.unwrap_or(now);
        let late = occurred_at < now - self.settings.late_after;
        let meta = CommandMeta::new(Actor::system(&format!("ingest:{source}")));
        let idempotency = IdempotencyKey {
            receipt_key: key.clone(),
            request_hash: "segment".into(),
        };
        match message.kind {
            Kind::Identify if from.kind == SourceKind::Client => {
                let taken = self
                    .client_identify(message, late, occurred_at, &idempotency, &meta, now)
                    .await?;
                if !taken {
                    return Ok(Accepted::Duplicate);
                }
            }
            Kind::Identify => self.identify(message, &meta).await?,
            Kind::Alias => self.alias(message, &meta).await?,
            Kind::Track | Kind::Page | Kind::Screen => {
                let profile = self.profile_of(message).await?;
                let mapped = match (from.kind, mapping::map(message, late)?) {
                    // A browser's key places no order: the call is activity.
                    (SourceKind::Client, Mapped::Order(_)) => Mapped::Activity(mapping::as_custom_event(message, late)),
                    (_, mapped) => mapped,
                };
                let taken = match mapped {
                    Mapped::Activity(event) => {
                        self.append_activity(&profile, event, occurred_at, &idempotency, &meta, now)
                            .await?
                    }
                    Mapped::AddToCart { cart, currency, item } => {
                        self.add_to_cart(source, &profile, &cart, &currency, item, &idempotency, &meta)
                            .await?
                    }
                    Mapped::RemoveFromCart { cart, product_id } => {
                        let cart_id = derived_id("cart", source, &cart);
                        let command = CartCommand::RemoveItem(RemoveItem { product_id });
                        self.cart_command(&cart_id, &command, &idempotency, &meta).await?
                    }
                    Mapped::Order(order) => self.place_order(source, &profile, *order, &idempotency, &meta).await?,
                };
                if !taken {
                    return Ok(Accepted::Duplicate);
                }
            }
        }
        Ok(Accepted::Stored { late })
    }

    /// An existing customer named by a user id: linked before, or the
    /// CRM's own customer id.
    async fn known_customer(&self, user_id: &str) -> Result<Option<String>, IngestError> {
        if let Some(c) = self.identity.customer_of_user(user_id).await? {
            return Ok(Some(c));
        }
        if uuid::Uuid::parse_str(user_id).is_ok() && !is_anonymous_profile(user_id) {
            let exists = self
                .customers
                .load(user_id)
                .await
                .map_err(|e| command_error(e, "userId"))?
                .is_some();
            if exists {
                return Ok(Some(user_id.to_string()));
            }
        }
        Ok(None)
    }

    /// Whose activity a track, page or screen call is: the identified
    /// customer, else the anonymous profile (or the customer it was merged
    /// into). An erased customer takes nothing.
    /// Refuses a message for an erased customer (an anonymous profile is
    /// never erased).
    async fn refuse_erased(&self, profile: &str) -> Result<(), IngestError> {
        if is_anonymous_profile(profile) {
            return Ok(());
        }
        let customer = self
            .customers
            .load(profile)
            .await
            .map_err(|e| command_error(e, "userId"))?;
        if customer.is_some_and(|c| c.is_erased()) {
            return Err(reject("userId", "the customer was erased"));
        }
        Ok(())
    }

    async fn profile_of(&self, message: &SegmentMessage) -> Result<String, IngestError> {
        let profile = match (&message.user_id, &message.anonymous_id) {
            (Some(user), anonymous) => match self.known_customer(user).await? {
                Some(c) => c,
                None => match anonymous {
                    Some(a) => self.identity.resolve(&anonymous_profile_id(a)).await?,
                    None => return Err(reject("userId", "is not a known customer: send identify first")),
                },
            },
            (None, Some(a)) => self.identity.resolve(&anonymous_profile_id(a)).await?,
            (None, None) => return Err(reject("userId", "userId or anonymousId is required")),
        };
        self.refuse_erased(&profile).await?;
        Ok(profile)
    }

    async fn append_activity(
        &self,
        profile: &str,
        event: ActivityEvent,
        occurred_at: DateTime<Utc>,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
        now: DateTime<Utc>,
    ) -> Result<bool, IngestError> {
        match self
            .append_activity_claiming(profile, event, occurred_at, idempotency, meta, now, None)
            .await?
        {
            Appended::Taken(taken) => Ok(taken),
            Appended::ReservationTaken => Err(IngestError::Retry("a reservation was taken".into())),
        }
    }

    /// Appends one activity event with its receipt, and `claim` in the same
    /// atomic write.
    #[allow(clippy::too_many_arguments)]
    async fn append_activity_claiming(
        &self,
        profile: &str,
        event: ActivityEvent,
        occurred_at: DateTime<Utc>,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
        now: DateTime<Utc>,
        claim: Option<ReservationChange>,
    ) -> Result<Appended, IngestError> {
        event.validate().map_err(|e| match e {
            CustomerError::Invalid { field, message } => reject(&format!("properties.{field}"), message),
            other => reject("properties", other.to_string()),
        })?;
        if let (ActivityEvent::CustomEvent(custom), Some(schemas)) = (&event, &self.schemas) {
            schemas
                .validate(&custom.event, &custom.properties)
                .await
                .map_err(|e| match e {
                    crate::schemas::SchemaCheckError::Store(s) => IngestError::Retry(s.to_string()),
                    invalid => reject(invalid.field().unwrap_or("properties"), invalid.to_string()),
                })?;
        }
        let stream = activity_stream_id(profile);
        let mut events =
            envelopes(&stream, Some(profile), &[event], meta, now).map_err(|e| IngestError::Retry(e.to_string()))?;
        for e in &mut events {
            e.occurred_at = occurred_at;
        }
        let receipt = CommandReceipt {
            key: idempotency.receipt_key.clone(),
            request_hash: idempotency.request_hash.clone(),
            status: 200,
            body: json!({ "stream_id": stream }),
            recorded_at: now,
        };
        match self
            .store
            .append(AppendRequest {
                stream_id: stream,
                expected: ExpectedVersion::Any,
                events,
                reservations: claim.into_iter().collect(),
                receipt: Some(receipt),
            })
            .await
        {
            Ok(_) => Ok(Appended::Taken(true)),
            Err(AppendError::DuplicateCommand(_)) => Ok(Appended::Taken(false)),
            Err(AppendError::ReservationTaken { .. }) => Ok(Appended::ReservationTaken),
            Err(AppendError::TooLarge(m)) => Err(reject("properties", m)),
            Err(e) => Err(IngestError::Retry(e.to_string())),
        }
    }

    /// A client source's `identify`: the `userId` is linked to the
    /// `anonymousId` and the traits are kept, unverified, as an
    /// [`UNVERIFIED_TRAITS_EVENT`] on the activity stream. Nothing of a
    /// customer is read by, or changed from, the traits.
    ///
    /// * A `userId` a server source (or the API) already linked to a
    ///   customer: the anonymous profile is merged into that customer, as a
    ///   server's identify does, and the traits are kept on their stream.
    /// * An unknown `userId`: the traits are kept on the anonymous profile,
    ///   and a reservation ([`pending_link_key`]) records the link, so the
    ///   server source's identify that later names the customer merges the
    ///   profile (up to [`MAX_PENDING_ANONYMOUS_IDS`] per user id).
    async fn client_identify(
        &self,
        message: &SegmentMessage,
        late: bool,
        occurred_at: DateTime<Utc>,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
        now: DateTime<Utc>,
    ) -> Result<bool, IngestError> {
        let known = match &message.user_id {
            Some(user) => self.known_customer(user).await?,
            None => None,
        };
        let anonymous = message.anonymous_id.as_deref().map(anonymous_profile_id);
        let profile = match (&known, &anonymous) {
            (Some(customer), _) => {
                if let Some(a) = &anonymous {
                    self.identity.merge(a, customer, meta).await?;
                }
                customer.clone()
            }
            (None, Some(a)) => self.identity.resolve(a).await?,
            (None, None) => {
                return Err(reject(
                    "anonymousId",
                    "a client source identifies a userId for its anonymousId: the userId is not a known customer",
                ))
            }
        };
        self.refuse_erased(&profile).await?;
        let event = ActivityEvent::CustomEvent(crate::customer::activity::CustomEvent {
            event: UNVERIFIED_TRAITS_EVENT.to_string(),
            properties: json!({
                "user_id": message.user_id,
                "traits": Value::Object(message.traits.clone()),
                "verified": false,
            }),
            session_id: message.context_text(&["sessionId"]),
            utm: None,
            late,
        });
        // A few tries: another message of the same user may take the slot first.
        for _ in 0..3 {
            let claim = match (&known, &message.user_id, &anonymous) {
                (None, Some(user), Some(a)) => self.pending_claim(user, a).await?,
                _ => None,
            };
            match self
                .append_activity_claiming(&profile, event.clone(), occurred_at, idempotency, meta, now, claim)
                .await?
            {
                Appended::Taken(taken) => return Ok(taken),
                Appended::ReservationTaken => continue,
            }
        }
        Err(IngestError::Retry("the user id's links changed concurrently".into()))
    }

    /// The next free link slot of `user_id` for `profile`: `None` when the
    /// profile holds one already, or every slot is taken.
    async fn pending_claim(&self, user_id: &str, profile: &str) -> Result<Option<ReservationChange>, IngestError> {
        let owner = format!("{PENDING_OWNER_PREFIX}{profile}");
        for slot in 0..MAX_PENDING_ANONYMOUS_IDS {
            let key = pending_link_key(self.identifiers()?, user_id, slot);
            match self.store.reservation_owner(&key).await? {
                Some(o) if o == owner => return Ok(None),
                Some(_) => continue,
                None => return Ok(Some(ReservationChange::Claim { key, owner })),
            }
        }
        tracing::warn!(
            slots = MAX_PENDING_ANONYMOUS_IDS,
            "a user id has every link slot taken: this anonymous id is not linked"
        );
        Ok(None)
    }

    /// Merges into `customer_id` the anonymous profiles a client source
    /// linked to `user_id` before it was known (under the keyed links, then
    /// under those recorded before decision 0046). A profile merged into
    /// another customer meanwhile stays there.
    async fn merge_pending(&self, user_id: &str, customer_id: &str, meta: &CommandMeta) -> Result<(), IngestError> {
        let identifiers = self.identifiers()?.clone();
        let keyed = |slot| pending_link_key(&identifiers, user_id, slot);
        let unkeyed = |slot| unkeyed_pending_link_key(user_id, slot);
        for link_key in [&keyed as &(dyn Fn(usize) -> String + Sync), &unkeyed] {
            for slot in 0..MAX_PENDING_ANONYMOUS_IDS {
                let Some(owner) = self.store.reservation_owner(&link_key(slot)).await? else {
                    break;
                };
                let Some(profile) = owner.strip_prefix(PENDING_OWNER_PREFIX) else {
                    continue;
                };
                match self.identity.merge(profile, customer_id, meta).await {
                    Ok(_) => {}
                    Err(IdentityError::Refused(reason)) => {
                        tracing::info!(%reason, "a client-linked anonymous profile stays where it was merged")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    async fn cart_command(
        &self,
        cart_id: &str,
        command: &CartCommand,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<bool, IngestError> {
        let respond = |c: &crate::commerce::Cart, _: &[EventEnvelope]| (200, json!({ "cart_id": c.id }));
        match self
            .carts
            .execute(cart_id, command, meta, Some(idempotency), &respond)
            .await
        {
            Ok(crate::aggregate::Executed::Applied { .. }) => Ok(true),
            Ok(crate::aggregate::Executed::Replayed { .. }) => Ok(false),
            Err(CartCommandError::IdempotencyKeyReused) => Ok(false),
            Err(e) => Err(cart_error(e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn add_to_cart(
        &self,
        source: &str,
        profile: &str,
        cart: &str,
        currency: &str,
        item: AddItem,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<bool, IngestError> {
        let cart_id = derived_id("cart", source, cart);
        if self.carts.load(&cart_id).await.map_err(cart_error)?.is_none() {
            let create = CartCommand::Create(CreateCart {
                customer_id: profile.to_string(),
                currency: currency.to_string(),
            });
            let respond = |c: &crate::commerce::Cart, _: &[EventEnvelope]| (201, json!({ "cart_id": c.id }));
            match self.carts.execute(&cart_id, &create, meta, None, &respond).await {
                Ok(_) => {}
                // Created concurrently by the same shopper's other message.
                Err(CartCommandError::Rejected(CartError::Conflict { .. })) => {}
                Err(e) => return Err(cart_error(e)),
            }
        }
        self.cart_command(&cart_id, &CartCommand::AddItem(item), idempotency, meta)
            .await
    }

    async fn place_order(
        &self,
        source: &str,
        profile: &str,
        order: mapping::OrderRequest,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<bool, IngestError> {
        if is_anonymous_profile(profile) {
            return Err(reject(
                "userId",
                "an order needs an identified customer: send identify (or a userId) first",
            ));
        }
        let customer: Option<Customer> = self
            .customers
            .load(profile)
            .await
            .map_err(|e| command_error(e, "userId"))?;
        let shipping_address = match order.shipping_address.or_else(|| customer.and_then(|c| c.address)) {
            Some(a) => a,
            None => {
                return Err(reject(
                    "properties.shipping_address",
                    "is required when the customer has no address on file",
                ))
            }
        };
        let command = OrderCommand::Place(Box::new(PlaceOrder {
            customer_id: profile.to_string(),
            cart_id: None,
            items: Some(order.items),
            subtotal_minor: Some(order.subtotal_minor),
            tax_minor: order.tax_minor,
            shipping_minor: order.shipping_minor,
            total_minor: order.total_minor,
            currency: Some(order.currency),
            shipping_address,
            billing_address: None,
        }));
        let order_id = derived_id("order", source, &order.order_id);
        let respond = |o: &crate::commerce::Order, _: &[EventEnvelope]| (201, json!({ "order_id": o.id }));
        match self
            .orders
            .execute(&order_id, &command, meta, Some(idempotency), &respond)
            .await
        {
            Ok(crate::aggregate::Executed::Applied { .. }) => Ok(true),
            Ok(crate::aggregate::Executed::Replayed { .. }) => Ok(false),
            Err(OrderCommandError::Command(crate::aggregate::AggregateError::IdempotencyKeyReused)) => Ok(false),
            Err(e) => Err(order_error(e)),
        }
    }

    /// A server source's `identify`: finds (or creates, from the traits)
    /// the customer of the `userId`, links the user id to them, merges the
    /// anonymous profile of the `anonymousId` and those a client source
    /// linked to the user id into them, and updates their names and phone
    /// from the traits (a new phone revokes SMS consent, in the aggregate).
    async fn identify(&self, message: &SegmentMessage, meta: &CommandMeta) -> Result<(), IngestError> {
        let Some(user_id) = &message.user_id else {
            // Traits of an anonymous visitor: nothing the CRM keeps yet.
            return Ok(());
        };
        let customer_id = match self.known_customer(user_id).await? {
            Some(c) => c,
            None => self.customer_from_traits(message, meta).await?,
        };
        self.identity.link_user(user_id, &customer_id, meta).await?;
        if let Some(anonymous) = &message.anonymous_id {
            self.identity
                .merge(&anonymous_profile_id(anonymous), &customer_id, meta)
                .await?;
        }
        self.merge_pending(user_id, &customer_id, meta).await?;
        self.update_from_traits(&customer_id, message, meta).await
    }

    /// `alias`: `previousId` (an anonymous id, or a user id) is `userId`.
    async fn alias(&self, message: &SegmentMessage, meta: &CommandMeta) -> Result<(), IngestError> {
        let (Some(previous), Some(user_id)) = (&message.previous_id, &message.user_id) else {
            return Err(reject("previousId", "previousId and userId are required for alias"));
        };
        let Some(customer_id) = self.known_customer(user_id).await? else {
            return Err(reject("userId", "is not a known customer: send identify first"));
        };
        match self.known_customer(previous).await? {
            Some(other) if other == customer_id => Ok(()),
            Some(other) => Err(reject(
                "previousId",
                format!(
                    "names customer {other}: merging it into {customer_id} would join two different known customers"
                ),
            )),
            None => {
                self.identity
                    .merge(&anonymous_profile_id(previous), &customer_id, meta)
                    .await?;
                Ok(())
            }
        }
    }

    /// A new customer from an identify's traits: the email address (or one
    /// already registered), names and phone.
    async fn customer_from_traits(&self, message: &SegmentMessage, meta: &CommandMeta) -> Result<String, IngestError> {
        let Some(email) = message.trait_text(&["email"]) else {
            return Err(reject(
                "traits.email",
                "is required to create a customer for an unknown userId",
            ));
        };
        let normalised = crate::customer::normalise_email("traits.email", &email).map_err(|e| match e {
            CustomerError::Invalid { field, message } => reject(&field, message),
            other => reject("traits.email", other.to_string()),
        })?;
        // Looked up through the customer service's store: under the keyed
        // hash, or the key of a reservation made before decision 0046.
        let reservation = crate::customer::email_reservation_name(&normalised);
        let reservations = self.customers.store().clone();
        if let Some(owner) = reservations.reservation_owner(&reservation).await? {
            if let Some(id) = owner.strip_prefix("customer-") {
                return Ok(id.to_string());
            }
        }
        let (first, last) = match (
            message.trait_text(&["firstName", "first_name"]),
            message.trait_text(&["lastName", "last_name"]),
            message.trait_text(&["name"]),
        ) {
            (Some(f), Some(l), _) => (f, l),
            (f, l, Some(name)) => {
                let mut parts = name.splitn(2, ' ');
                let first = f.or_else(|| parts.next().map(str::to_string));
                let last = l.or_else(|| parts.next().map(str::to_string));
                (first.unwrap_or_default(), last.unwrap_or_default())
            }
            (f, l, None) => (f.unwrap_or_default(), l.unwrap_or_default()),
        };
        let register = CustomerCommand::Register(RegisterCustomer {
            email,
            first_name: first,
            last_name: last,
            phone: message.trait_text(&["phone"]),
            source: RegistrationSource::Api,
            // Consent is never inferred from traits: it is given through the CRM.
            marketing_consent: MarketingConsentChoice::default(),
            // The client's own sign-up accepted the terms; Segment does not say.
            terms_accepted: true,
            ip: message.context_text(&["ip"]).unwrap_or_else(|| "0.0.0.0".into()),
            user_agent: message.context_text(&["userAgent"]).unwrap_or_else(|| "segment".into()),
            timezone: message.context_text(&["timezone"]),
            locale: message.context_text(&["locale"]),
        });
        let id = uuid::Uuid::now_v7().to_string();
        let respond = |c: &Customer, _: &[EventEnvelope]| (201, json!({ "id": c.id }));
        match self.customers.execute(&id, &register, meta, None, &respond).await {
            Ok(_) => Ok(id),
            // Registered concurrently by another message: that customer.
            Err(CommandError::EmailTaken { .. }) => match reservations.reservation_owner(&reservation).await? {
                Some(owner) => Ok(owner.trim_start_matches("customer-").to_string()),
                None => Err(IngestError::Retry("the email address changed hands".into())),
            },
            Err(e) => Err(command_error(e, "traits")),
        }
    }

    /// Names and phone from the traits, when they differ from the profile.
    async fn update_from_traits(
        &self,
        customer_id: &str,
        message: &SegmentMessage,
        meta: &CommandMeta,
    ) -> Result<(), IngestError> {
        let Some(customer) = self
            .customers
            .load(customer_id)
            .await
            .map_err(|e| command_error(e, "traits"))?
        else {
            return Ok(());
        };
        if customer.is_erased() {
            return Err(reject("userId", "the customer was erased"));
        }
        let differs = |new: Option<String>, old: &str| new.filter(|n| n != old);
        let update = UpdateProfile {
            first_name: differs(message.trait_text(&["firstName", "first_name"]), &customer.first_name),
            last_name: differs(message.trait_text(&["lastName", "last_name"]), &customer.last_name),
            phone: differs(
                message.trait_text(&["phone"]),
                customer.phone.as_deref().unwrap_or_default(),
            )
            .map(Some),
            address: None,
            date_of_birth: None,
        };
        if update.first_name.is_none() && update.last_name.is_none() && update.phone.is_none() {
            return Ok(());
        }
        let respond = |c: &Customer, _: &[EventEnvelope]| (200, json!({ "id": c.id }));
        self.customers
            .execute(
                customer_id,
                &CustomerCommand::UpdateProfile(update),
                meta,
                None,
                &respond,
            )
            .await
            .map_err(|e| command_error(e, "traits"))?;
        Ok(())
    }
}

/// Reads a batch body: `{"batch": [...]}` within the limits.
pub fn batch_items(body: &Value) -> Result<&Vec<Value>, Rejection> {
    let batch = body
        .get("batch")
        .ok_or_else(|| Rejection::new("batch", "is required"))?
        .as_array()
        .ok_or_else(|| Rejection::new("batch", "must be an array"))?;
    if batch.is_empty() {
        return Err(Rejection::new("batch", "must hold at least one message"));
    }
    if batch.len() > MAX_BATCH_MESSAGES {
        return Err(Rejection::new(
            "batch",
            format!("holds {} messages; at most {MAX_BATCH_MESSAGES}", batch.len()),
        ));
    }
    Ok(batch)
}

/// The JSON answer for one message of a batch.
pub fn outcome_json(index: usize, message_id: Option<&str>, outcome: &Result<Accepted, IngestError>) -> Value {
    match outcome {
        Ok(Accepted::Stored { late }) => {
            json!({ "index": index, "messageId": message_id, "status": "accepted", "late": late })
        }
        Ok(Accepted::Duplicate) => json!({ "index": index, "messageId": message_id, "status": "duplicate" }),
        Err(IngestError::Rejected(r)) => json!({ "index": index, "messageId": message_id, "status": "rejected",
            "field": format!("batch[{index}].{}", r.field), "reason": r.message }),
        Err(IngestError::Retry(m)) => {
            json!({ "index": index, "messageId": message_id, "status": "retry", "reason": m })
        }
    }
}

#[cfg(test)]
mod tests;
