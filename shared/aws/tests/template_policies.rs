//! template.yaml's IAM policies against what the code does (decision 0047):
//! - KMS on `DataKeysKey` only under the encryption contexts the key store
//!   sends (`crm_aws::keys`: the branch key's, and the per-customer one of
//!   keys written before decision 0044). moto evaluates no IAM condition on
//!   KMS calls, so this is checked on the template, from the key store's
//!   constants, and by cfn-lint and `sam validate --lint` in scripts/test.
//! - `secretsmanager:GetSecretValue` on exactly the secrets a function's
//!   environment names (`*_SECRET_ARN`), and no secret value in any
//!   function's environment.

use crm_aws::keys::{BRANCH_KEY_PURPOSE, CONTEXT_BRANCH_KEY_ID, CONTEXT_CUSTOMER_ID, CONTEXT_PURPOSE};
use serde_yaml::Value;
use std::collections::BTreeSet;

const TEMPLATE: &str = include_str!("../../../template.yaml");

fn template() -> Value {
    serde_yaml::from_str(TEMPLATE).expect("template.yaml parses")
}

/// `!Ref X` / `!GetAtt X.Arn` as the logical id `X`; a plain string as itself.
fn reference(value: &Value) -> String {
    match value {
        Value::Tagged(tagged) => match (tagged.tag.to_string().as_str(), &tagged.value) {
            ("!Ref", Value::String(name)) => name.clone(),
            ("!GetAtt", Value::String(attribute)) => attribute.split('.').next().unwrap_or_default().to_string(),
            (tag, other) => format!("{tag} {other:?}"),
        },
        Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Sequence(items)) => items.iter().map(reference).collect(),
        Some(one) => vec![reference(one)],
        None => vec![],
    }
}

/// A function of the template: its logical id, its environment variables
/// (name, value) and its policies' statements.
type Function = (String, Vec<(String, Value)>, Vec<Value>);

/// Every function of the template.
fn functions(template: &Value) -> Vec<Function> {
    let resources = template["Resources"].as_mapping().expect("Resources");
    let mut out = Vec::new();
    for (name, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let properties = &resource["Properties"];
        let variables = properties["Environment"]["Variables"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let statements = properties["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|policy| policy["Statement"].as_sequence())
            .flatten()
            .cloned()
            .collect();
        out.push((name.as_str().unwrap_or_default().to_string(), variables, statements));
    }
    assert!(out.len() >= 6, "the template's functions: {}", out.len());
    out
}

fn condition<'a>(statement: &'a Value, operator: &str, key: &str) -> Option<&'a Value> {
    statement["Condition"].get(operator).and_then(|c| c.get(key))
}

fn context_keys(statement: &Value) -> BTreeSet<String> {
    strings(condition(
        statement,
        "ForAllValues:StringEquals",
        "kms:EncryptionContextKeys",
    ))
    .into_iter()
    .collect()
}

fn requires_present(statement: &Value, key: &str) -> bool {
    condition(statement, "Null", &format!("kms:EncryptionContext:{key}")).and_then(Value::as_str) == Some("false")
}

/// A KMS statement allows only the branch key's context
/// (`{purpose: crm-branch-key, branch_key_id}`).
fn branch_key_context_only(statement: &Value) -> bool {
    let purpose = condition(
        statement,
        "StringEquals",
        &format!("kms:EncryptionContext:{CONTEXT_PURPOSE}"),
    );
    purpose.and_then(Value::as_str) == Some(BRANCH_KEY_PURPOSE)
        && requires_present(statement, CONTEXT_BRANCH_KEY_ID)
        && context_keys(statement) == BTreeSet::from([CONTEXT_PURPOSE.to_string(), CONTEXT_BRANCH_KEY_ID.to_string()])
}

/// A KMS statement allows only the per-customer context of keys written
/// before decision 0044 (`{customer_id}`).
fn customer_context_only(statement: &Value) -> bool {
    requires_present(statement, CONTEXT_CUSTOMER_ID)
        && context_keys(statement) == BTreeSet::from([CONTEXT_CUSTOMER_ID.to_string()])
}

