//! The cart: lines added and removed (onto the cart itself), the cart
//! viewed, the checkout started (onto the cart's checkout), its steps, and
//! coupons.

use super::read::{amount, cart_of, currency, first_text, listed_product_ids, product_lines, quantity, session, utm};
use super::{Call, Mapped};
use crate::commerce::AddItem;
use crate::customer::activity::{
    ActivityEvent, CheckoutStepCompleted, CheckoutStepViewed, CouponChange, CouponChanged, ShoppingCartViewed,
};
use crate::ingest::derived_id;
use crate::ingest::message::Rejection;

/// The track calls mapped here.
pub(super) const NAMES: &[&str] = &[
    "Product Added",
    "Product Removed",
    "Cart Viewed",
    "Checkout Started",
    "Checkout Step Viewed",
    "Checkout Step Completed",
    "Payment Info Entered",
    "Coupon Entered",
    "Coupon Applied",
    "Coupon Denied",
    "Coupon Removed",
];

/// Maps a track call named one of [`NAMES`].
pub(super) fn track(call: &Call<'_>, event: &str) -> Result<Mapped, Rejection> {
    let (m, source, late) = (call.m, call.source, call.late);
    let (session_id, utm) = (session(m), utm(m));
    let product = first_text(&m.properties, &["product_id", "sku"]);
    let name = m.property_text("name");
    let activity = match event {
        "Product Added" => {
            let (Some(cart), Some(product_id)) = (m.property_text("cart_id"), product) else {
                return call.custom();
            };
            return Ok(Mapped::AddToCart {
                cart,
                currency: currency(m),
                item: AddItem {
                    name: name.unwrap_or_else(|| product_id.clone()),
                    product_id,
                    quantity: quantity(m.properties.get("quantity"), "properties.quantity")?,
                    unit_price_minor: amount(&m.properties, "price", "properties.price")?.unwrap_or(0),
                },
            });
        }
        "Product Removed" => {
            let (Some(cart), Some(product_id)) = (m.property_text("cart_id"), product) else {
                return call.custom();
            };
            return Ok(Mapped::RemoveFromCart { cart, product_id });
        }
        "Cart Viewed" => {
            let Some(cart_id) = cart_of(m, source, &["cart_id"]) else {
                return call.custom();
            };
            ActivityEvent::ShoppingCartViewed(ShoppingCartViewed {
                cart_id,
                product_ids: listed_product_ids(m),
                session_id,
                utm,
                late,
            })
        }
        "Checkout Started" => {
            let Some(cart) = first_text(&m.properties, &["cart_id", "checkout_id", "order_id"]) else {
                return call.custom();
            };
            let items = product_lines(m)?
                .into_iter()
                .map(|i| AddItem {
                    product_id: i.product_id,
                    name: i.name,
                    quantity: i.quantity,
                    unit_price_minor: i.unit_price_minor,
                })
                .collect();
            return Ok(Mapped::Checkout {
                cart,
                currency: currency(m),
                items,
            });
        }
        event @ ("Checkout Step Viewed" | "Checkout Step Completed" | "Payment Info Entered") => {
            let Some(cart_id) = cart_of(m, source, &["cart_id", "checkout_id", "order_id"]) else {
                return call.custom();
            };
            let step = m.property_text("step").unwrap_or_else(|| {
                if event == "Payment Info Entered" {
                    "payment"
                } else {
                    "unnumbered"
                }
                .to_string()
            });
            if event == "Checkout Step Viewed" {
                ActivityEvent::CheckoutStepViewed(CheckoutStepViewed {
                    cart_id,
                    step,
                    session_id,
                    utm,
                    late,
                })
            } else {
                ActivityEvent::CheckoutStepCompleted(CheckoutStepCompleted {
                    cart_id,
                    step,
                    session_id,
                    utm,
                    late,
                })
            }
        }
        event @ ("Coupon Entered" | "Coupon Applied" | "Coupon Denied" | "Coupon Removed") => {
            let Some(coupon) = first_text(&m.properties, &["coupon_id", "coupon"]) else {
                return call.custom();
            };
            let change = match event {
                "Coupon Entered" => CouponChange::Entered,
                "Coupon Applied" => CouponChange::Applied,
                "Coupon Denied" => CouponChange::Denied,
                _ => CouponChange::Removed,
            };
            ActivityEvent::CouponChanged(CouponChanged {
                change,
                coupon,
                coupon_name: m.property_text("coupon_name"),
                cart_id: cart_of(m, source, &["cart_id"]),
                order_id: first_text(&m.properties, &["order_id"]).map(|o| derived_id("order", source, &o)),
                discount_minor: amount(&m.properties, "discount", "properties.discount")?,
                session_id,
                utm,
                late,
            })
        }
        _ => return call.custom(),
    };
    Ok(Mapped::Activity(activity))
}
