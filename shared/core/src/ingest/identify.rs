//! Who a message is about: `identify` and `alias` (a server source finds,
//! creates and updates customers; a client source only links its ids).
//!
//! A server identify needs only an identifier (decision 0051): with an
//! email address it finds or creates the customer (names optional); without
//! one, an unknown user id gets a profile of its own
//! ([`crate::identity::user_profile_id`]) that is merged into the customer
//! once the user id is identified with an email.

use super::*;
use serde_json::Map;

/// The first and last name of an identify's traits: `firstName` /
/// `first_name`, `lastName` / `last_name`, else the parts of `name` split at
/// its first white space (`"Ada King Lovelace"`: `Ada`, `King Lovelace`). A
/// name given on its own wins over the part of `name`; `None` when absent.
pub(super) fn names_from_traits(message: &SegmentMessage) -> Names {
    names_in(&message.traits)
}

/// A first and a last name, each when given.
pub(super) type Names = (Option<String>, Option<String>);

/// [`names_from_traits`] of a traits object (as sent, or as kept on a
/// profile's activity).
fn names_in(traits: &Map<String, Value>) -> Names {
    let text = |names: &[&str]| message::trait_text_in(traits, names);
    let first = text(&["firstName", "first_name"]);
    let last = text(&["lastName", "last_name"]);
    let (whole_first, whole_last) = match text(&["name"]) {
        Some(name) => match name.split_once(char::is_whitespace) {
            Some((f, l)) => (Some(f.trim().to_string()), Some(l.trim().to_string())),
            None => (Some(name), None),
        },
        None => (None, None),
    };
    let filled = |n: Option<String>| n.filter(|n| !n.is_empty());
    (filled(first.or(whole_first)), filled(last.or(whole_last)))
}

/// How many activity events are read per page when looking for the names
/// kept on a user's profile ([`Ingestion::names_kept_on`]).
const PROFILE_PAGE: usize = 200;

