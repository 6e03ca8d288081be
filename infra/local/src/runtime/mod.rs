//! The local runtime assembled: the SQLite event store (which wakes the bus
//! on every append), the read models, the dead letters and the bus with the
//! template's rules, all in one database file. Personal data is encrypted at
//! rest (decision 0017): every reader and writer goes through
//! [`EncryptingEventStore`] with the data keys of [`SqliteKeyStore`] (master
//! key in the database's directory), and the bus, which reads the stored
//! events, decrypts each one before a target sees it. The read models keep
//! their personal values sealed under the same keys ([`SealedReadModels`],
//! decision 0045).

pub mod bus;
pub mod dev;
pub mod mail_view;
mod rebuild;
pub mod retention;
pub use rebuild::REBUILD_CHUNK;
pub mod serve;
pub mod sources;

use crate::adapters::data_dir::DataDir;
use crate::adapters::keys::{load_or_create_master_key, SqliteKeyStore};
use crate::adapters::mail::MailSink;
use crate::adapters::read_models::SqliteReadModels;
use crate::adapters::store::SqliteEventStore;
use crate::adapters::timers::SqliteScheduler;
use crate::runtime::bus::{rules_from_template, LocalBus, RuleError, SqliteDeadLetters, Target};
use crate::runtime::sources::{LOCAL_SOURCE, LOCAL_WEB_SOURCE};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_api::{router, ApiPorts, ApiSettings, Auth};
use crm_core::assembly::AssembledGroups;
use crm_core::clock::{Clock, SystemClock, VirtualClock};
use crm_core::consumer::{ConsumerGroup, DecryptingHandler, SealedDeadLetters};
use crm_core::event::EventEnvelope;
use crm_core::journey::catalog::StoredCatalog;
use crm_core::journey::engine::{JourneyEngine, SweepBudget};
use crm_core::messaging::delivery::{DeliverySettings, Providers};
use crm_core::messaging::unsubscribe::TokenSigner;
use crm_core::ports::*;
use crm_core::privacy::read_models::SealedReadModels;
use crm_core::privacy::{EncryptingEventStore, IdentifierHasher, KeyStore};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("template rules: {0}")]
    Rules(#[from] RuleError),
    #[error("the runtime runs on the system clock; only a virtual clock can be advanced")]
    NotVirtual,
    #[error("shipped campaigns: {0}")]
    Campaigns(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("data keys: {0}")]
    Keys(String),
}

/// Which clock the runtime (commands and timers) runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockChoice {
    /// The wall clock.
    System,
    /// A virtual clock starting at the given time, moved by [`LocalRuntime::advance`]
    /// (or `POST /dev/clock/advance`).
    Virtual(DateTime<Utc>),
}

/// How to open the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub clock: ClockChoice,
    /// Where customers reach the API: the unsubscribe and preference-centre
    /// links in messages point at `<base>/u/<token>`.
    pub public_base_url: String,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            clock: ClockChoice::System,
            public_base_url: "http://127.0.0.1:3000".into(),
        }
    }
}

/// The event store as the API uses it locally: every append wakes the bus.
pub struct WakingEventStore {
    inner: Arc<dyn EventStore>,
    wake: Arc<Notify>,
}

#[async_trait]
impl EventStore for WakingEventStore {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        self.inner.load(stream_id).await
    }
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner.read_stream(stream_id, after, limit).await
    }
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let appended = self.inner.append(request).await?;
        self.wake.notify_one();
        Ok(appended)
    }
    async fn append_with_receipts(
        &self,
        request: AppendRequest,
        receipts: Vec<CommandReceipt>,
    ) -> Result<Appended, AppendError> {
        let appended = self.inner.append_with_receipts(request, receipts).await?;
        self.wake.notify_one();
        Ok(appended)
    }
    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        self.inner.receipt(key).await
    }
    async fn receipts(&self, keys: &[String]) -> Result<Vec<Option<CommandReceipt>>, StoreError> {
        self.inner.receipts(keys).await
    }
    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.reservation_owner(key).await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        self.inner.read_all(after, limit).await
    }
}

