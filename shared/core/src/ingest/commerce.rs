//! Carts and orders from the e-commerce spec's calls.

use super::*;

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

    pub(super) async fn place_order(
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
}
