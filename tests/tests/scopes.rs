//! Scopes (decision 0039): every route of `crm_api::ROUTE_TABLE` refuses a
//! token without its scope (403 naming it) and admits one with it; the
//! OpenAPI document and the SAM template give every route the same scope.
//! The table drives these tests, and `openapi.rs` checks that the table's
//! routes are exactly the documented and deployed ones: a route added
//! without a scope fails here or there (and the router refuses it to every
//! token meanwhile).

use crm_api::{Access, Scope, Scopes, ROUTE_TABLE};
use crm_tests::{TestApi, TOKEN};
use serde_yaml::Value as Yaml;
use std::collections::BTreeMap;

/// The route's path with every `{parameter}` filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "0190d7a0-0000-7000-8000-000000000000")
        .replace("{message_id}", "0190d7a0-0000-7000-8000-0000000000ee")
        .replace("{purpose}", "marketing")
        .replace("{channel}", "email")
        .replace("{product}", "lamp")
        .replace("{name}", "wishlist-added")
        .replace("{token}", "not-a-token")
}

fn body_for(method: &str) -> Option<&'static str> {
    matches!(method, "POST" | "PUT" | "PATCH").then_some("{}")
}

/// A token of the test API carrying exactly `scopes`, as `crm-local token` mints it.
fn token_with(scopes: Scopes) -> String {
    let names: Vec<String> = scopes.iter().map(|s| s.as_str().to_string()).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    crm_local::runtime::serve::token::mint(dir.path(), Some(TOKEN), &names).expect("minted")
}

fn all_but(scope: Scope) -> Scopes {
    Scope::ALL.into_iter().filter(|s| *s != scope).collect()
}

async fn call_as(api: &TestApi, token: &str, method: &str, path: &str) -> crm_tests::Answer {
    api.call_with(
        method,
        &concrete(path),
        body_for(method),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

#[tokio::test]
async fn every_route_refuses_a_token_without_its_scope_and_admits_one_with_it() {
    let api = TestApi::new();
    let mut checked = 0;
    for route in ROUTE_TABLE {
        let Access::Scope(scope) = route.access else { continue };
        let name = format!("{} {}", route.method, route.path);

        let refused = call_as(&api, &token_with(all_but(scope)), route.method, route.path).await;
        assert_eq!(refused.status, 403, "{name} without {scope}: {:?}", refused.body);
        assert_eq!(refused.content_type(), "application/problem+json", "{name}");
        assert_eq!(
            refused.body["type"], "https://crm.dev/problems/insufficient-scope",
            "{name}: {:?}",
            refused.body
        );
        assert_eq!(refused.body["required_scope"], scope.as_str(), "{name}");
        assert!(
            refused.body["detail"].as_str().unwrap_or("").contains(scope.as_str()),
            "{name}: {:?}",
            refused.body
        );
        assert_eq!(
            refused.headers["www-authenticate"],
            format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"").as_str(),
            "{name}"
        );

        // With only that scope (or every scope) the request reaches its handler,
        // which answers whatever it answers to these placeholder ids and bodies.
        for token in [token_with(Scopes::none().with(scope)), TOKEN.to_string()] {
            let admitted = call_as(&api, &token, route.method, route.path).await;
            assert!(
                admitted.status != 401 && admitted.status != 403,
                "{name} with {scope}: {} {:?}",
                admitted.status,
                admitted.body
            );
        }

        let anonymous = api
            .call_with(route.method, &concrete(route.path), body_for(route.method), &[])
            .await;
        assert_eq!(anonymous.status, 401, "{name} without a token");
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} scoped routes");
}

/// `/health` and `/me` (the token's own scopes, for the console: decision
/// 0089) need a valid token, any scope; they are the only such routes, so a
/// new route cannot skip its scope by being declared "authenticated".
#[tokio::test]
async fn only_health_and_me_take_any_valid_token() {
    let authenticated: Vec<_> = ROUTE_TABLE
        .iter()
        .filter(|r| r.access == Access::Authenticated)
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(authenticated, [("GET", "/health"), ("GET", "/me")]);
    let api = TestApi::new();
    for scope in Scope::ALL {
        let answer = call_as(&api, &token_with(Scopes::none().with(scope)), "GET", "/me").await;
        assert_eq!(answer.status, 200, "{scope}: {:?}", answer.body);
        assert_eq!(
            answer.body["scopes"],
            serde_json::json!([scope.as_str()]),
            "{:?}",
            answer.body
        );
    }
    let api = TestApi::new();
    for scope in Scope::ALL {
        let answer = call_as(&api, &token_with(Scopes::none().with(scope)), "GET", "/health").await;
        assert_eq!(answer.status, 200, "{scope}: {:?}", answer.body);
    }
    assert_eq!(api.call_with("GET", "/health", None, &[]).await.status, 401);
    let forged = token_with(Scopes::none().with(Scope::Read)).replace("crm/read", "crm/admin");
    assert_eq!(call_as(&api, &forged, "GET", "/health").await.status, 401);
}

fn yaml(relative: &str) -> Yaml {
    let path = format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn access_by_route() -> BTreeMap<(String, String), Access> {
    ROUTE_TABLE
        .iter()
        .map(|r| ((r.method.to_string(), r.path.to_string()), r.access))
        .collect()
}

fn requirement(scheme: &str, scopes: &[&str]) -> Yaml {
    let mut one = serde_yaml::Mapping::new();
    one.insert(
        Yaml::from(scheme),
        Yaml::Sequence(scopes.iter().map(|s| Yaml::from(*s)).collect()),
    );
    Yaml::Sequence(vec![Yaml::Mapping(one)])
}

/// Each operation of openapi.yaml lists its route's scope as its security
/// requirement (`[{bearer: [crm/...]}]`) and documents the 403.
#[test]
fn the_openapi_document_lists_each_route_scope() {
    let doc = yaml("openapi.yaml");
    assert_eq!(
        doc["security"],
        requirement("bearer", &[]),
        "the default: any valid token"
    );
    let access = access_by_route();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        let path = path.as_str().expect("path");
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let key = (method.to_uppercase(), path.to_string());
            let name = format!("{} {path}", key.0);
            let expected = match access
                .get(&key)
                .unwrap_or_else(|| panic!("{name} is not in ROUTE_TABLE"))
            {
                Access::Scope(scope) => {
                    assert!(
                        op["responses"].get("403").is_some(),
                        "{name} documents no 403 for a token without {scope}"
                    );
                    Some(requirement("bearer", &[scope.as_str()]))
                }
                // Inherits the document's `bearer: []`.
                Access::Authenticated => None,
                Access::SignedLink | Access::Public => Some(Yaml::Sequence(vec![])),
                Access::WriteKey => Some(requirement("writeKey", &[])),
            };
            match expected {
                Some(security) => assert_eq!(op["security"], security, "{name}"),
                None => assert!(op.get("security").is_none(), "{name}"),
            }
            seen += 1;
        }
    }
    assert_eq!(seen, ROUTE_TABLE.len());
}