pub struct LocalRuntime {
    /// The event store every reader and writer uses: personal data is
    /// encrypted on append and decrypted on read.
    pub events: Arc<dyn EventStore>,
    /// The SQLite store underneath, as stored (personal data encrypted).
    pub stored_events: Arc<SqliteEventStore>,
    /// The customers' data keys (`customer_keys`, wrapped under `master.key`).
    pub keys: Arc<dyn KeyStore>,
    /// The read models, their personal values sealed under the same keys
    /// (decision 0045): every reader and writer goes through the seal; it
    /// derefs to the SQLite adapter for clearing a consumer.
    pub docs: Arc<SealedReadModels<SqliteReadModels>>,
    pub bus: Arc<LocalBus>,
    /// The timer table, fired against `clock`.
    pub scheduler: Arc<SqliteScheduler>,
    pub clock: Arc<dyn Clock>,
    /// The same clock when it is virtual, so it can be advanced.
    pub virtual_clock: Option<Arc<VirtualClock>>,
    /// Signs the unsubscribe links: the database's own secret, or `UNSUBSCRIBE_SECRET`.
    pub unsubscribe: TokenSigner,
    /// Hashes identifiers for the proof ledger and the suppression list: the
    /// database's own secret, or `IDENTIFIER_HASH_SECRET` (decision 0019).
    pub identifiers: IdentifierHasher,
    /// The sources of the ingestion API (`/v1/*`): `INGEST_WRITE_KEYS`
    /// (`source:kind:key,...`) when set, else two sources with the
    /// database's own write keys: `local`, a server source
    /// ([`LocalRuntime::local_write_key`]), and `local-web`, a client source
    /// ([`LocalRuntime::local_client_write_key`]); decision 0042.
    pub ingest_sources: crm_api::IngestSources,
    /// The write key of the server source `local` (the shop's backend).
    pub local_write_key: String,
    /// The write key of the client source `local-web` (a browser's or an
    /// app's public key: activity, and a userId linked to its anonymousId).
    pub local_client_write_key: String,
    /// Where the links point (`<base>/u/<token>`); `serve` sets the address it listens on.
    pub public_base_url: String,
    /// The local email, SMS and push provider: every message sent, kept whole.
    pub mail: Arc<MailSink>,
    /// The messages ingestion refused, per source, for a week (decision 0053).
    pub refusals: Arc<crate::adapters::refusals::SqliteRefusals>,
    /// The shop's `tracking.require_analytics_consent` (decision 0079):
    /// activity is recorded only with analytics consent. Off unless `serve`
    /// is told (`--require-analytics-consent`); read by [`LocalRuntime::app`].
    pub require_analytics_consent: bool,
    /// A JWT issuer whose tokens the API takes besides the local ones, and
    /// the console's OIDC client of it (`serve --jwt-issuer`, decision
    /// 0089); read by [`LocalRuntime::app`].
    pub jwt: Option<(Arc<dyn crm_api::VerifyJwt>, crm_api::console::OidcClient)>,
    wake: Arc<Notify>,
}

/// Delivers every timer due at the clock's now, then removes it (only if it
/// was not rescheduled meanwhile). A crash in between redelivers, which the
/// receivers' `set_at_version` checks make harmless; nothing is lost.
async fn fire_due(bus: &LocalBus, scheduler: &SqliteScheduler, clock: &dyn Clock) -> Result<usize, StoreError> {
    let due = scheduler.due(clock.now()).await?;
    for timer in &due {
        bus.deliver_timer(timer).await?;
        scheduler.remove_fired(timer).await?;
    }
    Ok(due.len())
}

/// Re-evaluates every buyer's segments at `now` (membership events are
/// appended; the bus delivers them). A failure is logged: the next day retries.
async fn reevaluate_segments(store: &dyn EventStore, docs: &dyn ReadModelStore, now: DateTime<Utc>) {
    match crm_core::segments::reevaluate_buyers(store, docs, now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "segments re-evaluated"),
        Err(e) => tracing::error!(error = %e, "segment re-evaluation failed; retried tomorrow"),
    }
}

/// The daily sweep over running journeys (decision 0033): every campaign's
/// running instances, a page per call, lost timers re-armed and overdue
/// steps run. A failure is logged: the next day retries.
async fn sweep_journeys(
    store: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    scheduler: Arc<SqliteScheduler>,
    clock: Arc<dyn Clock>,
) {
    let engine = JourneyEngine::new(
        store.clone(),
        docs,
        scheduler,
        Arc::new(StoredCatalog::new(store)),
        clock,
    );
    let budget = SweepBudget {
        rest: chrono::Duration::zero(),
        ..SweepBudget::default()
    };
    for _ in 0..100_000 {
        match engine.sweep(budget).await {
            Ok(swept) if swept.finished_walk || swept.resting => break,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "journey sweep failed; retried tomorrow");
                break;
            }
        }
    }
}

