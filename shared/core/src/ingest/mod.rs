//! Segment-compatible ingestion (issue 8, decision 0023): `track`,
//! `identify`, `alias`, `page` and `screen` messages become the CRM's own
//! events.
//!
//! * The Segment e-commerce spec v2 maps onto typed events ([`mapping`],
//!   decision 0052): browsing, coupons, wish lists, reviews and checkout
//!   steps onto activity; `Product Added` / `Product Removed` onto the cart
//!   (so carts abandoned while anonymous start the abandoned-cart journey)
//!   and `Checkout Started` onto its checkout; `Order Completed` onto an
//!   order placed and paid, `Order Updated` onto its amendment (decision
//!   0055), `Order Refunded` onto its refund, `Order Cancelled` onto its
//!   cancellation. Other names become `CustomEvent` on
//!   the activity stream, checked against a registered schema when there
//!   is one.
//! * A batch is taken per shopper ([`shopper_groups`], decision 0056): a
//!   group's receipts are read at once, its profile resolved once until an
//!   identify, alias or order call, and consecutive activity of one profile
//!   appended with its receipts in one write.
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
//!   Completed`, `Order Updated`, `Order Refunded` and `Order Cancelled`
//!   are activity, not changes to an order. Its identify traits are kept
//!   unverified on the activity stream ([`UNVERIFIED_TRAITS_EVENT`]). A
//!   `server` source (the shop's backend, a secret key) may do all of that.

mod commerce;
mod identify;
pub mod mapping;
pub mod message;
pub mod refusals;
mod shoppers;

use crate::commerce::{AddItem, CartCommand, CartCommandError, CartError, CartService, CreateCart, RemoveItem};
use crate::commerce::{OrderCommand, OrderCommandError, OrderError, OrderService, PlaceOrder};
use crate::customer::activity::{activity_stream_id, ActivityEvent};
use crate::customer::{
    CommandError, Customer, CustomerCommand, CustomerError, CustomerService, MarketingConsentChoice, RegisterCustomer,
    RegistrationSource, UpdateProfile,
};
use crate::event::{envelopes, Actor, CommandMeta, EventEnvelope};
use crate::failure::{Classify, Failure, FailureKind};
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
pub use shoppers::shopper_groups;
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

/// Why a message was not taken. Its kind ([`Classify`]) decides the answer:
/// a refusal ([`FailureKind::Poison`]) names the field the client must
/// change; anything else is sent again.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestError {
    /// Bad or impossible: the client must change it (naming the field).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The stores failed, or another writer got there first: send it again.
    /// The failure (retryable or conflict, never poison) keeps its source.
    #[error("try again: {}", .0.cause())]
    Retry(Failure),
}

impl IngestError {
    /// A retry caused by `cause`, whatever kind `cause` would give itself:
    /// ingestion refuses only with a [`Rejection`] naming the field.
    fn retry(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        IngestError::Retry(Failure::retryable(STEP, cause))
    }

    /// A retry caused by `cause`, a conflict when it is one.
    fn retry_classified<E>(cause: E) -> Self
    where
        E: Classify + std::error::Error + Send + Sync + 'static,
    {
        match cause.kind() {
            FailureKind::Conflict => IngestError::Retry(Failure::conflict(STEP, cause)),
            FailureKind::Retryable | FailureKind::Poison => IngestError::retry(cause),
        }
    }

    /// Another writer changed what the message needs first (a link, a
    /// reservation): sent again, it finds the new state.
    fn conflict(reason: &str) -> Self {
        IngestError::Retry(Failure::reason(FailureKind::Conflict, STEP, reason))
    }

    /// A message of a batch that nothing took (it should not happen: sent
    /// again, it is taken alone).
    fn not_taken() -> Self {
        IngestError::Retry(Failure::reason(
            FailureKind::Retryable,
            STEP,
            "the message was not taken",
        ))
    }

