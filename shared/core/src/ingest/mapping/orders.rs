//! Orders: `Order Completed` (an order placed and paid), `Order Updated`
//! (its amendment), `Order Cancelled` and `Order Refunded`, read into the
//! requests the commerce context takes.

use super::read::{address, amount, currency, first_text, product_lines, required};
use super::{Call, Mapped, OrderRequest, OrderUpdate, RefundRequest};
use crate::commerce::PaymentMethod;
use crate::ingest::message::{Rejection, SegmentMessage};

/// The track calls mapped here.
pub(super) const NAMES: &[&str] = &["Order Completed", "Order Updated", "Order Refunded", "Order Cancelled"];

/// Maps a track call named one of [`NAMES`].
pub(super) fn track(call: &Call<'_>, event: &str) -> Result<Mapped, Rejection> {
    let m = call.m;
    match event {
        "Order Completed" => Ok(Mapped::Order(Box::new(order(m)?))),
        "Order Updated" => {
            let Some(update) = order_update(m)? else {
                return call.custom();
            };
            Ok(Mapped::AmendOrder(Box::new(update)))
        }
        "Order Cancelled" => Ok(Mapped::CancelOrder {
            order: required(m, &["order_id"])?,
            reason: m
                .property_text("reason")
                .unwrap_or_else(|| "cancelled by the shop (Order Cancelled)".into()),
        }),
        "Order Refunded" => {
            let order = required(m, &["order_id"])?;
            let lines = product_lines(m)?;
            let listed: i64 = lines.iter().map(|i| i64::from(i.quantity) * i.unit_price_minor).sum();
            let amount_minor = match amount(&m.properties, "total", "properties.total")? {
                Some(total) => Some(total),
                None if listed > 0 => Some(listed),
                None => None,
            };
            Ok(Mapped::RefundOrder(RefundRequest {
                order,
                amount_minor,
                product_ids: lines.into_iter().map(|i| i.product_id).collect(),
            }))
        }
        _ => call.custom(),
    }
}

/// An `Order Completed`, read: it needs its `order_id` and its products.
fn order(m: &SegmentMessage) -> Result<OrderRequest, Rejection> {
    let order_id = required(m, &["order_id", "checkout_id"])?;
    let items = product_lines(m)?;
    if items.is_empty() {
        return Err(Rejection::new("properties.products", "must list the products ordered"));
    }
    let props = &m.properties;
    let at = |k: &str| amount(props, k, &format!("properties.{k}"));
    let lines: i64 = items.iter().map(|i| i64::from(i.quantity) * i.unit_price_minor).sum();
    let discount_minor = at("discount")?.unwrap_or(0);
    let tax_minor = at("tax")?.unwrap_or(0);
    let shipping_minor = at("shipping")?.unwrap_or(0);
    let itemised = lines - discount_minor + tax_minor + shipping_minor;
    let total_minor = match (at("total")?, at("revenue")?) {
        (Some(total), _) => total,
        (None, Some(revenue)) => (revenue - discount_minor + tax_minor + shipping_minor).max(0),
        (None, None) => itemised.max(0),
    };
    let shipping_address = m
        .properties
        .get("shipping_address")
        .filter(|v| !v.is_null())
        .map(address)
        .transpose()?;
    Ok(OrderRequest {
        order_id,
        items,
        subtotal_minor: lines,
        discount_minor,
        tax_minor,
        shipping_minor,
        total_minor,
        adjustment_minor: total_minor - itemised,
        currency: currency(m),
        shipping_address,
        payment_method: m
            .property_text("payment_method")
            .map_or(PaymentMethod::Other, |t| PaymentMethod::from_text(&t)),
        user_id: m.user_id.clone(),
        coupon: m.property_text("coupon"),
    })
}

/// An `Order Updated` naming its order; `None` (kept as activity) without
/// an `order_id`.
fn order_update(m: &SegmentMessage) -> Result<Option<OrderUpdate>, Rejection> {
    let Some(order) = first_text(&m.properties, &["order_id"]) else {
        return Ok(None);
    };
    let props = &m.properties;
    let at = |k: &str| amount(props, k, &format!("properties.{k}"));
    let items = product_lines(m)?;
    Ok(Some(OrderUpdate {
        order,
        items: (!items.is_empty()).then_some(items),
        discount_minor: at("discount")?,
        tax_minor: at("tax")?,
        shipping_minor: at("shipping")?,
        total_minor: at("total")?,
        revenue_minor: at("revenue")?,
        currency: m.property_text("currency").map(|c| c.to_uppercase()),
    }))
}