#[test]
fn kms_on_the_data_keys_key_only_under_the_key_stores_encryption_contexts() {
    let template = template();
    let mut checked = 0;
    for (function, _, statements) in functions(&template) {
        let kms: Vec<&Value> = statements
            .iter()
            .filter(|s| strings(s.get("Action")).iter().any(|a| a.starts_with("kms:")))
            .collect();
        for statement in &kms {
            let actions = strings(statement.get("Action"));
            let sid = statement["Sid"].as_str().unwrap_or("(no Sid)");
            assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{function} {sid}");
            assert_eq!(
                strings(statement.get("Resource")),
                vec!["DataKeysKey".to_string()],
                "{function} {sid}"
            );
            assert!(
                actions.iter().all(|a| a == "kms:GenerateDataKey" || a == "kms:Decrypt"),
                "{function} {sid}: {actions:?}"
            );
            if actions.iter().any(|a| a == "kms:GenerateDataKey") {
                // Only the branch key is made with KMS (decision 0044).
                assert!(branch_key_context_only(statement), "{function} {sid}: {statement:?}");
            } else {
                assert!(
                    branch_key_context_only(statement) || customer_context_only(statement),
                    "{function} {sid}: {statement:?}"
                );
            }
            checked += 1;
        }
        if !kms.is_empty() {
            // What the key store sends: both contexts can be decrypted, the branch key's made.
            assert!(
                kms.iter().any(|s| branch_key_context_only(s)
                    && strings(s.get("Action")).contains(&"kms:GenerateDataKey".to_string())
                    && strings(s.get("Action")).contains(&"kms:Decrypt".to_string())),
                "{function}: the branch key's GenerateDataKey and Decrypt"
            );
            assert!(
                kms.iter().any(|s| customer_context_only(s)),
                "{function}: Decrypt of keys written before decision 0044"
            );
        }
    }
    assert!(checked >= 12, "KMS statements checked: {checked}");
}

#[test]
fn secrets_are_read_by_arn_and_each_function_may_read_only_its_own() {
    let template = template();
    let secrets: BTreeSet<String> = template["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::SecretsManager::Secret"))
        .map(|(name, _)| name.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        ["UnsubscribeSecret", "IdentifierHashSecret", "IngestWriteKeysSecret"]
            .iter()
            .all(|s| secrets.contains(*s)),
        "{secrets:?}"
    );
    let mut readers = 0;
    for (function, variables, statements) in functions(&template) {
        for (name, value) in &variables {
            let text = format!("{value:?}");
            assert!(
                !text.contains("resolve:secretsmanager"),
                "{function}: {name} puts a secret's value into the environment"
            );
            assert!(
                !["UNSUBSCRIBE_SECRET", "IDENTIFIER_HASH_SECRET", "INGEST_WRITE_KEYS"].contains(&name.as_str()),
                "{function}: {name} is a secret's value"
            );
        }
        // The secrets the environment names ...
        let named: BTreeSet<String> = variables
            .iter()
            .filter(|(name, _)| name.ends_with("_SECRET_ARN"))
            .map(|(_, value)| reference(value))
            .collect();
        assert!(named.is_subset(&secrets), "{function}: {named:?}");
        // ... are exactly those it may read.
        let readable: BTreeSet<String> = statements
            .iter()
            .filter(|s| {
                strings(s.get("Action"))
                    .iter()
                    .any(|a| a.starts_with("secretsmanager:"))
            })
            .flat_map(|s| {
                assert_eq!(
                    strings(s.get("Action")),
                    vec!["secretsmanager:GetSecretValue".to_string()],
                    "{function}"
                );
                strings(s.get("Resource"))
            })
            .collect();
        assert_eq!(
            readable, named,
            "{function}: GetSecretValue on exactly the secrets it names"
        );
        readers += usize::from(!named.is_empty());
    }
    assert_eq!(
        readers, 4,
        "the api, projector, consent and channel functions read secrets"
    );
}