    /// What went wrong, as the client is told: the refusal's message, or
    /// the cause of the failure.
    pub fn reason(&self) -> String {
        match self {
            IngestError::Rejected(r) => r.message.clone(),
            IngestError::Retry(failure) => failure.cause().to_string(),
        }
    }
}

impl Classify for IngestError {
    fn kind(&self) -> FailureKind {
        match self {
            IngestError::Rejected(_) => FailureKind::Poison,
            IngestError::Retry(failure) => failure.kind(),
        }
    }
}

/// The step a failure of ingestion names.
const STEP: &str = "ingest";

fn reject(field: &str, message: impl Into<String>) -> IngestError {
    IngestError::Rejected(Rejection::new(field, message))
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        IngestError::retry(e)
    }
}

impl From<IdentityError> for IngestError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Refused(m) => reject("userId", m),
            e if e.is_retryable() => IngestError::retry(e),
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
        e if e.is_retryable() => IngestError::retry(e),
        e => reject("body", e.to_string()),
    }
}

fn cart_error(e: CartCommandError) -> IngestError {
    match e {
        CartCommandError::Rejected(CartError::Invalid { field, message }) => {
            reject(&format!("properties.{field}"), message)
        }
        CartCommandError::Rejected(e) => reject("properties.cart_id", e.to_string()),
        e if e.is_retryable() => IngestError::retry(e),
        e => reject("properties", e.to_string()),
    }
}

/// A shop's cart call the cart cannot take (an unknown cart or product, a
/// cart checked out or abandoned, nothing to check out): `None`, and the
/// caller keeps the call as activity instead of refusing it (decision 0052).
fn kept_by_the_cart(result: Result<bool, IngestError>) -> Result<Option<bool>, IngestError> {
    match result {
        Ok(taken) => Ok(Some(taken)),
        Err(IngestError::Rejected(r)) if r.field == "properties.cart_id" => Ok(None),
        Err(e) => Err(e),
    }
}

fn order_error(e: OrderCommandError) -> IngestError {
    if e.is_retryable() {
        return IngestError::retry(e);
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
    /// The shop's `tracking.require_analytics_consent` (decision 0079):
    /// activity (browsing: track, page and screen calls taken as activity)
    /// is recorded only with analytics consent; refused otherwise. Commerce
    /// facts (carts, orders) are never gated. Off by default.
    pub require_analytics_consent: bool,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            late_after: Duration::days(7),
            require_analytics_consent: false,
        }
    }
}