impl LocalRuntime {
    /// Opens the runtime over the database file `db`, with the rules of `template`, on the system clock.
    pub fn open(db: &Path, template: &str) -> Result<Self, RuntimeError> {
        Self::open_with_clock(db, template, ClockChoice::System)
    }

    /// Opens the runtime over the database file `db`, with the rules of `template`, on `clock`.
    pub fn open_with_clock(db: &Path, template: &str, clock: ClockChoice) -> Result<Self, RuntimeError> {
        Self::open_with(
            db,
            template,
            RuntimeOptions {
                clock,
                ..RuntimeOptions::default()
            },
        )
    }

    /// Opens the runtime over the database file `db`, with the rules of `template`.
    pub fn open_with(db: &Path, template: &str, options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let RuntimeOptions { clock, public_base_url } = options;
        let stored_events = Arc::new(SqliteEventStore::open(db)?);
        // The data dir is the database's directory: master.key lives next to it.
        let data_dir = DataDir::holding(db).map_err(|e| RuntimeError::Keys(format!("{}: {e}", db.display())))?;
        let master = load_or_create_master_key(&data_dir).map_err(|e| RuntimeError::Keys(e.to_string()))?;
        let keys: Arc<dyn KeyStore> =
            Arc::new(SqliteKeyStore::open(db, master).map_err(|e| RuntimeError::Keys(e.to_string()))?);
        let events: Arc<dyn EventStore> = Arc::new(EncryptingEventStore::new(stored_events.clone(), keys.clone()));
        let docs = Arc::new(SealedReadModels::new(
            Arc::new(SqliteReadModels::open(db)?),
            keys.clone(),
        ));
        // What a consumer parks is sealed back into its stored form (decision 0040).
        let dead_letters: Arc<dyn DeadLetterQueue> = Arc::new(SealedDeadLetters::new(
            Arc::new(SqliteDeadLetters::open(db)?),
            keys.clone(),
        ));
        let (clock, virtual_clock): (Arc<dyn Clock>, _) = match clock {
            ClockChoice::System => (Arc::new(SystemClock), None),
            ClockChoice::Virtual(start) => {
                let v = Arc::new(VirtualClock::starting_at(start));
                (v.clone(), Some(v))
            }
        };
        let wake = Arc::new(Notify::new());
        let scheduler = Arc::new(SqliteScheduler::open(db)?);
        // What the local functions append must wake the bus like the API's appends.
        let waking: Arc<dyn EventStore> = Arc::new(WakingEventStore {
            inner: events.clone(),
            wake: wake.clone(),
        });
        let unsubscribe = crate::adapters::unsubscribe::signer(db)?;
        let identifiers = crate::adapters::secrets::identifier_hasher(db)?;
        let local_write_key = format!(
            "wk_{}",
            hex::encode(crate::adapters::secrets::stored_secret(db, "ingest-write-key")?)
        );
        let local_client_write_key = format!(
            "wk_client_{}",
            hex::encode(crate::adapters::secrets::stored_secret(db, "ingest-client-write-key")?)
        );
        let ingest_sources = match std::env::var("INGEST_WRITE_KEYS").ok().filter(|v| !v.trim().is_empty()) {
            Some(text) => crm_api::IngestSources::parse(&text).map_err(RuntimeError::Config)?,
            None => crm_api::IngestSources::new(vec![
                (crm_core::ingest::Source::server(LOCAL_SOURCE), local_write_key.clone()),
                (
                    crm_core::ingest::Source::client(LOCAL_WEB_SOURCE),
                    local_client_write_key.clone(),
                ),
            ]),
        };
        // The pages that may send with each key (decision 0050): INGEST_ALLOWED_ORIGINS; unset,
        // any page with the built-in browser key `local-web` (none with an explicit INGEST_WRITE_KEYS).
        let origins = match std::env::var("INGEST_ALLOWED_ORIGINS")
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            Some(text) => crm_api::AllowedOrigins::parse(&text).map_err(|e| RuntimeError::Config(e.to_string()))?,
            None if std::env::var("INGEST_WRITE_KEYS").map_or(true, |v| v.trim().is_empty()) => {
                crm_api::AllowedOrigins::any_for(LOCAL_WEB_SOURCE)
            }
            None => crm_api::AllowedOrigins::default(),
        };
        let ingest_sources = ingest_sources
            .with_allowed_origins(origins)
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        let mail = Arc::new(MailSink::open(db, clock.clone())?);
        let refusals = Arc::new(crate::adapters::refusals::SqliteRefusals::open(db)?);
        let mut targets = Vec::new();
        for rule in rules_from_template(template)? {
            let (store, read): (Arc<dyn EventStore>, Arc<dyn ReadModelStore>) = (events.clone(), docs.clone());
            let mut target = match rule.target.as_str() {
                // Segments depend on the clock and append membership events (which wake the bus).
                "projector" => Target::new(
                    rule,
                    ConsumerGroup::projector_at(
                        waking.clone(),
                        read,
                        dead_letters.clone(),
                        clock.clone(),
                        identifiers.clone(),
                    ),
                ),
                "consent" => Target::new(
                    rule,
                    ConsumerGroup::consent(store, read, dead_letters.clone(), identifiers.clone()),
                ),
                "campaign" => {
                    // The campaign function's own assembly (the `build` its Lambda
                    // `main` calls), on the local ports and clock.
                    let handler = Arc::new(crm_campaign::build(crm_campaign::CampaignPorts {
                        events: waking.clone(),
                        docs: read,
                        scheduler: scheduler.clone(),
                        clock: clock.clone(),
                        dead_letters: dead_letters.clone(),
                    }));
                    Target::with_handler(rule, handler.clone()).with_timer_handler(handler)
                }
                "channel" => {
                    // The channel function's delivery settings, read the same way
                    // (FROM_ADDRESS, SHOP_URL, DELIVERY_CAPS,
                    // MESSAGE_SETTLE_SECONDS; the local defaults where unset); the
                    // public base URL is the server's.
                    let mut settings = DeliverySettings::from_lookup(&|name: &str| std::env::var(name).ok())
                        .map_err(RuntimeError::Config)?;
                    settings.public_base_url = public_base_url.clone();
                    // The channel function's own assembly (the `build` its Lambda
                    // `main` calls), on the local ports, with the mail sink as
                    // every provider.
                    let delivery = Arc::new(crm_channel::build(
                        crm_channel::ChannelPorts {
                            events: waking.clone(),
                            docs: read,
                            scheduler: scheduler.clone(),
                            clock: clock.clone(),
                            providers: Providers {
                                email: mail.clone(),
                                sms: mail.clone(),
                                push: mail.clone(),
                            },
                            signer: Arc::new(unsubscribe.clone()),
                            identifiers: identifiers.clone(),
                            dead_letters: dead_letters.clone(),
                            metrics: None,
                        },
                        settings,
                    ));
                    Target::with_handler(rule, delivery.clone()).with_timer_handler(delivery)
                }
                "rule-segments" => {
                    // Membership of segments defined by rules and their window
                    // timers (decision 0083), as the Lambda function's `main` builds it.
                    let evaluator = Arc::new(crm_core::segments::rule_evaluator::RuleSegmentEvaluator::new(
                        waking.clone(),
                        read,
                        scheduler.clone(),
                        clock.clone(),
                        dead_letters.clone(),
                    ));
                    Target::with_handler(rule, evaluator.clone()).with_timer_handler(evaluator)
                }
                other => {
                    tracing::warn!(
                        target = other,
                        "the template routes events to a function the local runtime does not host yet"
                    );
                    continue;
                }
            };
            if target.group.name() == "projector" {
                // The local stand-in for the providers' side of erasure: the
                // mail sink forgets an erased customer's messages.
                target.group = Arc::new(MailRedactor {
                    inner: target.group,
                    events: stored_events.clone(),
                    mail: mail.clone(),
                });
            }
            // The bus reads the stored (encrypted) events: decrypt before the target.
            target.group = Arc::new(DecryptingHandler::new(target.group, keys.clone()));
            targets.push(target);
        }
        let bus = Arc::new(LocalBus::new(stored_events.clone(), db, targets)?);
        Ok(LocalRuntime {
            events,
            stored_events,
            keys,
            docs,
            bus,
            scheduler,
            clock,
            virtual_clock,
            unsubscribe,
            identifiers,
            ingest_sources,
            local_write_key,
            local_client_write_key,
            public_base_url,
            mail,
            refusals,
            require_analytics_consent: false,
            jwt: None,
            wake,
        })
    }

    /// The event store for command handlers: appends wake the bus.
    pub fn command_store(&self) -> Arc<dyn EventStore> {
        Arc::new(WakingEventStore {
            inner: self.events.clone(),
            wake: self.wake.clone(),
        })
    }

    /// The API over this runtime.
    pub fn app(&self, token: String) -> axum::Router {
        // The api function's own assembly, on the local ports, with the
        // bearer token and the database's secrets.
        let state = crm_api::build(
            ApiPorts {
                events: self.command_store(),
                // The table itself: the API seals it with `keys` (`crm_api::build`).
                read_models: self.docs.inner().clone(),
                clock: self.clock.clone(),
                scheduler: self.scheduler.clone(),
                keys: self.keys.clone(),
                health: Some(self.bus.clone()),
            },
            ApiSettings {
                auth: match &self.jwt {
                    Some((verifier, _)) => Auth::BearerTokenOrJwt(token.clone(), verifier.clone()),
                    None => Auth::BearerToken(token.clone()),
                },
                unsubscribe: self.unsubscribe.clone(),
                public_base_url: self.public_base_url.clone(),
                identifiers: self.identifiers.clone(),
                ingest_sources: self.ingest_sources.clone(),
            },
        );
        let state = state
            // The operator routes' dead letters: the bus's table and redrive (decision 0085).
            .with_dead_letters(self.bus.clone())
            .with_refusals(crm_core::ingest::refusals::RefusedMessages::new(self.refusals.clone()))
            // The console signs in with `serve`'s one-time link or a pasted token (decision 0089).
            .with_console(crm_api::console::ConsoleSignIn {
                oidc: self.jwt.as_ref().map(|(_, client)| client.clone()),
                local_link: true,
            })
            .with_ingest_settings(crm_core::ingest::IngestSettings {
                require_analytics_consent: self.require_analytics_consent,
                ..Default::default()
            });
        let app = router(state).merge(crate::runtime::mail_view::routes(self.mail.clone()));
        match &self.virtual_clock {
            Some(clock) => app.merge(crate::runtime::dev::clock_routes(
                clock.clone(),
                self.wake.clone(),
                token,
            )),
            None => app,
        }
    }

    /// Rebuilds the projections of the bus target `target` (`projector`,
    /// `consent`) from scratch ([`LocalRuntime::rebuild_targets`]). Returns
    /// the consumers rebuilt.
    pub async fn rebuild(&self, target: &str) -> Result<Vec<&'static str>, RuntimeError> {
        self.rebuild_targets(&[target]).await
    }

    /// The projection groups the runtime hosts (`projector`, `consent`),
    /// undecorated, over the decrypting store, the read models and the bus's
    /// dead letters: what [`LocalRuntime::rebuild_consumer`] feeds.
    pub fn consumer_groups(&self) -> Vec<ConsumerGroup> {
        let dead_letters: Arc<dyn DeadLetterQueue> = Arc::new(SealedDeadLetters::new(
            Arc::new(self.bus.dead_letters().clone()),
            self.keys.clone(),
        ));
        vec![
            ConsumerGroup::projector_at(
                self.command_store(),
                self.docs.clone(),
                dead_letters.clone(),
                self.clock.clone(),
                self.identifiers.clone(),
            ),
            ConsumerGroup::consent(
                self.events.clone(),
                self.docs.clone(),
                dead_letters,
                self.identifiers.clone(),
            ),
        ]
    }

    /// Delivers the timers due now (see [`fire_due`]); returns how many.
    pub async fn fire_due_timers(&self) -> Result<usize, StoreError> {
        fire_due(&self.bus, &self.scheduler, self.clock.as_ref()).await
    }

    /// Tests and demos: moves the virtual clock forward by `by`, then fires
    /// what is due and settles the bus, until nothing more is due (a handler
    /// may set a timer that is already due). Returns the new now.
    pub async fn advance(&self, by: chrono::Duration) -> Result<DateTime<Utc>, RuntimeError> {
        let clock = self.virtual_clock.as_ref().ok_or(RuntimeError::NotVirtual)?;
        let before = clock.now();
        let now = clock.advance(by);
        // The daily re-evaluation of time-dependent segments (recency).
        if now.date_naive() != before.date_naive() {
            self.bus.settle().await?;
            reevaluate_segments(self.command_store().as_ref(), self.docs.as_ref(), now).await;
        }
        loop {
            self.bus.settle().await?;
            if self.fire_due_timers().await? == 0 {
                break;
            }
        }
        // The daily journey sweep, once what is due has fired.
        if now.date_naive() != before.date_naive() {
            let (store, docs) = (self.command_store(), self.docs.clone());
            sweep_journeys(store, docs, self.scheduler.clone(), self.clock.clone()).await;
        }
        self.bus.settle().await?;
        Ok(now)
    }

    /// Starts delivering in the background: stored events and due timers, on
    /// every append (or dev clock move), and at least every 500 ms.
    pub fn spawn_bus(&self) -> tokio::task::JoinHandle<()> {
        let (bus, scheduler, clock, wake) = (
            self.bus.clone(),
            self.scheduler.clone(),
            self.clock.clone(),
            self.wake.clone(),
        );
        let (store, docs) = (self.command_store(), self.docs.clone());
        let poll = Duration::from_millis(500);
        tokio::spawn(async move {
            let (mut evaluated_on, mut swept_on) = (None, None);
            loop {
                // Once a day (and at start): time-dependent segments (recency).
                let today = clock.now().date_naive();
                if evaluated_on != Some(today) {
                    reevaluate_segments(store.as_ref(), docs.as_ref(), clock.now()).await;
                    evaluated_on = Some(today);
                }
                if let Err(e) = fire_due(&bus, &scheduler, clock.as_ref()).await {
                    tracing::error!(error = %e, "firing timers failed; retrying");
                }
                // Once a day (and at start), after the due timers: the journey sweep.
                if swept_on != Some(today) {
                    sweep_journeys(store.clone(), docs.clone(), scheduler.clone(), clock.clone()).await;
                    swept_on = Some(today);
                }
                if let Err(e) = bus.run_once().await {
                    tracing::error!(error = %e, "local bus pass failed; retrying");
                }
                let _ = tokio::time::timeout(poll, wake.notified()).await;
            }
        })
    }
}

