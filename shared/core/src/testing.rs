//! crm-core's test support: the kernel's (in-memory adapters, fixtures, the
//! given/when/then [`AggregateScenario`]) and customers registered through
//! the customer service.

pub use crm_kernel::testing::*;

use crate::event::EventEnvelope;
use crate::ports::EventStore;

/// A registration for tests: the given names, marketing email consent ticked
/// (no SMS or push), time zone `timezone`.
pub fn registration(
    email: &str,
    first_name: &str,
    last_name: &str,
    timezone: &str,
) -> crate::customer::RegisterCustomer {
    crate::customer::RegisterCustomer {
        email: email.to_string(),
        first_name: first_name.to_string(),
        last_name: last_name.to_string(),
        phone: None,
        source: crate::customer::RegistrationSource::Web,
        marketing_consent: crate::customer::MarketingConsentChoice {
            email: true,
            sms: false,
            push: false,
        },
        terms_accepted: true,
        ip: "192.0.2.1".into(),
        user_agent: "test".into(),
        timezone: Some(timezone.to_string()),
        locale: None,
    }
}

/// Registers customer `id` through the customer service over `store` (system
/// clock, actor `system:test`, the tests' [`identifiers`]); panics when the
/// command fails.
pub async fn register(
    store: std::sync::Arc<dyn EventStore>,
    id: &str,
    registration: crate::customer::RegisterCustomer,
) {
    let service = crate::customer::CustomerService::new(store, std::sync::Arc::new(crate::clock::SystemClock))
        .with_identifiers(identifiers());
    let respond = |c: &crate::customer::Customer, _: &[EventEnvelope]| (201, serde_json::json!({ "id": c.id }));
    service
        .execute(
            id,
            &crate::customer::CustomerCommand::Register(registration),
            &crate::event::CommandMeta::new(crate::event::Actor::system("test")),
            None,
            &respond,
        )
        .await
        .expect("register");
}

/// Registers customers `0..customers` (ids from [`customer_id`],
/// `ops{n}@example.com`, Op Erator{n}, UTC) through [`register`].
pub async fn register_customers(store: std::sync::Arc<dyn EventStore>, customers: usize) {
    for n in 0..customers {
        let registration = registration(&format!("ops{n}@example.com"), "Op", &format!("Erator{n}"), "UTC");
        register(store.clone(), &customer_id(n), registration).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{test_time, AggregateScenario};
    use crate::commerce::{AddItem, CartAggregate, CartCommand, CartError, CartEvent, CreateCart};

    fn cart() -> AggregateScenario<CartAggregate> {
        AggregateScenario::new("k1", ())
    }

    fn created() -> CartEvent {
        CartEvent::CartCreated {
            cart_id: "k1".into(),
            customer_id: "c1".into(),
            currency: "EUR".into(),
        }
    }

    fn one() -> AddItem {
        AddItem {
            product_id: "sku-1".into(),
            name: "One".into(),
            quantity: 1,
            unit_price_minor: 100,
        }
    }

    #[test]
    fn given_events_fold_a_minute_apart_and_the_command_is_decided_for_the_scenario_s_id() {
        cart()
            .when(CartCommand::Create(CreateCart {
                customer_id: "c1".into(),
                currency: "EUR".into(),
            }))
            .then_expect_events(&[created()]);
        cart()
            .when(CartCommand::StartCheckout)
            .then_expect_error(CartError::NotFound);

        let added = cart().given(&[created()]).when(CartCommand::AddItem(one())).events();
        let scenario = cart().given(&[created()]).given(&added);
        let state = scenario.state().expect("a cart");
        assert_eq!(state.version, 2, "given twice: versions carry on");
        assert_eq!(state.created_at, test_time());
        assert_eq!(state.updated_at, test_time() + chrono::Duration::minutes(1));
    }

    #[test]
    #[should_panic(expected = "assertion `left == right` failed")]
    fn other_events_than_expected_fail_the_test() {
        cart()
            .given(&[created()])
            .when(CartCommand::AddItem(one()))
            .then_expect_events(&[]);
    }

    #[test]
    #[should_panic(expected = "expected the refusal")]
    fn events_where_a_refusal_was_expected_fail_the_test() {
        cart()
            .when(CartCommand::Create(CreateCart {
                customer_id: "c1".into(),
                currency: "EUR".into(),
            }))
            .then_expect_error(CartError::NotFound);
    }
}