/// The field a refusal for want of analytics consent names: the customer's
/// (`userId`), or an anonymous visitor's choice as Segment's consent tools
/// send it.
pub const ANONYMOUS_ANALYTICS_CONSENT: &str = "context.consent.categoryPreferences.analytics";

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
    /// Where refused messages are recorded ([`Ingestion::take`]); `None`: nowhere.
    refusals: Option<refusals::RefusedMessages>,
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
            refusals: None,
        }
    }

    /// Checks custom events against the schemas registered for their names.
    pub fn with_schemas(mut self, schemas: Arc<crate::schemas::CustomEventSchemas>) -> Self {
        self.schemas = Some(schemas);
        self
    }

    /// Records the messages [`Ingestion::take`] refuses (decision 0053).
    pub fn with_refusals(mut self, refusals: refusals::RefusedMessages) -> Self {
        self.refusals = Some(refusals);
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
        let key = receipt_key(&from.name, &message.message_id);
        if self.store.receipt(&key).await?.is_some() {
            return Ok(Accepted::Duplicate);
        }
        self.ingest_unseen(from, message).await
    }

    /// [`Ingestion::ingest`] of a message whose receipt was looked for and
    /// not found (a batch reads its shopper's receipts together).
    async fn ingest_unseen(&self, from: &Source, message: &SegmentMessage) -> Result<Accepted, IngestError> {
        let source = from.name.as_str();
        let key = receipt_key(source, &message.message_id);
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
            Kind::Identify => self.identify(message, &idempotency, &meta).await?,
            Kind::Alias => self.alias(message, &meta).await?,
            Kind::Track | Kind::Page | Kind::Screen => {
                let profile = self.profile_of(from.kind, message, &meta).await?;
                let mapped = match mapping::map(message, source, late)? {
                    // A browser's key places, cancels and refunds no order:
                    // the call is activity (decision 0042).
                    // A review a browser reports is the shopper's activity.
                    Mapped::ReviewOrder(review) if from.kind == SourceKind::Client => Mapped::Activity(review.activity),
                    mapped if from.kind == SourceKind::Client && mapped.changes_an_order() => {
                        Mapped::Activity(mapping::as_custom_event(message, late))
                    }
                    mapped => mapped,
                };
                let kept = match mapped {
                    Mapped::Activity(event) => Some(
                        self.append_activity(message, &profile, event, occurred_at, &idempotency, &meta, now)
                            .await?,
                    ),
                    Mapped::AddToCart { cart, currency, item } => kept_by_the_cart(
                        self.add_to_cart(source, &profile, &cart, &currency, item, &idempotency, &meta)
                            .await,
                    )?,
                    Mapped::RemoveFromCart { cart, product_id } => {
                        let cart_id = derived_id("cart", source, &cart);
                        let command = CartCommand::RemoveItem(RemoveItem { product_id });
                        kept_by_the_cart(self.cart_command(&cart_id, &command, &idempotency, &meta).await)?
                    }
                    Mapped::Checkout { cart, currency, items } => kept_by_the_cart(
                        self.report_checkout(source, &profile, &cart, currency, items, &idempotency, &meta)
                            .await,
                    )?,
                    Mapped::Order(order) => {
                        Some(self.place_order(source, &profile, *order, &idempotency, &meta).await?)
                    }
                    Mapped::AmendOrder(update) => {
                        self.amend_order(source, &profile, *update, &idempotency, &meta).await?
                    }
                    Mapped::CancelOrder { order, reason } => Some(
                        self.cancel_order(source, &profile, &order, reason, &idempotency, &meta)
                            .await?,
                    ),
                    Mapped::ReviewOrder(review) => {
                        let review = *review;
                        match self
                            .review_order(source, &profile, &review, &idempotency, &meta)
                            .await?
                        {
                            Some(taken) => Some(taken),
                            None => Some(
                                self.append_activity(
                                    message,
                                    &profile,
                                    review.activity,
                                    occurred_at,
                                    &idempotency,
                                    &meta,
                                    now,
                                )
                                .await?,
                            ),
                        }
                    }
                    Mapped::RefundOrder(refund) => {
                        let refund_id = derived_id("refund", source, &message.message_id);
                        Some(
                            self.refund_order(source, &profile, &refund, refund_id, &idempotency, &meta)
                                .await?,
                        )
                    }
                };
                let taken = match kept {
                    Some(taken) => taken,
                    // A cart call the cart cannot take: kept as activity.
                    None => {
                        let event = mapping::as_custom_event(message, late);
                        self.append_activity(message, &profile, event, occurred_at, &idempotency, &meta, now)
                            .await?
                    }
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

    /// Refuses activity the shop may not record (decision 0079): with
    /// `require_analytics_consent`, a customer's activity needs their
    /// analytics consent in force (on any channel: the purpose is what
    /// counts); an anonymous visitor, of whom the CRM holds no consent,
    /// needs the message to say they chose analytics
    /// ([`ANONYMOUS_ANALYTICS_CONSENT`] `true`, as Segment's consent
    /// wrappers send it). Refused activity is not stored at all.
    async fn refuse_untracked(
        &self,
        message: &SegmentMessage,
        profile: &str,
        now: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        if !self.settings.require_analytics_consent {
            return Ok(());
        }
        if is_anonymous_profile(profile) {
            let chosen = message
                .context
                .get("consent")
                .and_then(|c| c.get("categoryPreferences"))
                .and_then(|p| p.get("analytics"))
                .and_then(Value::as_bool);
            return match chosen {
                Some(true) => Ok(()),
                _ => Err(reject(
                    ANONYMOUS_ANALYTICS_CONSENT,
                    "is not true: the shop records activity only with analytics consent",
                )),
            };
        }
        let customer = self
            .customers
            .load(profile)
            .await
            .map_err(|e| command_error(e, "userId"))?;
        let consents = customer.is_some_and(|c| {
            c.consents
                .iter()
                .any(|g| g.purpose == crate::vocabulary::Purpose::Analytics && g.is_in_force_at(now))
        });
        if consents {
            Ok(())
        } else {
            Err(reject(
                "userId",
                "the customer has not consented to analytics: the shop records activity only with it",
            ))
        }
    }

    /// A server source's call for a user id that names nobody yet, without
    /// an anonymous id, lands on the user id's own profile (decision 0051).
    async fn profile_of(
        &self,
        kind: SourceKind,
        message: &SegmentMessage,
        meta: &CommandMeta,
    ) -> Result<String, IngestError> {
        let profile = match (&message.user_id, &message.anonymous_id) {
            (Some(user), anonymous) => match self.known_customer(user).await? {
                Some(c) => c,
                None => match (anonymous, kind) {
                    (Some(a), _) => self.identity.resolve(&anonymous_profile_id(a)).await?,
                    (None, SourceKind::Server) => self.user_profile_of(user, meta).await?,
                    (None, SourceKind::Client) => {
                        return Err(reject("userId", "is not a known customer: send identify first"))
                    }
                },
            },
            (None, Some(a)) => self.identity.resolve(&anonymous_profile_id(a)).await?,
            (None, None) => return Err(reject("userId", "userId or anonymousId is required")),
        };
        self.refuse_erased(&profile).await?;
        Ok(profile)
    }

    #[allow(clippy::too_many_arguments)]
    async fn append_activity(
        &self,
        message: &SegmentMessage,
        profile: &str,
        event: ActivityEvent,
        occurred_at: DateTime<Utc>,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
        now: DateTime<Utc>,
    ) -> Result<bool, IngestError> {
        self.refuse_untracked(message, profile, now).await?;
        match self
            .append_activity_claiming(profile, event, occurred_at, idempotency, meta, now, None)
            .await?
        {
            Appended::Taken(taken) => Ok(taken),
            Appended::ReservationTaken => Err(IngestError::conflict("a reservation was taken")),
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
        let (stream, events, receipt) = self
            .activity_write(profile, event, occurred_at, idempotency, meta, now)
            .await?;
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
            Err(e) => Err(IngestError::retry_classified(e)),
        }
    }

    /// What appending one activity event takes: its stream, its envelope
    /// (at `occurred_at`) and its receipt; a refused event is refused here,
    /// before any write.
    async fn activity_write(
        &self,
        profile: &str,
        event: ActivityEvent,
        occurred_at: DateTime<Utc>,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
        now: DateTime<Utc>,
    ) -> Result<(String, Vec<EventEnvelope>, CommandReceipt), IngestError> {
        event.validate().map_err(|e| match e {
            CustomerError::Invalid { field, message } => reject(&format!("properties.{field}"), message),
            other => reject("properties", other.to_string()),
        })?;
        if let (ActivityEvent::CustomEvent(custom), Some(schemas)) = (&event, &self.schemas) {
            schemas
                .validate(&custom.event, &custom.properties)
                .await
                .map_err(|e| match e {
                    crate::schemas::SchemaCheckError::Store(s) => IngestError::retry(s),
                    invalid => reject(invalid.field().unwrap_or("properties"), invalid.to_string()),
                })?;
        }
        let stream = activity_stream_id(profile);
        let mut events = envelopes(&stream, Some(profile), &[event], meta, now).map_err(IngestError::retry)?;
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
        Ok((stream, events, receipt))
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
        Err(e @ IngestError::Retry(_)) => {
            json!({ "index": index, "messageId": message_id, "status": "retry", "reason": e.reason() })
        }
    }
}

#[cfg(test)]
mod tests;
