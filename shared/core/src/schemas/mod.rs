//! The schema registry (decision 0022): a JSON Schema for every event type
//! and schema version, generated from the Rust types, and the schemas
//! custom (non-domain) events may register.
//!
//! [`event_schemas`] yields one [`EventSchema`] per event type and version:
//! the schema of a stored envelope of that type and version (the `detail`
//! of its bus event), its `data` typed by the payload. They are written to
//! `schemas/events/<EventType>/v<N>.json` with an `index.json`, and the
//! latest version of each type is published to the EventBridge schema
//! registry by `template.yaml`; a test keeps both current
//! (`UPDATE_SCHEMAS=1 cargo test -p crm-core schemas` rewrites them).
//!
//! The documents are JSON Schema draft 4 (what EventBridge's
//! `JSONSchemaDraft4` takes): schemars writes draft 7, [`to_draft4`] turns
//! the few draft-6/7 forms it uses (`const`, boolean schemas) into draft 4.
//! The personal fields of a type (`privacy::paths`) may also be an
//! encrypted `enc:v1:` string or `[erased]`, as stored and published.

pub mod custom;
pub mod history;

#[cfg(test)]
mod tests;

pub use custom::{
    CustomEventSchemas, CustomSchema, CustomSchemaError, CustomSchemaStream, NoSchema, SchemaCheckError, SchemaCommand,
    SchemaViolation,
};

use crate::bus::source_for;
use crate::event::{DomainEvent, EventEnvelope};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The `$schema` of every generated document.
pub const DRAFT4: &str = "http://json-schema.org/draft-04/schema#";

/// One event type at one schema version.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSchema {
    pub event_type: String,
    pub version: u32,
    /// The bus `source` the type is published with.
    pub source: &'static str,
    /// Whether this is the version written today.
    pub latest: bool,
    /// The JSON Schema (draft 4) of a stored envelope of this type and version.
    pub schema: Value,
}

impl EventSchema {
    /// Where it is kept, relative to the repository root.
    pub fn path(&self) -> String {
        format!("schemas/events/{}/v{}.json", self.event_type, self.version)
    }

    /// Its name in the EventBridge schema registry (`<source>@<detail-type>`,
    /// the form schema discovery uses).
    pub fn registry_name(&self) -> String {
        format!("{}@{}", self.source, self.event_type)
    }
}

/// The schema of the events could not be generated (a bug in the types).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event schemas: {0}")]
pub struct SchemaGenError(pub String);

fn generator() -> SchemaGenerator {
    SchemaSettings::draft07().into_generator()
}

/// A payload schema and the definitions it refers to.
struct Payload {
    event_type: String,
    version: u32,
    data: Value,
    definitions: Map<String, Value>,
}