impl Ingestion {
    /// A client source's `identify`: the `userId` is linked to the
    /// `anonymousId` and the traits are kept, unverified, as an
    /// [`UNVERIFIED_TRAITS_EVENT`] on the activity stream. Nothing of a
    /// customer is read by, or changed from, the traits.
    ///
    /// * A `userId` a server source (or the API) already linked to a
    ///   customer: the anonymous profile is merged into that customer, as a
    ///   server's identify does, and the traits are kept on their stream.
    /// * An unknown `userId`, or one known only by its id (its profile,
    ///   decision 0051): the traits are kept on the anonymous profile, and a
    ///   reservation ([`pending_link_key`]) records the link, so the server
    ///   source's identify that later names the customer merges the profile
    ///   (up to [`MAX_PENDING_ANONYMOUS_IDS`] per user id). Without an
    ///   anonymous id they are kept on the user id's profile.
    pub(super) async fn client_identify(
        &self,
        message: &SegmentMessage,
        late: bool,
        occurred_at: DateTime<Utc>,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
        now: DateTime<Utc>,
    ) -> Result<bool, IngestError> {
        let linked = match &message.user_id {
            Some(user) => self.known_customer(user).await?,
            None => None,
        };
        // A user id linked to its own profile names no customer yet.
        let (known, user_profile) = match linked {
            Some(profile) if is_anonymous_profile(&profile) => (None, Some(profile)),
            other => (other, None),
        };
        let anonymous = message.anonymous_id.as_deref().map(anonymous_profile_id);
        let profile = match (&known, &anonymous, user_profile) {
            (Some(customer), _, _) => {
                if let Some(a) = &anonymous {
                    self.identity.merge(a, customer, meta).await?;
                }
                customer.clone()
            }
            (None, Some(a), _) => self.identity.resolve(a).await?,
            (None, None, Some(profile)) => profile,
            (None, None, None) => {
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
        Err(IngestError::conflict("the user id's links changed concurrently"))
    }

    /// The next free link slot of `user_id` for `profile`: `None` when the
    /// profile holds one already, or every slot is taken.
    pub(super) async fn pending_claim(
        &self,
        user_id: &str,
        profile: &str,
    ) -> Result<Option<ReservationChange>, IngestError> {
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
    pub(super) async fn merge_pending(
        &self,
        user_id: &str,
        customer_id: &str,
        meta: &CommandMeta,
    ) -> Result<(), IngestError> {
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

    /// A server source's `identify`: finds (or creates, from the traits)
    /// the customer of the `userId`, merges the user id's own profile into
    /// them (when it had one), links the user id to them, merges the
    /// anonymous profile of the `anonymousId` and those a client source
    /// linked to the user id into them, and updates their names and phone
    /// from the traits (a new phone revokes SMS consent, in the aggregate).
    ///
    /// Without an email address, a user id that names no customer yet is
    /// kept on its own profile ([`Self::identify_user_profile`]). The names
    /// sent then ([`Self::names_kept_on`]) are the customer's when the
    /// identify with the email names none: they register the new customer,
    /// or fill the names a customer found by the address lacks (never
    /// replacing one it has).
    pub(super) async fn identify(
        &self,
        message: &SegmentMessage,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<(), IngestError> {
        let Some(user_id) = &message.user_id else {
            // Traits of an anonymous visitor: nothing the CRM keeps yet.
            return Ok(());
        };
        let linked = self.known_customer(user_id).await?;
        let user_profile = linked.clone().filter(|p| is_anonymous_profile(p));
        let (customer_id, earlier) = match &linked {
            Some(customer) if !is_anonymous_profile(customer) => (customer.clone(), (None, None)),
            _ => match message.trait_text(&["email"]) {
                Some(_) => {
                    let earlier = match &user_profile {
                        Some(profile) => self.names_kept_on(profile).await?,
                        None => (None, None),
                    };
                    (self.customer_from_traits(message, &earlier, meta).await?, earlier)
                }
                None => return self.identify_user_profile(user_id, message, idempotency, meta).await,
            },
        };
        if let Some(profile) = user_profile {
            // The user id's profile first: its link then names the customer.
            self.identity.merge(&profile, &customer_id, meta).await?;
        }
        self.identity.link_user(user_id, &customer_id, meta).await?;
        if let Some(anonymous) = &message.anonymous_id {
            self.identity
                .merge(&anonymous_profile_id(anonymous), &customer_id, meta)
                .await?;
        }
        self.merge_pending(user_id, &customer_id, meta).await?;
        self.update_from_traits(&customer_id, message, &earlier, meta).await
    }

    /// The names a server source sent for a user id known only by its id:
    /// read from the [`UNVERIFIED_TRAITS_EVENT`] events with `verified:
    /// true` that [`Self::identify_user_profile`] kept on its `profile`,
    /// oldest first by `occurred_at`, each name given replacing the one
    /// before (so `{firstName}` then `{lastName}` give both). Traits a client
    /// source kept there (`verified: false`) are never read, nor traits that
    /// were erased.
    async fn names_kept_on(&self, profile: &str) -> Result<Names, IngestError> {
        let stream = activity_stream_id(profile);
        let mut kept: Vec<(DateTime<Utc>, u64, Names)> = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.read_stream(&stream, after, PROFILE_PAGE).await?;
            for event in &page {
                after = after.max(event.version);
                let data = &event.data;
                let properties = &data["properties"];
                let verified = event.event_type == "CustomEvent"
                    && data["event"] == UNVERIFIED_TRAITS_EVENT
                    && properties["verified"] == true;
                if let (true, Some(traits)) = (verified, properties["traits"].as_object()) {
                    kept.push((event.occurred_at, event.version, names_in(traits)));
                }
            }
            if page.len() < PROFILE_PAGE {
                break;
            }
        }
        kept.sort_by_key(|(at, version, _)| (*at, *version));
        Ok(kept
            .into_iter()
            .fold((None, None), |(first, last), (_, _, (f, l))| (f.or(first), l.or(last))))
    }

    /// The profile of a user id that names no customer (decision 0051),
    /// linked to the user id (once), so that later calls with the user id
    /// land on it until it is merged into a customer.
    pub(super) async fn user_profile_of(&self, user_id: &str, meta: &CommandMeta) -> Result<String, IngestError> {
        let profile = self.identity.user_profile(user_id)?;
        self.identity.link_user(user_id, &profile, meta).await?;
        Ok(profile)
    }

    /// A server identify of a user id that names no customer, without an
    /// email address: the user id's profile ([`Self::user_profile_of`])
    /// keeps the traits as an [`UNVERIFIED_TRAITS_EVENT`] event with
    /// `verified: true` (a server source sent them; no customer holds them
    /// yet), with the message's receipt. The anonymous profile of the
    /// `anonymousId` is linked to the user id as a client source's is
    /// ([`pending_link_key`]): the identify that later names the customer
    /// merges both profiles into them.
    async fn identify_user_profile(
        &self,
        user_id: &str,
        message: &SegmentMessage,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<(), IngestError> {
        let profile = self.user_profile_of(user_id, meta).await?;
        let now = self.customers.now();
        let occurred_at = message.timestamp.unwrap_or(now);
        let event = ActivityEvent::CustomEvent(crate::customer::activity::CustomEvent {
            event: UNVERIFIED_TRAITS_EVENT.to_string(),
            properties: json!({
                "user_id": user_id,
                "traits": Value::Object(message.traits.clone()),
                "verified": true,
            }),
            session_id: message.context_text(&["sessionId"]),
            utm: None,
            late: occurred_at < now - self.settings.late_after,
        });
        let anonymous = message.anonymous_id.as_deref().map(anonymous_profile_id);
        for _ in 0..3 {
            let claim = match &anonymous {
                Some(a) => self.pending_claim(user_id, a).await?,
                None => None,
            };
            match self
                .append_activity_claiming(&profile, event.clone(), occurred_at, idempotency, meta, now, claim)
                .await?
            {
                Appended::Taken(_) => return Ok(()),
                Appended::ReservationTaken => continue,
            }
        }
        Err(IngestError::conflict("the user id's links changed concurrently"))
    }

    /// `alias`: `previousId` (an anonymous id, or a user id) is `userId`.
    pub(super) async fn alias(&self, message: &SegmentMessage, meta: &CommandMeta) -> Result<(), IngestError> {
        let (Some(previous), Some(user_id)) = (&message.previous_id, &message.user_id) else {
            return Err(reject("previousId", "previousId and userId are required for alias"));
        };
        let Some(customer_id) = self.known_customer(user_id).await? else {
            return Err(reject("userId", "is not a known customer: send identify first"));
        };
        if is_anonymous_profile(&customer_id) {
            return Err(reject(
                "userId",
                "is known only by its id: alias joins a customer; identify the userId with an email first",
            ));
        }
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
    /// already registered), names when given ([`names_from_traits`], else
    /// the `earlier` ones kept on the user id's profile) and phone. Consent
    /// is never read from traits.
    pub(super) async fn customer_from_traits(
        &self,
        message: &SegmentMessage,
        earlier: &Names,
        meta: &CommandMeta,
    ) -> Result<String, IngestError> {
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
        let (first, last) = names_from_traits(message);
        let (first, last) = (first.or(earlier.0.clone()), last.or(earlier.1.clone()));
        // Names may be absent: a customer may be known by their email alone.
        let register = CustomerCommand::RegisterFromIngestion(RegisterCustomer {
            email,
            first_name: first.unwrap_or_default(),
            last_name: last.unwrap_or_default(),
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
                None => Err(IngestError::conflict("the email address changed hands")),
            },
            Err(e) => Err(command_error(e, "traits")),
        }
    }

    /// Names (in any of their forms, [`names_from_traits`]) and phone from
    /// the traits, when given and different from the profile's. A name the
    /// traits do not give is taken from `earlier` (the names kept on the
    /// user id's profile) only when the customer has none.
    pub(super) async fn update_from_traits(
        &self,
        customer_id: &str,
        message: &SegmentMessage,
        earlier: &Names,
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
        let (first, last) = names_from_traits(message);
        let missing = |earlier: &Option<String>, old: &str| earlier.clone().filter(|_| old.is_empty());
        let first = first.or_else(|| missing(&earlier.0, &customer.first_name));
        let last = last.or_else(|| missing(&earlier.1, &customer.last_name));
        let update = UpdateProfile {
            first_name: differs(first, &customer.first_name),
            last_name: differs(last, &customer.last_name),
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
