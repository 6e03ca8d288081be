//! The API's lookups by keyed hash (decision 0046): `GET /customers?email=`
//! and `?name=` find a customer, the address stays unique (409), the name
//! index follows a rename and forgets an erased customer.

use crm_tests::TestApi;
use serde_json::{json, Value};

fn registration(email: &str, first: &str, last: &str) -> String {
    let mut body: Value = serde_json::from_str(&crm_tests::registration(email)).expect("json");
    body["first_name"] = json!(first);
    body["last_name"] = json!(last);
    body.to_string()
}

async fn ids(api: &TestApi, query: &str) -> Vec<String> {
    let found = api.call("GET", &format!("/customers?{query}"), None).await;
    assert_eq!(found.status, 200, "{query}: {:?}", found.body);
    found.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn customers_are_found_by_email_and_exact_name_and_forgotten_when_erased() {
    let api = TestApi::new();
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let last = format!("Keyedname{unique}");
    let email = format!("keyed.{unique}@example.com");
    let a = api
        .call("POST", "/customers", Some(&registration(&email, "Ada", &last)))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let ada = a.body["id"].as_str().expect("id").to_string();
    let b = api
        .call(
            "POST",
            "/customers",
            Some(&registration(&format!("other.{unique}@example.com"), &last, "Other")),
        )
        .await;
    assert_eq!(b.status, 201, "{:?}", b.body);
    let other = b.body["id"].as_str().expect("id").to_string();

    // The same address in another case: 409.
    let again = api
        .call(
            "POST",
            "/customers",
            Some(&registration(&email.to_uppercase(), "Eve", "Eve")),
        )
        .await;
    assert_eq!(again.status, 409, "{:?}", again.body);

    assert_eq!(
        ids(&api, &format!("email={}", email.to_uppercase())).await,
        std::slice::from_ref(&ada)
    );
    // A last name of one, the first name of the other; any case, exact only.
    let mut both = ids(&api, &format!("name={}", last.to_uppercase())).await;
    both.sort();
    let mut expected = vec![ada.clone(), other.clone()];
    expected.sort();
    assert_eq!(both, expected);
    assert!(ids(&api, &format!("name={}x", last)).await.is_empty());
    assert!(ids(&api, "name=Ada").await.contains(&ada));

    let both_given = api
        .call("GET", &format!("/customers?email={email}&name={last}"), None)
        .await;
    assert_eq!(both_given.status, 422, "{:?}", both_given.body);
    // A parameter given empty is refused by name, even beside a valid one.
    for query in [
        format!("email={email}&name="),
        "name=%20".to_string(),
        "email=".to_string(),
    ] {
        let empty = api.call("GET", &format!("/customers?{query}"), None).await;
        assert_eq!(empty.status, 422, "{query}: {:?}", empty.body);
        let field = if query.starts_with("email=") && !query.contains('&') {
            "email"
        } else {
            "name"
        };
        assert!(empty.body.to_string().contains(field), "{query}: {:?}", empty.body);
    }

    let erased = api.call("DELETE", &format!("/customers/{ada}"), None).await;
    assert_eq!(erased.status, 202, "{:?}", erased.body);
    assert_eq!(ids(&api, &format!("name={last}")).await, std::slice::from_ref(&other));
    assert!(ids(&api, &format!("email={email}")).await.is_empty());
}
