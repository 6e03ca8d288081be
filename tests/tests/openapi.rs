//! `openapi.yaml` describes exactly the router's routes, and each operation,
//! called with its documented example, answers with a documented status.

use crm_core::consent::{Channel, Purpose};
use crm_core::messaging::unsubscribe::UnsubscribeToken;
use crm_tests::{registration, TestApi};
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;

fn document() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml");
    let text = std::fs::read_to_string(path).expect("openapi.yaml is readable");
    serde_yaml::from_str(&text).expect("openapi.yaml is YAML")
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn operations(doc: &Yaml) -> Vec<(String, String, Yaml)> {
    let mut out = Vec::new();
    let paths = doc["paths"].as_mapping().expect("paths");
    for (path, item) in paths {
        let path = path.as_str().expect("path").to_string();
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((m.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    out
}

#[test]
fn documents_exactly_the_routes_the_router_serves() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
    let served: BTreeSet<(String, String)> = crm_api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
}

/// The API function's HttpApi events in template.yaml: what API Gateway routes.
#[test]
fn template_routes_exactly_the_router_routes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let text = std::fs::read_to_string(path).expect("template.yaml is readable");
    // CloudFormation tags (!Ref ...) parse as tagged values; only plain fields are read here.
    let doc: Yaml = serde_yaml::from_str(&text).expect("template.yaml is YAML");
    let events = doc["Resources"]["ApiFunction"]["Properties"]["Events"]
        .as_mapping()
        .expect("api events");
    let routed: BTreeSet<(String, String)> = events
        .values()
        .filter(|e| e["Type"] == "HttpApi")
        .map(|e| {
            let p = &e["Properties"];
            (
                p["Method"].as_str().unwrap_or("").to_string(),
                p["Path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let served: BTreeSet<(String, String)> = crm_api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routed, served);
}

#[tokio::test]
async fn every_operation_answers_with_a_documented_status() {
    let doc = document();
    for (method, path, op) in operations(&doc) {
        // A fresh API and customer per operation, so one operation's example
        // does not change what the next one finds.
        let api = TestApi::new();
        let created = api
            .call("POST", "/customers", Some(&registration("openapi@example.com")))
            .await;
        let id = created.body["id"].as_str().expect("id").to_string();
        let mut url = path
            .replace("{id}", &id)
            .replace("{purpose}", "marketing")
            .replace("{channel}", "email")
            .replace("{product}", "sku-1")
            // The local runtime's server source (a name no source has is 404).
            .replace("{source}", "local");
        let query: Vec<String> = op["parameters"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query" && !p["example"].is_null())
            .map(|p| {
                format!(
                    "{}={}",
                    p["name"].as_str().unwrap_or(""),
                    p["example"].as_str().unwrap_or("")
                )
            })
            .collect();
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let mut example = op["requestBody"]["content"]["application/json"]["example"].clone();
        // A form body (application/x-www-form-urlencoded), when the operation documents one.
        let mut form: Option<String> = None;
        // Operations whose example needs the customer in a given state first.
        match op["operationId"].as_str() {
            Some("verifyEmail") => {
                let events = api.call("GET", &format!("/customers/{id}/events"), None).await;
                let token = events.body["items"][3]["data"]["token"]
                    .as_str()
                    .expect("token")
                    .to_string();
                example["token"] = Yaml::String(token);
            }
            Some("createCart") => {
                example["customer_id"] = Yaml::String(id.clone());
            }
            // Cart routes act on a cart of the customer holding one item (sku-1).
            Some("getCart" | "addCartItem" | "removeCartItem" | "checkoutCart") => {
                let body = format!(r#"{{"customer_id":"{id}","currency":"EUR"}}"#);
                let cart = api.call("POST", "/carts", Some(&body)).await;
                assert_eq!(cart.status, 201, "{:?}", cart.body);
                let cart_id = cart.body["id"].as_str().expect("cart id").to_string();
                let item = r#"{"product_id":"sku-1","name":"Mug","quantity":1,"unit_price_minor":900}"#;
                let added = api.call("POST", &format!("/carts/{cart_id}/items"), Some(item)).await;
                assert_eq!(added.status, 200, "{:?}", added.body);
                url = url.replacen(&id, &cart_id, 1);
            }
            Some("placeOrder") => {
                example["customer_id"] = Yaml::String(id.clone());
            }
            // Order routes act on an order of the customer (total 3470 EUR), moved
            // to the state the operation needs: paid to ship or refund, shipped to deliver.
            Some(
                "getOrder" | "recordOrderPayment" | "shipOrder" | "deliverOrder" | "cancelOrder" | "refundOrder"
                | "completeRefund" | "submitReview",
            ) => {
                let body = format!(
                    r#"{{"customer_id":"{id}","items":[{{"product_id":"sku-1","name":"Beans","quantity":2,"unit_price_minor":1250}}],"tax_minor":475,"shipping_minor":495,"total_minor":3470,"currency":"EUR","shipping_address":{{"line1":"1 Main St","city":"Berlin","postal_code":"10115","country":"DE"}}}}"#
                );
                let order = api.call("POST", "/orders", Some(&body)).await;
                assert_eq!(order.status, 201, "{:?}", order.body);
                let order_id = order.body["id"].as_str().expect("order id").to_string();
                let mut steps: Vec<(&str, &str)> = Vec::new();
                let paid = r#"{"payment_id":"p0","status":"succeeded","method":"credit-card","amount_minor":3470,"currency":"EUR","transaction_id":"tx0"}"#;
                let shipped = r#"{"carrier":"DHL","tracking_number":"T1"}"#;
                match op["operationId"].as_str() {
                    Some("shipOrder" | "refundOrder") => steps.push(("payments", paid)),
                    // Completion: a refund of the paid order first, whose id the path names.
                    Some("completeRefund") => steps.extend([
                        ("payments", paid),
                        ("refunds", r#"{"refund_type":"full","reason":"other"}"#),
                    ]),
                    Some("deliverOrder") => steps.extend([("payments", paid), ("ship", shipped)]),
                    // A review: of a delivered order (decision 0073).
                    Some("submitReview") => steps.extend([("payments", paid), ("ship", shipped), ("deliver", "{}")]),
                    _ => {}
                }
                for (step, step_body) in steps {
                    let done = api
                        .call("POST", &format!("/orders/{order_id}/{step}"), Some(step_body))
                        .await;
                    assert_eq!(done.status, 200, "{step}: {:?}", done.body);
                    if let Some(refund_id) = done.body["refunds"][0]["refund_id"].as_str() {
                        url = url.replace("{refund_id}", refund_id);
                    }
                }
                url = url.replacen(&id, &order_id, 1);
            }
            // The attribution of an order the customer placed (projected once the bus settles).
            Some("orderAttribution") => {
                let body = format!(
                    r#"{{"customer_id":"{id}","items":[{{"product_id":"sku-1","name":"Beans","quantity":2,"unit_price_minor":1250}}],"tax_minor":475,"shipping_minor":495,"total_minor":3470,"currency":"EUR","shipping_address":{{"line1":"1 Main St","city":"Berlin","postal_code":"10115","country":"DE"}}}}"#
                );
                let order = api.call("POST", "/orders", Some(&body)).await;
                assert_eq!(order.status, 201, "{:?}", order.body);
                let order_id = order.body["id"].as_str().expect("order id").to_string();
                url = url.replacen(&id, &order_id, 1);
            }
            Some("segmentMembers") => {
                url = url.replacen(&id, "buyers", 1);
            }
            // A fixed segment to read; the definition of the example to put and preview.
            Some("getSegment") => {
                url = url.replacen(&id, "buyers", 1);
            }
            Some("putSegment" | "previewSegment") => {
                url = url.replacen(&id, "german-buyers", 1);
            }
            Some("campaignStats") => {
                url = url.replacen(&id, "welcome", 1);
            }
            // Broadcast routes act on one scheduled for tomorrow (resume: paused first; decision 0084).
            Some("getBroadcast" | "pauseBroadcast" | "resumeBroadcast" | "cancelBroadcast") => {
                url = url.replacen(&id, "spring-sale", 1);
                let at = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
                let body = serde_json::json!({ "id": "spring-sale", "template": "welcome", "channel": "email",
                    "audience": { "segments": ["buyers"] }, "send": { "type": "at", "at": at } });
                let scheduled = api.call("POST", "/broadcasts", Some(&body.to_string())).await;
                assert_eq!(scheduled.status, 201, "{:?}", scheduled.body);
                if op["operationId"] == "resumeBroadcast" {
                    let paused = api.call("POST", "/broadcasts/spring-sale/pause", None).await;
                    assert_eq!(paused.status, 200, "{:?}", paused.body);
                }
            }
            // Campaign routes act on the shipped abandoned-cart campaign (resume: paused first).
            // Rollback: an edited version 2 first, so version 1 is not current.
            Some(
                "getCampaign"
                | "putCampaign"
                | "pauseCampaign"
                | "resumeCampaign"
                | "rollbackCampaign"
                | "listCampaignVersions",
            ) => {
                url = url.replacen(&id, "abandoned-cart", 1);
                if op["operationId"] == "resumeCampaign" {
                    let paused = api.call("POST", "/campaigns/abandoned-cart/pause", None).await;
                    assert_eq!(paused.status, 200, "{:?}", paused.body);
                }
                if op["operationId"] == "rollbackCampaign" {
                    let got = api.call("GET", "/campaigns/abandoned-cart", None).await;
                    let mut definition = got.body["definition"].clone();
                    definition["name"] = serde_json::json!("Abandoned cart, edited");
                    let put = api
                        .call("PUT", "/campaigns/abandoned-cart", Some(&definition.to_string()))
                        .await;
                    assert_eq!(put.status, 200, "{:?}", put.body);
                }
            }
            // Registration starts the email-verification journey, which requests a message.
            Some("explainMessage") => {
                let page = api.store.read_all(None, 1000).await.expect("read all");
                let message_id = page
                    .events
                    .iter()
                    .find(|e| e.event_type == "MessageRequested")
                    .and_then(|e| e.data["message_id"].as_str())
                    .expect("a requested message")
                    .to_string();
                url = url.replace("{message_id}", &message_id);
            }
            // The template routes act on the shipped welcome template.
            Some("previewTemplate" | "getTemplate" | "putTemplate") => {
                url = url.replacen(&id, "welcome", 1);
            }
            // The signed-link routes: a valid token of the customer; the POST sends its form example.
            Some("preferenceCentre" | "submitPreferences") => {
                let token = api.runtime.unsubscribe.sign(&UnsubscribeToken {
                    customer_id: id.clone(),
                    purpose: Purpose::Marketing,
                    channel: Channel::Email,
                    expires_at: chrono::Utc::now() + chrono::Duration::days(1),
                });
                url = url.replace("{token}", &token);
                if let Some(fields) =
                    op["requestBody"]["content"]["application/x-www-form-urlencoded"]["example"].as_mapping()
                {
                    let pairs: Vec<String> = fields
                        .iter()
                        .map(|(k, v)| format!("{}={}", k.as_str().unwrap_or(""), v.as_str().unwrap_or("")))
                        .collect();
                    form = Some(pairs.join("&"));
                }
            }
            // The ingestion routes: messages about the customer (by their CRM id as userId).
            Some("segmentIdentify" | "segmentAlias" | "segmentIdentifyShort" | "segmentAliasShort") => {
                example["userId"] = Yaml::String(id.clone());
            }
            // One of the console's files (decision 0089).
            Some("consoleAsset") => {
                url = url.replace("{asset}", "app.js");
            }
            // analytics-next's settings: the key in the path is the credential.
            Some("segmentSourceSettings") => {
                url = url.replace("{writeKey}", &api.runtime.local_write_key);
            }
            // Custom event schemas (a name with a space, percent-encoded); the GET
            // reads one registered first.
            Some("putCustomEventSchema" | "getCustomEventSchema") => {
                url = url.replace("{name}", "Video%20Played");
                if op["operationId"] == "getCustomEventSchema" {
                    let put = api.call("PUT", &url, Some(r#"{"type":"object"}"#)).await;
                    assert_eq!(put.status, 200, "{:?}", put.body);
                }
            }
            // A dead letter of the customer's registration, as the runtime parks a
            // delivery that failed (decision 0085); redriven, the projector takes it.
            Some("getDeadLetter" | "redriveDeadLetter") => {
                use crm_core::ports::DeadLetterQueue;
                let stored = api
                    .store
                    .read_stream(&format!("customer-{id}"), 0, 1)
                    .await
                    .expect("read");
                api.runtime
                    .bus
                    .dead_letters()
                    .park(crm_core::ports::DeadLetter {
                        consumer: "projector".into(),
                        reason: "store was down".into(),
                        payload: serde_json::to_value(&stored[0]).expect("json"),
                        failed_at: chrono::Utc::now(),
                        attempts: 1,
                    })
                    .await
                    .expect("park");
                let letters = api.runtime.bus.dead_letters().list().await.expect("letters");
                url = url.replacen(&id, &letters[0].id.to_string(), 1);
            }
            Some("reactivateCustomer") => {
                let off = api
                    .call(
                        "POST",
                        &format!("/customers/{id}/deactivate"),
                        Some(r#"{"reason":"other"}"#),
                    )
                    .await;
                assert_eq!(off.status, 200);
            }
            _ => {}
        }
        let body = form.or_else(|| (!example.is_null()).then(|| serde_json::to_string(&example).expect("json")));
        // The ingestion routes take a source's write key (HTTP Basic), not the bearer token.
        let answer = if path.starts_with("/v1/") {
            let basic = api.write_key_header();
            api.call_with(&method, &url, body.as_deref(), &[("authorization", &basic)])
                .await
        } else {
            api.call(&method, &url, body.as_deref()).await
        };
        let status = answer.status.as_u16().to_string();
        let responses = op["responses"].as_mapping().expect("responses");
        assert!(
            responses.contains_key(Yaml::String(status.clone())),
            "{method} {path} answered {status}, not documented: {:?}",
            answer.body
        );
        assert!(
            answer.status.is_success(),
            "{method} {path}: the example should succeed, got {status} {:?}",
            answer.body
        );
        // Operations with `security: []` are public (reached from links in messages).
        if op["security"].as_sequence().is_some_and(|s| s.is_empty()) {
            let public = api.call_with(&method, &url, body.as_deref(), &[]).await;
            assert!(
                public.status.is_success(),
                "{method} {path} is public: {:?}",
                public.body
            );
            continue;
        }
        // The settings route's credential is the key in its path: another key is the documented 404.
        if op["operationId"] == "segmentSourceSettings" {
            let unknown = api
                .call_with(&method, "/v1/projects/wk_not_a_key_0123456789/settings", None, &[])
                .await;
            assert_eq!(unknown.status, 404, "{method} {path}");
            assert!(
                responses.contains_key(Yaml::String("404".into())),
                "{method} {path} documents 404"
            );
            continue;
        }
        // Unauthenticated calls get the documented 401.
        let denied = api.call_with(&method, &url, body.as_deref(), &[]).await;
        assert_eq!(denied.status, 401, "{method} {path}");
        assert!(
            responses.contains_key(Yaml::String("401".into())),
            "{method} {path} documents 401"
        );
    }
}

/// The routes reached from links in messages skip authentication in all three
/// places: `security: []` in openapi.yaml, `Authorizer: NONE` in
/// template.yaml, and outside the router's bearer check.
#[test]
fn exactly_the_public_routes_skip_authentication() {
    let public: BTreeSet<(String, String)> = crm_api::PUBLIC_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented: BTreeSet<(String, String)> = operations(&document())
        .into_iter()
        .filter(|(_, _, op)| op["security"].as_sequence().is_some_and(|s| s.is_empty()))
        .map(|(m, p, _)| (m, p))
        .collect();
    assert_eq!(documented, public);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let text = std::fs::read_to_string(path).expect("template.yaml is readable");
    let doc: Yaml = serde_yaml::from_str(&text).expect("template.yaml is YAML");
    let unauthenticated: BTreeSet<(String, String)> = doc["Resources"]["ApiFunction"]["Properties"]["Events"]
        .as_mapping()
        .expect("api events")
        .values()
        .filter(|e| e["Type"] == "HttpApi" && e["Properties"]["Auth"]["Authorizer"] == "NONE")
        .map(|e| {
            let p = &e["Properties"];
            (
                p["Method"].as_str().unwrap_or("").to_string(),
                p["Path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    // The ingestion routes pass the gateway too: the function checks their write key.
    let mut open = public;
    open.extend(
        crm_api::WRITE_KEY_ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string())),
    );
    assert_eq!(unauthenticated, open);
}