/// On `CustomerErased`, redacts the mail sink rows of every message the
/// customer was sent (the `message_id`s of their `MessageRequested` events),
/// then hands the event on.
struct MailRedactor {
    inner: Arc<dyn crm_core::consumer::EventHandler>,
    events: Arc<SqliteEventStore>,
    mail: Arc<MailSink>,
}

impl MailRedactor {
    /// Forgets the mail of the customer `event` erases, if it is `CustomerErased`.
    async fn redact_if_erased(&self, event: &EventEnvelope) -> Result<(), crm_core::consumer::ConsumeError> {
        if event.event_type == "CustomerErased" {
            if let Some(customer_id) = event.customer_id.as_deref() {
                let retryable = |e: StoreError| crm_core::consumer::ConsumeError::retry("mail-redaction", e);
                let ids = self.message_ids(customer_id).await.map_err(retryable)?;
                self.mail.redact_messages(ids).await.map_err(retryable)?;
            }
        }
        Ok(())
    }

    async fn message_ids(&self, customer_id: &str) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.events.read_all(cursor.as_deref(), 1000).await?;
            ids.extend(
                page.events
                    .iter()
                    .filter(|e| e.event_type == "MessageRequested" && e.customer_id.as_deref() == Some(customer_id))
                    .filter_map(|e| e.data.get("message_id").and_then(|v| v.as_str()).map(str::to_string)),
            );
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(ids),
            }
        }
    }
}

#[async_trait]
impl crm_core::consumer::EventHandler for MailRedactor {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn consumer_names(&self) -> Vec<&'static str> {
        self.inner.consumer_names()
    }

    async fn handle(
        &self,
        event: &EventEnvelope,
        now: DateTime<Utc>,
    ) -> Result<crm_core::consumer::GroupOutcome, crm_core::consumer::ConsumeError> {
        self.redact_if_erased(event).await?;
        self.inner.handle(event, now).await
    }

    async fn handle_for(
        &self,
        consumer: &str,
        event: &EventEnvelope,
        now: DateTime<Utc>,
    ) -> Result<crm_core::consumer::GroupOutcome, crm_core::consumer::ConsumeError> {
        self.redact_if_erased(event).await?;
        self.inner.handle_for(consumer, event, now).await
    }

    async fn handle_page(
        &self,
        events: &[EventEnvelope],
        now: DateTime<Utc>,
    ) -> Result<crm_core::consumer::PageOutcome, crm_core::consumer::ConsumeError> {
        for event in events {
            self.redact_if_erased(event).await?;
        }
        self.inner.handle_page(events, now).await
    }
}
