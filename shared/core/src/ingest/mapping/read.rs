//! Reading the spec's properties: text, amounts, quantities, product lines,
//! addresses, a call's session, campaign and cart.

use crate::commerce::cart::valid_product_id;
use crate::commerce::OrderItem;
use crate::customer::activity::{Utm, MAX_LISTED_PRODUCTS};
use crate::customer::Address;
use crate::ingest::derived_id;
use crate::ingest::message::{minor_units, Rejection, SegmentMessage};
use serde_json::{Map, Value};

pub(super) fn required(m: &SegmentMessage, names: &[&str]) -> Result<String, Rejection> {
    first_text(&m.properties, names).ok_or_else(|| Rejection::new(format!("properties.{}", names[0]), "is required"))
}

/// The first of `names` that is non-empty text (or a number) in `map`.
pub(super) fn first_text(map: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| match map.get(*n) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

pub(super) fn currency(m: &SegmentMessage) -> String {
    m.property_text("currency")
        .map(|c| c.to_uppercase())
        .unwrap_or_else(|| "USD".into())
}

/// `context.campaign` (Segment's UTM parameters).
pub(super) fn utm(m: &SegmentMessage) -> Option<Utm> {
    let c = m.context.get("campaign")?.as_object()?;
    let get = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    let utm = Utm {
        source: get("source"),
        medium: get("medium"),
        campaign: get("name"),
        term: get("term"),
        content: get("content"),
    };
    (utm != Utm::default()).then_some(utm)
}

pub(super) fn session(m: &SegmentMessage) -> Option<String> {
    m.context_text(&["sessionId"])
}

pub(super) fn quantity(value: Option<&Value>, field: &str) -> Result<u32, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(1),
        Some(v) => v
            .as_u64()
            .and_then(|q| u32::try_from(q).ok())
            .filter(|q| *q > 0)
            .ok_or_else(|| Rejection::new(field, "must be a positive whole number")),
    }
}

/// An amount property in minor units: `None` when absent or null.
pub(super) fn amount(map: &Map<String, Value>, key: &str, field: &str) -> Result<Option<i64>, Rejection> {
    map.get(key)
        .filter(|v| !v.is_null())
        .map(|v| minor_units(v, field))
        .transpose()
}

pub(super) fn address(value: &Value) -> Result<Address, Rejection> {
    let field = "properties.shipping_address";
    let get = |k: &[&str]| {
        k.iter()
            .find_map(|k| value.get(*k).and_then(Value::as_str).map(str::to_string))
    };
    Ok(Address {
        line1: get(&["line1", "street"]).ok_or_else(|| Rejection::new(format!("{field}.line1"), "is required"))?,
        line2: get(&["line2"]),
        city: get(&["city"]).ok_or_else(|| Rejection::new(format!("{field}.city"), "is required"))?,
        region: get(&["region", "state"]),
        postal_code: get(&["postal_code", "postalCode"])
            .ok_or_else(|| Rejection::new(format!("{field}.postal_code"), "is required"))?,
        country: get(&["country"]).ok_or_else(|| Rejection::new(format!("{field}.country"), "is required"))?,
    })
}

/// One entry of `products`, read: its id (`product_id`, else `sku`), name
/// (else its id), category, quantity (default 1) and unit price (default 0).
pub(super) fn product_line(p: &Value, i: usize) -> Result<OrderItem, Rejection> {
    let field = |k: &str| format!("properties.products[{i}].{k}");
    let empty = Map::new();
    let map = p.as_object().unwrap_or(&empty);
    let product_id = first_text(map, &["product_id", "sku", "id"])
        .ok_or_else(|| Rejection::new(field("product_id"), "is required"))?;
    Ok(OrderItem {
        name: first_text(map, &["name"]).unwrap_or_else(|| product_id.clone()),
        category: first_text(map, &["category"]),
        quantity: quantity(map.get("quantity"), &field("quantity"))?,
        unit_price_minor: amount(map, "price", &field("price"))?.unwrap_or(0),
        product_id,
    })
}

/// Every entry of `products`.
pub(super) fn product_lines(m: &SegmentMessage) -> Result<Vec<OrderItem>, Rejection> {
    let products = m.properties.get("products").and_then(Value::as_array);
    products
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| product_line(p, i))
        .collect()
}

/// The ids of the listed products that are valid product ids (at most
/// [`MAX_LISTED_PRODUCTS`]): a list view never fails on one odd entry.
pub(super) fn listed_product_ids(m: &SegmentMessage) -> Vec<String> {
    let products = m.properties.get("products").and_then(Value::as_array);
    products
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_object().and_then(|p| first_text(p, &["product_id", "sku"])))
        .filter(|id| valid_product_id(id))
        .take(MAX_LISTED_PRODUCTS)
        .collect()
}

/// The CRM's cart id of the first of `names` the call carries.
pub(super) fn cart_of(m: &SegmentMessage, source: &str, names: &[&str]) -> Option<String> {
    first_text(&m.properties, names).map(|c| derived_id("cart", source, &c))
}
