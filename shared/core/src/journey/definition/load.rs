//! The validating loader of campaign definitions: every problem reported
//! with its path, beyond what the JSON Schema can check.

use super::*;
use crate::consent::Purpose;
use crate::journey::condition::{parse_path, Condition, Root};
use crate::journey::duration::{Duration, LocalTime};
use crate::journey::templates;
use crate::pattern::EventPattern;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};

fn join(prefix: &str, inner: &str) -> String {
    if inner.is_empty() || inner == "." {
        prefix.to_string()
    } else if prefix.is_empty() {
        inner.to_string()
    } else if inner.starts_with('[') {
        format!("{prefix}{inner}")
    } else {
        format!("{prefix}.{inner}")
    }
}

/// Whether one path is the other or lies inside it.
fn overlaps(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| {
        inner == outer
            || (inner.starts_with(outer) && matches!(inner.as_bytes().get(outer.len()), Some(b'.') | Some(b'[')))
    };
    inside(a, b) || inside(b, a)
}

fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text.split('-').all(|part| !part.is_empty())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_step_id(text: &str) -> bool {
    text.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_event_type(text: &str) -> bool {
    text.as_bytes().first().is_some_and(u8::is_ascii_uppercase) && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[derive(Default)]
pub(super) struct Loader {
    pub(super) errors: Vec<DefinitionError>,
    /// Paths already reported by the detailed checks, so that serde does not
    /// report them again.
    reported: Vec<String>,
    /// Duplicate or reserved step ids: the graph cannot be checked.
    ids_broken: bool,
    /// The template ids a send may name (decision 0077).
    pub(super) templates: templates::KnownTemplates,
}

impl Loader {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        self.reported.push(path.clone());
        self.errors.push(DefinitionError::new(path, message));
    }

    fn de<T: DeserializeOwned>(&mut self, value: &Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let full = join(path, &e.path().to_string());
                if !self.reported.iter().any(|r| overlaps(r, &full)) {
                    self.errors.push(DefinitionError::new(full, e.inner().to_string()));
                }
                None
            }
        }
    }

    // Checks of leaves that serde would stop at, run first on the raw
    // document so that each is reported with its precise path.

    fn check_pattern(&mut self, raw: &Value, path: &str) {
        let Some(value) = raw.get("pattern") else { return };
        let path = format!("{path}.pattern");
        match EventPattern::from_value(value) {
            Err(e) => {
                let inner = e.path().trim_start_matches('$').trim_start_matches('.');
                self.error(join(&path, inner), e.to_string());
            }
            Ok(pattern) => self.check_sources(&pattern, &path),
        }
    }

    /// A pattern naming event types and sources that never go together
    /// would never match.
    fn check_sources(&mut self, pattern: &EventPattern, path: &str) {
        let strings = |key: &str| -> Option<Vec<String>> {
            let items = pattern.as_value().get(key)?.as_array()?;
            items.iter().map(|v| v.as_str().map(str::to_string)).collect()
        };
        let (Some(sources), Some(types)) = (strings("source"), strings("detail-type")) else {
            return;
        };
        for event_type in types {
            let source = crate::bus::source_for(&event_type);
            if !sources.iter().any(|s| s == source) {
                self.error(
                    format!("{path}.source"),
                    format!(
                        "{event_type} events are published with source \"{source}\", which the pattern does not allow"
                    ),
                );
            }
        }
    }

    fn check_duration(&mut self, raw: &Value, key: &str, path: &str) {
        if let Some(Value::String(text)) = raw.get(key) {
            if let Err(e) = text.parse::<Duration>() {
                self.error(format!("{path}.{key}"), e.to_string());
            }
        }
    }

    fn check_raw_conditions(&mut self, raw: &Value, path: &str) {
        if let Some(Value::Array(conditions)) = raw.get("conditions") {
            for (i, condition) in conditions.iter().enumerate() {
                let path = format!("{path}.conditions[{i}]");
                if let Some(condition) = self.de::<Condition>(condition, &path) {
                    for (field, message) in condition.problems() {
                        self.error(format!("{path}.{field}"), message);
                    }
                }
                // Reported once, here, whatever else fails around it.
                self.reported.push(path);
            }
        }
    }

    /// A rule's `same` (decision 0073 addendum): a path into the event, as
    /// the trigger and the matched event are both events.
    fn check_raw_same(&mut self, rule: &Value, path: &str) {
        if let Some(Value::String(same)) = rule.get("same") {
            match parse_path(same) {
                Ok((Root::Event, _)) => {}
                Ok((Root::Profile | Root::Segments, _)) => self.error(
                    format!("{path}.same"),
                    "must be a path into the event (event.…), compared with the trigger's",
                ),
                Err(message) => self.error(format!("{path}.same"), message),
            }
        }
    }

    fn check_raw_entry(&mut self, raw: &Value) {
        if let Some(Value::String(segment)) = raw.pointer("/entry/segment") {
            if !is_slug(segment) {
                self.error("entry.segment", format!("\"{segment}\" is not a slug"));
            }
        }
        if let Some(Value::String(key)) = raw.pointer("/entry/dedupe_key") {
            match parse_path(key) {
                Ok((Root::Event, _)) => {}
                Ok((Root::Profile | Root::Segments, _)) => {
                    self.error("entry.dedupe_key", "must be a path into the trigger event (event.…)")
                }
                Err(message) => self.error("entry.dedupe_key", message),
            }
        }
        if let Some(browsed) = raw.pointer("/entry/browsed") {
            self.check_duration(browsed, "within", "entry.browsed");
            if let Some(min) = browsed.get("min_distinct_products") {
                let ok = min
                    .as_u64()
                    .is_some_and(|n| (1..=u64::from(super::MAX_DISTINCT_PRODUCTS)).contains(&n));
                if !ok {
                    self.error(
                        "entry.browsed.min_distinct_products",
                        format!("must be a whole number from 1 to {}", super::MAX_DISTINCT_PRODUCTS),
                    );
                }
            }
        }
    }

    /// A send's `discount` (decision 0074): `percent` a whole number from 1
    /// to 100, `valid_for` a positive duration.
    fn check_raw_discount(&mut self, raw: &Value, path: &str) {
        self.check_duration(raw, "valid_for", path);
        if let Some(percent) = raw.get("percent") {
            if !percent.as_u64().is_some_and(|p| (1..=100).contains(&p)) {
                self.error(format!("{path}.percent"), "must be a whole number from 1 to 100");
            }
        }
    }

    fn check_raw_ids(&mut self, steps: &[Value]) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            let Some(Value::String(id)) = step.get("id") else {
                continue;
            };
            let path = format!("steps[{i}].id");
            if id == END {
                self.error(
                    path,
                    format!("\"{END}\" is reserved: it is the target that ends the journey"),
                );
                self.ids_broken = true;
            } else if let Some(first) = seen.insert(id, i) {
                self.error(path, format!("duplicate step id \"{id}\" (also steps[{first}])"));
                self.ids_broken = true;
            } else if !is_step_id(id) {
                self.error(
                    path,
                    format!("\"{id}\" is not a step id (a lowercase letter, then lowercase letters, digits, - or _)"),
                );
            }
        }
    }

    fn check_raw(&mut self, raw: &Value) {
        if let Some(trigger) = raw.get("trigger") {
            self.check_pattern(trigger, "trigger");
            self.check_raw_conditions(trigger, "trigger");
        }
        for key in ["exit_on", "goals"] {
            if let Some(Value::Array(rules)) = raw.get(key) {
                for (i, rule) in rules.iter().enumerate() {
                    self.check_pattern(rule, &format!("{key}[{i}]"));
                    self.check_raw_conditions(rule, &format!("{key}[{i}]"));
                    self.check_raw_same(rule, &format!("{key}[{i}]"));
                }
            }
        }
        self.check_raw_entry(raw);
        if let Some(holdout) = raw.get("holdout") {
            if let Some(percent) = holdout.get("percent") {
                let max = u64::from(super::MAX_HOLDOUT_PERCENT);
                if !percent.as_u64().is_some_and(|p| (1..=max).contains(&p)) {
                    self.error("holdout.percent", format!("must be a whole number from 1 to {max}"));
                }
            }
        }
        if let Some(Value::Object(policy)) = raw.pointer("/entry/reentry") {
            if let Some(window) = policy.get("once_per_window") {
                self.check_duration(window, "window", "entry.reentry.once_per_window");
            }
        }
        if let Some(Value::Array(steps)) = raw.get("steps") {
            for (i, step) in steps.iter().enumerate() {
                let path = format!("steps[{i}]");
                self.check_pattern(step, &path);
                self.check_raw_conditions(step, &path);
                self.check_duration(step, "duration", &path);
                self.check_duration(step, "timeout", &path);
                if let Some(Value::Array(variants)) = step.get("variants") {
                    for (j, variant) in variants.iter().enumerate() {
                        if let Some(weight) = variant.get("weight") {
                            let max = u64::from(super::MAX_VARIANT_WEIGHT);
                            if !weight.as_u64().is_some_and(|w| (1..=max).contains(&w)) {
                                self.error(
                                    format!("{path}.variants[{j}].weight"),
                                    format!("must be a whole number from 1 to {max}"),
                                );
                            }
                        }
                    }
                }
                if let Some(discount) = step.get("discount") {
                    self.check_raw_discount(discount, &format!("{path}.discount"));
                }
                if let Some(Value::String(text)) = step.get("until_local_time") {
                    if let Err(e) = text.parse::<LocalTime>() {
                        self.error(format!("{path}.until_local_time"), e.to_string());
                    }
                }
            }
            self.check_raw_ids(steps);
        }
    }

    fn de_step(&mut self, raw: &Value, path: &str) -> Option<Step> {
        let Value::Object(map) = raw else {
            self.error(path, "a step must be a mapping");
            return None;
        };
        let Some(Value::String(kind)) = map.get("type") else {
            self.error(
                format!("{path}.type"),
                format!("missing step type: one of {}", STEP_TYPES.join(", ")),
            );
            return None;
        };
        let mut fields = map.clone();
        fields.remove("type");
        let fields = Value::Object(fields);
        Some(match kind.as_str() {
            "wait" => Step::Wait(self.de(&fields, path)?),
            "wait_until" => Step::WaitUntil(self.de(&fields, path)?),
            "branch" => Step::Branch(self.de(&fields, path)?),
            "send" => Step::Send(self.de(&fields, path)?),
            "update_segment" => Step::UpdateSegment(self.de(&fields, path)?),
            "emit" => Step::Emit(self.de(&fields, path)?),
            "exit" => Step::Exit(self.de(&fields, path)?),
            "split" => Step::Split(self.de(&fields, path)?),
            other => {
                self.error(
                    format!("{path}.type"),
                    format!("unknown step type \"{other}\": one of {}", STEP_TYPES.join(", ")),
                );
                return None;
            }
        })
    }

    fn de_list<T: DeserializeOwned>(&mut self, raw: &Value, key: &str) -> Option<Vec<T>> {
        match raw.get(key) {
            None => Some(Vec::new()),
            Some(Value::Array(items)) => {
                let parsed: Vec<Option<T>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.de(item, &format!("{key}[{i}]")))
                    .collect();
                parsed.into_iter().collect()
            }
            Some(_) => {
                self.error(key, "expected a list");
                None
            }
        }
    }

    pub(super) fn load(&mut self, raw: &Value) -> Option<Campaign> {
        let Value::Object(map) = raw else {
            self.error("", "a campaign must be a mapping");
            return None;
        };
        self.check_raw(raw);

        const FIELDS: [&str; 11] = [
            "id",
            "name",
            "description",
            "kind",
            "starts_paused",
            "trigger",
            "entry",
            "exit_on",
            "goals",
            "steps",
            "holdout",
        ];
        for key in map.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
            self.error(
                key.clone(),
                format!("unknown field `{key}`, expected one of {}", FIELDS.join(", ")),
            );
        }
        let required = |loader: &mut Loader, key: &str| {
            let value = map.get(key);
            if value.is_none() {
                loader.error(key, format!("missing field `{key}`"));
            }
            value
        };
        let id: Option<String> = required(self, "id").and_then(|v| self.de(v, "id"));
        let name: Option<String> = required(self, "name").and_then(|v| self.de(v, "name"));
        let description: Option<Option<String>> = match map.get("description") {
            None => Some(None),
            Some(v) => self.de(v, "description"),
        };
        let kind: Option<MarketingKind> = match map.get("kind") {
            None => Some(MarketingKind::default()),
            Some(v) => self.de(v, "kind"),
        };
        let trigger: Option<Trigger> = required(self, "trigger").and_then(|v| self.de(v, "trigger"));
        let entry: Option<EntryRules> = match map.get("entry") {
            None => Some(EntryRules::default()),
            Some(v) => self.de(v, "entry"),
        };
        let starts_paused: Option<bool> = match map.get("starts_paused") {
            None => Some(false),
            Some(v) => self.de(v, "starts_paused"),
        };
        let holdout: Option<Option<Holdout>> = match map.get("holdout") {
            None => Some(None),
            Some(v) => self.de(v, "holdout"),
        };
        let exit_on: Option<Vec<EventRule>> = self.de_list(raw, "exit_on");
        let goals: Option<Vec<EventRule>> = self.de_list(raw, "goals");

        let raw_steps: &[Value] = match required(self, "steps") {
            Some(Value::Array(items)) if items.is_empty() => {
                self.error("steps", "a campaign needs at least one step");
                &[]
            }
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.error("steps", "expected a list of steps");
                &[]
            }
            None => &[],
        };
        let steps: Vec<Option<Step>> = raw_steps
            .iter()
            .enumerate()
            .map(|(i, s)| self.de_step(s, &format!("steps[{i}]")))
            .collect();
        // Ids as written, so that a step that failed to load does not make
        // every reference to it an error too.
        let raw_ids: HashSet<&str> = raw_steps.iter().filter_map(|s| s.get("id")?.as_str()).collect();

        if let Some(id) = &id {
            if !is_slug(id) {
                self.error(
                    "id",
                    format!("\"{id}\" is not a slug (lowercase letters, digits, single dashes)"),
                );
            }
        }
        if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            self.error("name", "must not be empty");
        }
        for (key, rules) in [("exit_on", &exit_on), ("goals", &goals)] {
            for (i, rule) in rules.iter().flatten().enumerate() {
                if rule.name.trim().is_empty() {
                    self.error(format!("{key}[{i}].name"), "must not be empty");
                }
            }
        }
        let graph_ok = self.check_steps(&steps, &raw_ids, entry.as_ref());

        let campaign = Campaign {
            id: id?,
            name: name?,
            description: description?,
            kind: kind?,
            trigger: trigger?,
            entry: entry?,
            exit_on: exit_on?,
            goals: goals?,
            steps: steps.into_iter().collect::<Option<Vec<_>>>()?,
            holdout: holdout?,
            starts_paused: starts_paused?,
        };
        if graph_ok {
            self.check_graph(&campaign.steps);
        }
        Some(campaign)
    }

    /// Checks each step on its own and the targets it names. Returns whether
    /// the step graph is complete enough to check as a whole.
    fn check_steps(&mut self, steps: &[Option<Step>], raw_ids: &HashSet<&str>, entry: Option<&EntryRules>) -> bool {
        let mut graph_ok = !self.ids_broken && steps.iter().all(Option::is_some);
        let mut experiments: HashMap<&str, usize> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            let Some(step) = step else { continue };
            let path = format!("steps[{i}]");
            for (field, target) in step.named_targets() {
                if target != END && !raw_ids.contains(target) {
                    self.error(format!("{path}.{field}"), format!("unknown step \"{target}\""));
                    graph_ok = false;
                }
            }
            match step {
                Step::Wait(wait) => {
                    if wait.duration.is_some() == wait.until_local_time.is_some() {
                        self.error(path, "a wait needs exactly one of duration and until_local_time");
                    }
                }
                Step::Branch(branch) => {
                    if branch.conditions.is_empty() {
                        self.error(format!("{path}.conditions"), "a branch needs at least one condition");
                    }
                }
                Step::Send(send) => self.check_send(send, &path, entry),
                Step::UpdateSegment(update) => {
                    if !is_slug(&update.segment) {
                        self.error(
                            format!("{path}.segment"),
                            format!("\"{}\" is not a slug", update.segment),
                        );
                    } else if crate::segments::is_computed(&update.segment) {
                        // The step would do nothing at run time: computed
                        // segments follow their rule, not campaigns.
                        self.error(
                            format!("{path}.segment"),
                            format!(
                                "\"{}\" is a computed segment; campaigns can only add to and remove from manual ones",
                                update.segment
                            ),
                        );
                    }
                }
                Step::Emit(emit) => {
                    if !is_event_type(&emit.event_type) {
                        self.error(
                            format!("{path}.event_type"),
                            format!(
                                "\"{}\" is not an event type (PascalCase letters and digits)",
                                emit.event_type
                            ),
                        );
                    }
                    if !emit.data.is_object() {
                        self.error(format!("{path}.data"), "must be a mapping");
                    }
                }
                Step::Split(split) => {
                    if !self.check_split(split, &path, raw_ids) {
                        graph_ok = false;
                    }
                    if let Some(first) = experiments.insert(split.experiment.as_str(), i) {
                        self.error(
                            format!("{path}.experiment"),
                            format!(
                                "experiment \"{}\" is also steps[{first}]'s: each split runs its own",
                                split.experiment
                            ),
                        );
                    }
                }
                Step::WaitUntil(_) | Step::Exit(_) => {}
            }
        }
        graph_ok
    }

    /// A split (decision 0081): an experiment id, at least two variants
    /// with distinct ids, each going to a known step. Returns whether its
    /// targets are known.
    fn check_split(&mut self, split: &SplitStep, path: &str, raw_ids: &HashSet<&str>) -> bool {
        if !is_slug(&split.experiment) {
            self.error(
                format!("{path}.experiment"),
                format!("\"{}\" is not a slug", split.experiment),
            );
        } else if split.experiment == crate::journey::experiment::HOLDOUT {
            self.error(
                format!("{path}.experiment"),
                "\"holdout\" is reserved: it is the campaign's holdout",
            );
        }
        if split.variants.len() < 2 {
            self.error(format!("{path}.variants"), "a split needs at least two variants");
        }
        let mut targets_ok = true;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (j, variant) in split.variants.iter().enumerate() {
            let at = format!("{path}.variants[{j}]");
            if !is_step_id(&variant.id) {
                self.error(
                    format!("{at}.id"),
                    format!(
                        "\"{}\" is not a variant id (a lowercase letter, then lowercase letters, digits, - or _)",
                        variant.id
                    ),
                );
            } else if let Some(first) = seen.insert(variant.id.as_str(), j) {
                self.error(
                    format!("{at}.id"),
                    format!("duplicate variant id \"{}\" (also variants[{first}])", variant.id),
                );
            }
            if variant.next != END && !raw_ids.contains(variant.next.as_str()) {
                self.error(format!("{at}.next"), format!("unknown step \"{}\"", variant.next));
                targets_ok = false;
            }
        }
        targets_ok
    }

    fn check_send(&mut self, send: &SendStep, path: &str, entry: Option<&EntryRules>) {
        if !self.templates.contains(&send.template) {
            self.error(
                format!("{path}.template"),
                format!("unknown template \"{}\"", send.template),
            );
        }
        if send.category == Category::Marketing {
            match send.purpose {
                Some(Purpose::Marketing) => {}
                Some(other) => {
                    self.error(
                        format!("{path}.purpose"),
                        format!("a marketing send cannot use purpose \"{other}\""),
                    );
                }
                None => {
                    let entry_covers = entry
                        .and_then(|e| e.consent)
                        .is_some_and(|c| c.purpose == Purpose::Marketing && send.channel.fixed() == Some(c.channel));
                    if !entry_covers {
                        let on = match send.channel.fixed() {
                            Some(channel) => format!(", or require marketing consent for {channel} in entry.consent"),
                            None => String::new(),
                        };
                        self.error(
                            format!("{path}.purpose"),
                            format!("a marketing send needs consent: set `purpose: marketing` on the step{on}"),
                        );
                    }
                }
            }
        }
        self.check_channels(send, path);
    }

    /// `fallback` and `templates` go with `channel: preferred` only, and
    /// name each channel once (decision 0076).
    fn check_channels(&mut self, send: &SendStep, path: &str) {
        if send.channel.fixed().is_some() {
            for (key, used) in [
                ("fallback", !send.fallback.is_empty()),
                ("templates", !send.templates.is_empty()),
            ] {
                if used {
                    self.error(format!("{path}.{key}"), "only a send with `channel: preferred` has one");
                }
            }
            return;
        }
        if send.fallback.is_empty() {
            self.error(
                format!("{path}.fallback"),
                "`channel: preferred` needs the channels it may take, in order (e.g. [email, sms])",
            );
        }
        for (i, channel) in send.fallback.iter().enumerate() {
            if send.fallback[..i].contains(channel) {
                self.error(format!("{path}.fallback[{i}]"), format!("{channel} is listed twice"));
            }
        }
        for (channel, template) in &send.templates {
            if !send.fallback.contains(channel) {
                self.error(
                    format!("{path}.templates.{channel}"),
                    format!("{channel} is not in the step's fallback list"),
                );
            } else if !self.templates.contains(template) {
                self.error(
                    format!("{path}.templates.{channel}"),
                    format!("unknown template \"{template}\""),
                );
            }
        }
    }

    /// Reachability from the first step, and loops that never wait.
    fn check_graph(&mut self, steps: &[Step]) {
        let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id(), i)).collect();
        let successors: Vec<Vec<usize>> = steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let mut out = Vec::new();
                let follow = |target: Option<&str>| match target {
                    Some(END) => None,
                    Some(t) => index.get(t).copied(),
                    None => (i + 1 < steps.len()).then_some(i + 1),
                };
                match step {
                    Step::Exit(_) => {}
                    Step::Split(s) => out.extend(s.variants.iter().filter_map(|v| follow(Some(&v.next)))),
                    Step::Branch(b) => out.extend(
                        [follow(Some(&b.then)), follow(Some(&b.otherwise))]
                            .into_iter()
                            .flatten(),
                    ),
                    Step::WaitUntil(w) => out.extend(
                        [follow(w.next.as_deref()), follow(Some(&w.on_timeout))]
                            .into_iter()
                            .flatten(),
                    ),
                    _ => out.extend(follow(step.next())),
                }
                out
            })
            .collect();

        let mut reached = vec![false; steps.len()];
        let mut stack = vec![0];
        while let Some(i) = stack.pop() {
            if i < steps.len() && !reached[i] {
                reached[i] = true;
                stack.extend(&successors[i]);
            }
        }
        for (i, step) in steps.iter().enumerate().filter(|(i, _)| !reached[*i]) {
            self.error(
                format!("steps[{i}]"),
                format!("step \"{}\" is never reached", step.id()),
            );
        }

        // Loops among steps that do not wait would run forever.
        let n = steps.len();
        let mut reach = vec![vec![false; n]; n];
        for (i, row) in reach.iter_mut().enumerate() {
            if steps[i].waits() {
                continue;
            }
            let mut stack: Vec<usize> = successors[i].clone();
            while let Some(j) = stack.pop() {
                if !steps[j].waits() && !row[j] {
                    row[j] = true;
                    stack.extend(&successors[j]);
                }
            }
        }
        let mut in_reported_loop = vec![false; n];
        for i in 0..n {
            if !reach[i][i] || in_reported_loop[i] {
                continue;
            }
            let members: BTreeSet<usize> = (0..n).filter(|&j| reach[i][j] && reach[j][i]).collect();
            for &j in &members {
                in_reported_loop[j] = true;
            }
            let ids: Vec<String> = members.iter().map(|&j| format!("\"{}\"", steps[j].id())).collect();
            self.error(
                format!("steps[{i}]"),
                format!(
                    "steps {} form a loop without a wait step: it would never stop",
                    ids.join(", ")
                ),
            );
        }
    }
}
