//! Carts and orders from the e-commerce spec's calls (decision 0052).

use super::*;
use crate::commerce::order::{AmendOrder, Amounts};
use crate::commerce::{
    CancelOrder, Order, PaymentStatus, RecordPayment, RefundReason, RefundType, ReportCheckout, RequestRefund,
    SubmitReview,
};

impl Ingestion {
    pub(super) async fn cart_command(
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
    pub(super) async fn add_to_cart(
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

    /// `Checkout Started`: the cart's checkout (created with the listed
    /// lines when the CRM does not know it). Refused on `properties.cart_id`
    /// when there is nothing to check out: the cart is already checked out
    /// or abandoned, or it is unknown and the call lists no products (the
    /// caller keeps such a call as activity).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn report_checkout(
        &self,
        source: &str,
        profile: &str,
        cart: &str,
        currency: String,
        items: Vec<AddItem>,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<bool, IngestError> {
        let cart_id = derived_id("cart", source, cart);
        let command = CartCommand::ReportCheckout(ReportCheckout {
            customer_id: profile.to_string(),
            currency,
            items,
        });
        match self.cart_command(&cart_id, &command, idempotency, meta).await {
            // The lines are the call's `products`.
            Err(IngestError::Rejected(r)) if r.field.starts_with("properties.items") => Err(reject(
                &r.field.replacen("properties.items", "properties.products", 1),
                r.message,
            )),
            other => other,
        }
    }

    /// Loads the order a client's `order_id` names, refusing an unknown
    /// one or one of another customer.
    async fn reported_order(&self, source: &str, profile: &str, order: &str) -> Result<Order, IngestError> {
        match self.known_order(source, profile, order).await? {
            Some(o) => Ok(o),
            None => Err(reject(
                "properties.order_id",
                "names no order this source reported (send Order Completed first)",
            )),
        }
    }

    /// The order a client's `order_id` names (`None`: the CRM does not know
    /// it), refusing one of another customer. An order of a user profile
    /// merged into `profile` since (decision 0055) is `profile`'s.
    async fn known_order(&self, source: &str, profile: &str, order: &str) -> Result<Option<Order>, IngestError> {
        let order_id = derived_id("order", source, order);
        let Some(o) = self.orders.load(&order_id).await.map_err(order_error)? else {
            return Ok(None);
        };
        let owner = if o.customer_id != profile && is_anonymous_profile(&o.customer_id) {
            self.identity.resolve(&o.customer_id).await?
        } else {
            o.customer_id.clone()
        };
        if owner != profile {
            return Err(reject("properties.order_id", "is another customer's order"));
        }
        Ok(Some(o))
    }

    /// `Order Updated` from a server source: the order's amendment
    /// (decision 0055). `None` (the caller keeps the call as activity) for
    /// an order the CRM does not know, and for a call that changes none of
    /// the order's lines and amounts (a shop's update of its status or
    /// notes). An amendment the order refuses (it was shipped, cancelled,
    /// refunded; amounts that do not add up) refuses the message, saying
    /// why.
    pub(super) async fn amend_order(
        &self,
        source: &str,
        profile: &str,
        update: mapping::OrderUpdate,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<Option<bool>, IngestError> {
        let Some(o) = self.known_order(source, profile, &update.order).await? else {
            return Ok(None);
        };
        let command = OrderCommand::Amend(amendment(&o, &update));
        let now = self.customers.now();
        let unchanged = crate::commerce::order::decide(Some(&o), &command, &o.id, now).is_ok_and(|e| e.is_empty());
        if unchanged {
            return Ok(None);
        }
        self.order_command(&o.id, &command, idempotency, meta).await.map(Some)
    }

    async fn order_command(
        &self,
        order_id: &str,
        command: &OrderCommand,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<bool, IngestError> {
        let respond = |o: &crate::commerce::Order, _: &[EventEnvelope]| (200, json!({ "order_id": o.id }));
        match self
            .orders
            .execute(order_id, command, meta, Some(idempotency), &respond)
            .await
        {
            Ok(crate::aggregate::Executed::Applied { .. }) => Ok(true),
            Ok(crate::aggregate::Executed::Replayed { .. }) => Ok(false),
            Err(OrderCommandError::Command(crate::aggregate::AggregateError::IdempotencyKeyReused)) => Ok(false),
            Err(e) => Err(order_error(e)),
        }
    }

    /// `Order Cancelled` from a server source: the order's cancellation.
    pub(super) async fn cancel_order(
        &self,
        source: &str,
        profile: &str,
        order: &str,
        reason: String,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<bool, IngestError> {
        let o = self.reported_order(source, profile, order).await?;
        let command = OrderCommand::Cancel(CancelOrder { reason });
        self.order_command(&o.id, &command, idempotency, meta).await
    }

    /// `Order Refunded` from a server source: a refund of the order, full
    /// when the amount is absent or covers what is left to refund (a
    /// shop's `total` may include what was refunded before), partial
    /// otherwise. Only the listed products the order holds are named. A
    /// fact the shop reports: recorded whatever the order's delivery state
    /// (`RecordReportedRefund`, decision 0071).
    pub(super) async fn refund_order(
        &self,
        source: &str,
        profile: &str,
        refund: &mapping::RefundRequest,
        refund_id: String,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<bool, IngestError> {
        let o = self.reported_order(source, profile, &refund.order).await?;
        let left = o.refundable_minor();
        let (refund_type, amount_minor) = match refund.amount_minor {
            Some(a) if a > 0 && a < left => (RefundType::Partial, Some(a)),
            _ => (RefundType::Full, None),
        };
        let items: Vec<String> = refund
            .product_ids
            .iter()
            .filter(|p| o.items.iter().any(|line| &&line.product_id == p))
            .cloned()
            .collect();
        let command = OrderCommand::RecordReportedRefund {
            refund_id,
            request: RequestRefund {
                refund_type,
                amount_minor,
                reason: RefundReason::Other,
                items: (!items.is_empty()).then_some(items),
                return_: None,
            },
        };
        self.order_command(&o.id, &command, idempotency, meta).await
    }

    /// `Product Reviewed` with an `order_id` from a server source: the
    /// review of a product of that order (`ReviewSubmitted`, decision
    /// 0073). `None` (the caller keeps the call as the `ProductReviewed`
    /// activity) for an order the CRM does not know, not yet delivered, or
    /// not holding the product: the review is the shop's fact, but not one
    /// the order can take. A rating outside 1 to 5, or another review of a
    /// product already reviewed on the order, refuses the message.
    pub(super) async fn review_order(
        &self,
        source: &str,
        profile: &str,
        review: &mapping::OrderReview,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<Option<bool>, IngestError> {
        let Some(o) = self.known_order(source, profile, &review.order).await? else {
            return Ok(None);
        };
        if o.delivered_at.is_none() || !o.items.iter().any(|line| line.product_id == review.product_id) {
            return Ok(None);
        }
        let command = OrderCommand::SubmitReview(SubmitReview {
            product_id: review.product_id.clone(),
            rating: review.rating,
            review: review.review.clone(),
        });
        self.order_command(&o.id, &command, idempotency, meta).await.map(Some)
    }

    /// `Order Completed` from a server source: the order, placed and paid
    /// in one write (the customer completed it; decision 0052). The
    /// shipping address is the call's, else the customer's, else none.
    pub(super) async fn place_order(
        &self,
        source: &str,
        profile: &str,
        order: mapping::OrderRequest,
        idempotency: &IdempotencyKey,
        meta: &CommandMeta,
    ) -> Result<bool, IngestError> {
        // A user id known only by its id: the order is its profile's, and
        // becomes the customer's when an identify with the email merges the
        // profile (decision 0055). An anonymous id alone places no order.
        let profile = match (is_anonymous_profile(profile), order.user_id.as_deref()) {
            (false, _) => profile.to_string(),
            (true, Some(user)) => self.user_profile_of(user, meta).await?,
            (true, None) => {
                return Err(reject(
                    "userId",
                    "an order needs a customer: send an identify with their email (traits.email) first",
                ))
            }
        };
        let profile = profile.as_str();
        let customer: Option<Customer> = if is_anonymous_profile(profile) {
            None
        } else {
            self.customers
                .load(profile)
                .await
                .map_err(|e| command_error(e, "userId"))?
        };
        let shipping_address = order.shipping_address.or_else(|| customer.and_then(|c| c.address));
        let payment = RecordPayment {
            payment_id: format!("segment-{}", order.order_id),
            status: PaymentStatus::Succeeded,
            method: order.payment_method,
            amount_minor: order.total_minor,
            currency: order.currency.clone(),
            provider: Some(format!("segment:{source}")),
            transaction_id: Some(order.order_id.clone()),
            error_code: None,
            error_message: None,
            retryable: None,
        };
        let command = OrderCommand::PlacePaid {
            order: Box::new(PlaceOrder {
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
                discount_minor: order.discount_minor,
                adjustment_minor: order.adjustment_minor,
                discount_code: None,
                discount: None,
            }),
            payment,
        };
        let order_id = derived_id("order", source, &order.order_id);
        // The same order reported again under another messageId (a shop's
        // own retry): it is there, nothing to do.
        if self.orders.load(&order_id).await.map_err(order_error)?.is_some() {
            return Ok(false);
        }
        let command = self
            .redeem_coupon(source, &order.order_id, order.coupon, command)
            .await?;
        self.order_command(&order_id, &command, idempotency, meta).await
    }
}

impl Ingestion {
    /// The coupon of a shop's `Order Completed` (decision 0074). The order
    /// is a fact and is recorded whatever the coupon: one of our discount
    /// codes that the customer may use is redeemed with it
    /// (`DiscountRedeemed`; the shop's own amounts are kept). A code of
    /// ours that is expired, another customer's or used is left off the
    /// order and the refusal goes to the refused-messages log (field
    /// `properties.coupon`), as ingestion reports what it refuses. Any
    /// other coupon is the shop's own: nothing to redeem, nothing to report.
    async fn redeem_coupon(
        &self,
        source: &str,
        shop_order_id: &str,
        coupon: Option<String>,
        command: OrderCommand,
    ) -> Result<OrderCommand, IngestError> {
        let OrderCommand::PlacePaid { mut order, payment } = command else {
            return Ok(command);
        };
        let Some(coupon) = coupon.filter(|c| crate::commerce::discount::normalize_code(c).is_some()) else {
            return Ok(OrderCommand::PlacePaid { order, payment });
        };
        order.discount_code = Some(coupon.clone());
        let (resolved, refusal) = self.orders.resolve_coupon(*order).await.map_err(order_error)?;
        match refusal {
            None | Some(crate::commerce::discount::Refusal::Unknown) => {}
            Some(refusal) => {
                tracing::warn!(%source, order_id = %shop_order_id, %refusal, "the order's coupon was not redeemed");
                if let Some(log) = &self.refusals {
                    let shown = json!({
                        "type": "track",
                        "event": "Order Completed",
                        "properties": { "order_id": shop_order_id, "coupon": coupon },
                    });
                    let rejection = Rejection::new(
                        "properties.coupon",
                        format!("{refusal}: the order was recorded without it"),
                    );
                    let now = self.orders.now();
                    let entry =
                        refusals::Refusal::new(source, &shown, None, &rejection, self.customers.identifiers(), now);
                    log.record(&entry).await;
                }
            }
        }
        Ok(OrderCommand::PlacePaid {
            order: Box::new(resolved),
            payment,
        })
    }
}

/// The amendment an `Order Updated` asks of order `o`: the call's lines and
/// amounts, the order's where the call leaves them out. The total is the
/// call's `total`, else its `revenue` − discount + tax + shipping (as for
/// `Order Completed`, decision 0052), else the lines − discount + tax +
/// shipping with the order's adjustment kept; what a given total holds
/// beyond its parts is the new adjustment.
fn amendment(o: &Order, update: &mapping::OrderUpdate) -> AmendOrder {
    let items = update.items.clone().unwrap_or_else(|| o.items.clone());
    let lines = items
        .iter()
        .map(|i| i64::from(i.quantity).saturating_mul(i.unit_price_minor))
        .fold(0i64, i64::saturating_add);
    let discount_minor = update.discount_minor.unwrap_or(o.discount_minor);
    let tax_minor = update.tax_minor.unwrap_or(o.tax_minor);
    let shipping_minor = update.shipping_minor.unwrap_or(o.shipping_minor);
    let itemised = lines
        .saturating_sub(discount_minor)
        .saturating_add(tax_minor)
        .saturating_add(shipping_minor);
    let total_minor = match (update.total_minor, update.revenue_minor) {
        (Some(total), _) => total,
        (None, Some(revenue)) => revenue
            .saturating_sub(discount_minor)
            .saturating_add(tax_minor)
            .saturating_add(shipping_minor)
            .max(0),
        (None, None) => itemised.saturating_add(o.adjustment_minor),
    };
    AmendOrder {
        items,
        subtotal_minor: None,
        amounts: Amounts {
            discount_minor,
            tax_minor,
            shipping_minor,
            adjustment_minor: total_minor.saturating_sub(itemised),
        },
        total_minor,
        currency: update.currency.clone().unwrap_or_else(|| o.currency.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commerce::OrderItem;

    /// An order of 2 × 10.00, 1.00 off, 2.00 tax, 3.00 shipping and 0.50 of
    /// fees the shop did not itemise: 24.50.
    fn order() -> Order {
        let placed = crate::commerce::OrderEvent::OrderPlaced {
            order_id: "o".into(),
            customer_id: "c".into(),
            cart_id: None,
            items: vec![OrderItem {
                product_id: "p".into(),
                name: "P".into(),
                category: None,
                quantity: 2,
                unit_price_minor: 1000,
            }],
            subtotal_minor: 2000,
            tax_minor: 200,
            shipping_minor: 300,
            total_minor: 2450,
            currency: "USD".into(),
            shipping_address: None,
            billing_address: None,
            discount_minor: 100,
            adjustment_minor: 50,
        };
        crate::commerce::order::evolve(None, &placed, crate::testing::test_time(), 1).expect("placed")
    }

    fn update() -> mapping::OrderUpdate {
        mapping::OrderUpdate {
            order: "o".into(),
            items: None,
            discount_minor: None,
            tax_minor: None,
            shipping_minor: None,
            total_minor: None,
            revenue_minor: None,
            currency: None,
        }
    }

    #[test]
    fn an_update_changes_what_it_names_and_keeps_the_rest_of_the_order() {
        // Only the shipping: the lines, discount, tax and fees stay.
        let a = amendment(
            &order(),
            &mapping::OrderUpdate {
                shipping_minor: Some(500),
                ..update()
            },
        );
        assert_eq!((a.items.len(), a.total_minor, a.currency.as_str()), (1, 2650, "USD"));
        assert_eq!(
            a.amounts,
            Amounts {
                discount_minor: 100,
                tax_minor: 200,
                shipping_minor: 500,
                adjustment_minor: 50
            }
        );
        // A total: what it holds beyond the parts is the adjustment.
        let a = amendment(
            &order(),
            &mapping::OrderUpdate {
                total_minor: Some(3000),
                ..update()
            },
        );
        assert_eq!((a.total_minor, a.amounts.adjustment_minor), (3000, 600));
        // Revenue (after the discount): revenue - discount + tax + shipping, as Order Completed reads it.
        let a = amendment(
            &order(),
            &mapping::OrderUpdate {
                revenue_minor: Some(1900),
                ..update()
            },
        );
        assert_eq!((a.total_minor, a.amounts.adjustment_minor), (2300, -100));
        // Nothing named: the order as it is, which decides no event.
        let same = amendment(&order(), &update());
        assert_eq!(same.total_minor, 2450);
        let events = crate::commerce::order::decide(
            Some(&order()),
            &OrderCommand::Amend(same),
            "o",
            crate::testing::test_time(),
        )
        .expect("unchanged");
        assert!(events.is_empty());
    }
}