/// Each route of the api function's HttpApi events carries its scope as
/// `AuthorizationScopes` (the JWT authorizer checks it before the function
/// does); `/health` any valid JWT; the signed-link and write-key routes none.
#[test]
fn the_template_gives_each_route_its_scope() {
    let doc = yaml("template.yaml");
    let access = access_by_route();
    let events = doc["Resources"]["ApiFunction"]["Properties"]["Events"]
        .as_mapping()
        .expect("api events");
    let mut seen = 0;
    for (id, event) in events.iter().filter(|(_, e)| e["Type"] == "HttpApi") {
        let p = &event["Properties"];
        let key = (
            p["Method"].as_str().unwrap_or("").to_string(),
            p["Path"].as_str().unwrap_or("").to_string(),
        );
        let name = format!("{id:?} ({} {})", key.0, key.1);
        let auth = &p["Auth"];
        match access
            .get(&key)
            .unwrap_or_else(|| panic!("{name} is not in ROUTE_TABLE"))
        {
            Access::Scope(scope) => {
                assert_eq!(
                    auth["AuthorizationScopes"],
                    Yaml::Sequence(vec![Yaml::from(scope.as_str())]),
                    "{name}"
                );
                assert!(auth.get("Authorizer").is_none(), "{name}: the default JWT authorizer");
            }
            Access::Authenticated => assert!(p.get("Auth").is_none(), "{name}"),
            Access::SignedLink | Access::WriteKey | Access::Public => {
                assert_eq!(auth["Authorizer"], "NONE", "{name}");
                assert!(auth.get("AuthorizationScopes").is_none(), "{name}");
            }
        }
        seen += 1;
    }
    assert_eq!(seen, ROUTE_TABLE.len());
}
