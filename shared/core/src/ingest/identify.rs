//! Who a message is about: `identify` and `alias` (a server source finds,
//! creates and updates customers; a client source only links its ids).

use super::*;

impl Ingestion {
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
    pub(super) async fn client_identify(
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
    /// the customer of the `userId`, links the user id to them, merges the
    /// anonymous profile of the `anonymousId` and those a client source
    /// linked to the user id into them, and updates their names and phone
    /// from the traits (a new phone revokes SMS consent, in the aggregate).
    pub(super) async fn identify(&self, message: &SegmentMessage, meta: &CommandMeta) -> Result<(), IngestError> {
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
    pub(super) async fn alias(&self, message: &SegmentMessage, meta: &CommandMeta) -> Result<(), IngestError> {
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
    pub(super) async fn customer_from_traits(
        &self,
        message: &SegmentMessage,
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
    pub(super) async fn update_from_traits(
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