/// The payloads of every variant of `E` at the version written today.
fn payloads_of<E: DomainEvent + JsonSchema>() -> Result<Vec<Payload>, SchemaGenError> {
    let mut g = generator();
    let root = g.root_schema_for::<E>().to_value();
    let definitions = root
        .get("definitions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let variants = root
        .get("oneOf")
        .or_else(|| root.get("anyOf"))
        .and_then(Value::as_array)
        .cloned()
        // An enum of one variant is that variant.
        .unwrap_or_else(|| vec![root.clone()]);
    let name = std::any::type_name::<E>();
    variants
        .iter()
        .map(|v| {
            let props = v
                .get("properties")
                .ok_or_else(|| SchemaGenError(format!("{name}: a variant has no properties")))?;
            let tag = props
                .get("type")
                .ok_or_else(|| SchemaGenError(format!("{name}: untagged variant")))?;
            let event_type = tag
                .get("const")
                .or_else(|| tag.get("enum").and_then(|e| e.get(0)))
                .and_then(Value::as_str)
                .ok_or_else(|| SchemaGenError(format!("{name}: a variant's type is not a constant")))?
                .to_string();
            // A unit variant stores `data` as null.
            let data = props.get("data").cloned().unwrap_or_else(|| json!({ "type": "null" }));
            Ok(Payload {
                version: E::schema_version(&event_type),
                event_type,
                data,
                definitions: definitions.clone(),
            })
        })
        .collect()
}

/// The earlier versions kept in [`history::HISTORY`].
fn past_payloads() -> Vec<Payload> {
    history::HISTORY
        .iter()
        .map(|p| {
            let mut g = generator();
            let mut root = (p.schema)(&mut g).to_value();
            let definitions = root
                .as_object_mut()
                .and_then(|o| o.remove("definitions"))
                .and_then(|d| d.as_object().cloned())
                .unwrap_or_default();
            if let Some(o) = root.as_object_mut() {
                o.remove("$schema");
                o.remove("title");
            }
            Payload {
                event_type: p.event_type.to_string(),
                version: p.version,
                data: root,
                definitions,
            }
        })
        .collect()
}

/// Every domain event enum, with the payloads of its types. A new enum of
/// events (or a new crate's) is added here.
fn current_payloads() -> Result<Vec<Payload>, SchemaGenError> {
    use crate::commerce::{CartEvent, OrderEvent};
    use crate::customer::activity::ActivityEvent;
    use crate::customer::CustomerEvent;
    use crate::journey::catalog::{CampaignEvent, CampaignIndexEvent};
    use crate::journey::instance::JourneyEvent;
    use crate::messaging::events::MessageEvent;
    use crate::retention::RetentionEvent;
    use crate::segments::SegmentEvent;
    let mut out = Vec::new();
    out.extend(payloads_of::<CustomerEvent>()?);
    out.extend(payloads_of::<ActivityEvent>()?);
    out.extend(payloads_of::<RetentionEvent>()?);
    out.extend(payloads_of::<SegmentEvent>()?);
    out.extend(payloads_of::<crate::segments::AffinityEvent>()?);
    out.extend(payloads_of::<crate::segments::definition::SegmentDefinitionEvent>()?);
    out.extend(payloads_of::<crate::segments::definition::SegmentIndexEvent>()?);
    out.extend(payloads_of::<CartEvent>()?);
    out.extend(payloads_of::<OrderEvent>()?);
    out.extend(payloads_of::<crate::commerce::discount::DiscountEvent>()?);
    out.extend(payloads_of::<CampaignEvent>()?);
    out.extend(payloads_of::<CampaignIndexEvent>()?);
    out.extend(payloads_of::<crate::journey::templates::TemplateIndexEvent>()?);
    out.extend(payloads_of::<crate::messaging::templates::TemplateEvent>()?);
    out.extend(payloads_of::<JourneyEvent>()?);
    out.extend(payloads_of::<MessageEvent>()?);
    out.extend(payloads_of::<custom::SchemaEvent>()?);
    out.extend(payloads_of::<crate::identity::IdentityEvent>()?);
    out.extend(payloads_of::<crate::broadcast::BroadcastEvent>()?);
    Ok(out)
}

/// Every `#/definitions/<name>` that `value` refers to.
fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("$ref") {
                if let Some(name) = r.strip_prefix("#/definitions/") {
                    out.insert(name.to_string());
                }
            }
            o.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The definitions `start` needs, transitively.
fn needed(start: &Value, definitions: &Map<String, Value>) -> Result<Map<String, Value>, SchemaGenError> {
    let mut todo = BTreeSet::new();
    refs(start, &mut todo);
    let mut out = Map::new();
    while let Some(name) = todo.pop_first() {
        if out.contains_key(&name) {
            continue;
        }
        let def = definitions
            .get(&name)
            .ok_or_else(|| SchemaGenError(format!("no definition {name}")))?;
        let mut more = BTreeSet::new();
        refs(def, &mut more);
        out.insert(name, def.clone());
        todo.extend(more.into_iter().filter(|n| !out.contains_key(n)));
    }
    Ok(out)
}

/// Keywords whose value is one schema, or a map or list of schemas.
const SCHEMA_KEYWORDS: &[&str] = &["items", "additionalItems", "additionalProperties", "not"];
const SCHEMA_MAPS: &[&str] = &["properties", "patternProperties", "definitions", "dependencies"];
const SCHEMA_LISTS: &[&str] = &["anyOf", "oneOf", "allOf", "items"];

/// Turns a draft-7 schema as schemars writes it into draft 4: `const` into
/// a one-value `enum`, boolean schemas into `{}` / `{"not": {}}` (except
/// `additionalProperties`/`additionalItems`, which draft 4 allows boolean).
pub fn to_draft4(schema: &Value) -> Value {
    match schema {
        Value::Bool(true) => json!({}),
        Value::Bool(false) => json!({ "not": {} }),
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                let converted = match k.as_str() {
                    "const" => {
                        out.insert("enum".to_string(), json!([v]));
                        continue;
                    }
                    "additionalProperties" | "additionalItems" if v.is_boolean() => v.clone(),
                    k if SCHEMA_LISTS.contains(&k) && v.is_array() => {
                        Value::Array(v.as_array().into_iter().flatten().map(to_draft4).collect())
                    }
                    k if SCHEMA_KEYWORDS.contains(&k) => to_draft4(v),
                    k if SCHEMA_MAPS.contains(&k) => match v {
                        Value::Object(m) => Value::Object(m.iter().map(|(n, s)| (n.clone(), to_draft4(s))).collect()),
                        other => other.clone(),
                    },
                    _ => v.clone(),
                };
                out.insert(k.clone(), converted);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// A personal field as stored and published: encrypted, or erased.
fn protected(original: Value) -> Value {
    json!({
        "anyOf": [
            original,
            {
                "type": "string",
                "pattern": "^(enc:v1:|\\[erased\\]$)",
                "description": "personal data: encrypted at rest (enc:v1:...) or [erased]"
            }
        ]
    })
}

/// Lets each personal field of `event_type` (a path into `data`) also be
/// stored encrypted or erased.
fn allow_protected(event_type: &str, data: &mut Value) {
    for path in crate::privacy::personal_data_paths(event_type) {
        let pointer: String = path
            .split('.')
            .map(|key| format!("/properties/{}", key.replace('~', "~0").replace('/', "~1")))
            .collect();
        if let Some(at) = data.pointer_mut(&pointer) {
            let original = std::mem::take(at);
            *at = protected(original);
        }
    }
}

/// The envelope schema around one payload.
fn envelope_schema(p: Payload, latest: bool) -> Result<Value, SchemaGenError> {
    let mut g = generator();
    let mut envelope = g.root_schema_for::<EventEnvelope>().to_value();
    let mut data = p.data;
    allow_protected(&p.event_type, &mut data);
    let mut definitions = p.definitions;
    if let Some(Value::Object(d)) = envelope.get("definitions") {
        definitions.extend(d.clone());
    }
    let obj = envelope
        .as_object_mut()
        .ok_or_else(|| SchemaGenError("the envelope schema is not an object".into()))?;
    let props = obj
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| SchemaGenError("the envelope schema has no properties".into()))?;
    props.insert("type".into(), json!({ "type": "string", "enum": [p.event_type] }));
    props.insert(
        "schema_version".into(),
        json!({ "type": "integer", "enum": [p.version] }),
    );
    props.insert("data".into(), data);
    obj.remove("definitions");
    obj.insert("$schema".into(), json!(DRAFT4));
    obj.insert("title".into(), json!(format!("{} v{}", p.event_type, p.version)));
    obj.insert(
        "description".into(),
        json!(format!(
            "A stored {} event at schema version {}{} (the detail of its bus event, source {}); generated from the Rust types, see docs/decisions/0022-schema-registry.md.",
            p.event_type,
            p.version,
            if latest { ", the version written today" } else { ", read upcast to the current version" },
            source_for(&p.event_type)
        )),
    );
    let used = needed(&envelope, &definitions)?;
    if !used.is_empty() {
        if let Some(o) = envelope.as_object_mut() {
            o.insert("definitions".into(), Value::Object(used));
        }
    }
    Ok(to_draft4(&envelope))
}

/// Every event type at every schema version, sorted by type then version.
pub fn event_schemas() -> Result<Vec<EventSchema>, SchemaGenError> {
    let current = current_payloads()?;
    let mut latest: BTreeMap<String, u32> = BTreeMap::new();
    for p in &current {
        if let Some(v) = latest.insert(p.event_type.clone(), p.version) {
            if v != p.version {
                return Err(SchemaGenError(format!("{} is declared twice", p.event_type)));
            }
        }
    }
    let mut by_key: BTreeMap<(String, u32), Payload> = BTreeMap::new();
    for p in current.into_iter().chain(past_payloads()) {
        let key = (p.event_type.clone(), p.version);
        if by_key.contains_key(&key) {
            return Err(SchemaGenError(format!("{} v{} is declared twice", key.0, key.1)));
        }
        by_key.insert(key, p);
    }
    by_key
        .into_iter()
        .map(|((event_type, version), p)| {
            let is_latest = latest.get(&event_type) == Some(&version);
            Ok(EventSchema {
                source: source_for(&event_type),
                schema: envelope_schema(p, is_latest)?,
                latest: is_latest,
                event_type,
                version,
            })
        })
        .collect()
}

/// `schemas/events/index.json`: every type, its source, versions and registry name.
pub fn index(schemas: &[EventSchema]) -> Value {
    let mut types: BTreeMap<&str, (&str, Vec<u32>, String)> = BTreeMap::new();
    for s in schemas {
        let entry = types
            .entry(&s.event_type)
            .or_insert_with(|| (s.source, Vec::new(), s.registry_name()));
        entry.1.push(s.version);
    }
    let events: Vec<Value> = types
        .into_iter()
        .map(|(t, (source, versions, registry_name))| {
            json!({
                "type": t,
                "source": source,
                "latest": versions.iter().max(),
                "versions": versions
                    .iter()
                    .map(|v| json!({ "version": v, "path": format!("{t}/v{v}.json") }))
                    .collect::<Vec<_>>(),
                "registry_name": registry_name,
            })
        })
        .collect();
    json!({
        "description": "Every event type and schema version (generated: UPDATE_SCHEMAS=1 cargo test -p crm-core schemas; docs/decisions/0022-schema-registry.md)",
        "events": events,
    })
}

/// The schema written today for `event_type`, if it is a domain event.
pub fn latest_schema(schemas: &[EventSchema], event_type: &str) -> Option<Value> {
    schemas
        .iter()
        .find(|s| s.latest && s.event_type == event_type)
        .map(|s| s.schema.clone())
}

/// The first line of the generated part of `template.yaml`.
pub const TEMPLATE_BEGIN: &str = "  # BEGIN GENERATED EVENT SCHEMAS";
/// The last line of the generated part of `template.yaml`.
pub const TEMPLATE_END: &str = "  # END GENERATED EVENT SCHEMAS";

/// The logical id of a type's `AWS::EventSchemas::Schema` in `template.yaml`.
pub fn template_resource_id(event_type: &str) -> String {
    let clean: String = event_type.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("EventSchema{clean}")
}

/// The part of `template.yaml` that publishes the latest schema of every
/// event type to the EventBridge schema registry (its lines, markers included).
pub fn template_block(schemas: &[EventSchema]) -> Result<String, SchemaGenError> {
    let mut out = String::new();
    out.push_str(TEMPLATE_BEGIN);
    out.push_str(
        ": do not edit; UPDATE_SCHEMAS=1 cargo test -p crm-core schemas rewrites it\n  \
         # (docs/decisions/0022-schema-registry.md): the latest schema of every event type, as in schemas/events/.\n",
    );
    out.push_str(
        "  EventSchemaRegistry:\n    Type: AWS::EventSchemas::Registry\n    Properties:\n      \
         RegistryName: !Sub \"${AWS::StackName}-events\"\n      \
         Description: Every event on the crm bus, one JSON Schema per type (schemas/events/ in the repository)\n",
    );
    for s in schemas.iter().filter(|s| s.latest) {
        let content = serde_json::to_string(&s.schema).map_err(|e| SchemaGenError(e.to_string()))?;
        let quoted = serde_json::to_string(&content).map_err(|e| SchemaGenError(e.to_string()))?;
        out.push_str(&format!(
            "  {id}:\n    Type: AWS::EventSchemas::Schema\n    Properties:\n      \
             RegistryName: !GetAtt EventSchemaRegistry.RegistryName\n      \
             SchemaName: {name}\n      Type: JSONSchemaDraft4\n      \
             Description: {t} schema version {v} ({path})\n      Content: {quoted}\n",
            id = template_resource_id(&s.event_type),
            name = s.registry_name(),
            t = s.event_type,
            v = s.version,
            path = s.path(),
        ));
    }
    out.push_str(TEMPLATE_END);
    out.push('\n');
    Ok(out)
}

/// `template` with its generated part replaced by `block` (inserted before
/// `Outputs:` when it has none yet).
pub fn replace_template_block(template: &str, block: &str) -> Result<String, SchemaGenError> {
    match (template.find(TEMPLATE_BEGIN), template.find(TEMPLATE_END)) {
        (Some(start), Some(end)) if end > start => {
            let after = template[end..].find('\n').map_or(template.len(), |n| end + n + 1);
            Ok(format!("{}{}{}", &template[..start], block, &template[after..]))
        }
        (None, None) => {
            let at = template
                .find("\nOutputs:")
                .ok_or_else(|| SchemaGenError("template.yaml has no Outputs section".into()))?;
            Ok(format!("{}\n{}{}", &template[..at], block, &template[at..]))
        }
        _ => Err(SchemaGenError(
            "template.yaml: the generated event schemas' markers are broken".into(),
        )),
    }
}
