//! Matching a compiled branch against an event, with array consistency.
//!
//! Field paths join keys with '.', arrays are transparent (a field inside an
//! array of objects is reached by the same path as if there were one
//! object), and a key that itself contains dots is the same as nested keys:
//! `{"a.b": 1}` and `{"a": {"b": 1}}` both have the field `a.b` — all as in
//! EventBridge.
//!
//! Array consistency (EventBridge's `rulesForJSONEvent`): the values that
//! satisfy the conditions of one branch must not come from different elements
//! of the same array. `{"items": {"sku": ["A"], "qty": [2]}}` matches only if
//! one item has both sku A and qty 2. A field required to be absent
//! (`exists: false`) is looked for only in the elements the other
//! conditions chose.
//!
//! The search follows the event tree: the conditions routed into an object
//! are split among its children (independent of each other); the conditions
//! routed into an array must all be met by one element.

use super::parse::{Atom, Branch, Presence};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy)]
struct Goal<'p> {
    atom: &'p Atom,
    presence: Presence,
}

impl Goal<'_> {
    fn field(&self) -> &str {
        &self.atom.field
    }

    fn accepts(&self, value: &Value) -> bool {
        self.atom.matchers.iter().any(|m| m.matches(value))
    }

    fn with(self, presence: Presence) -> Self {
        Goal { presence, ..self }
    }
}

/// Whether the event satisfies every condition of the branch.
pub(crate) fn branch_matches(branch: &Branch, event: &Value) -> bool {
    let goals: Vec<Goal<'_>> = branch
        .iter()
        .map(|atom| Goal {
            atom,
            presence: atom.presence,
        })
        .collect();
    match event {
        Value::Object(map) => solve_object(map, None, &goals),
        // An event that is not an object has no fields.
        _ => goals.iter().all(|g| g.presence != Presence::Required),
    }
}

/// `value` sits at the field path `path`; every goal's field is `path` or
/// below it.
fn solve(value: &Value, path: &str, goals: &[Goal<'_>]) -> bool {
    if goals.is_empty() {
        return true;
    }
    match value {
        Value::Object(map) => solve_object(map, Some(path), goals),
        Value::Array(items) => solve_array(items, path, goals),
        leaf => goals.iter().all(|g| {
            let here = g.field() == path;
            match g.presence {
                Presence::Required => here && g.accepts(leaf),
                Presence::Absent => !here,
                Presence::Optional => !here || g.accepts(leaf),
            }
        }),
    }
}

fn solve_array(items: &[Value], path: &str, goals: &[Goal<'_>]) -> bool {
    if goals.iter().any(|g| g.presence == Presence::Required) {
        // Every goal is met inside one element; the other elements are not
        // consistent with it and do not count, even for absence.
        return items.iter().any(|item| solve(item, path, goals));
    }
    // Only absent/optional goals. Either no element has any of the fields...
    let absent: Vec<Goal<'_>> = goals.iter().map(|g| g.with(Presence::Absent)).collect();
    if items.iter().all(|item| solve(item, path, &absent)) {
        return true;
    }
    // ...or an optional goal is met by a value in some element, which then
    // fixes the element for the others.
    goals.iter().enumerate().any(|(i, g)| {
        g.presence == Presence::Optional && {
            let mut pinned = goals.to_vec();
            pinned[i] = g.with(Presence::Required);
            items.iter().any(|item| solve(item, path, &pinned))
        }
    })
}

/// Where a goal can go in an object: the keys that are its next path step.
/// Usually one key; several only when keys with dots overlap nested keys.
fn candidate_keys<'m>(map: &'m Map<String, Value>, rest: &str) -> Vec<&'m str> {
    let mut keys = Vec::new();
    for (i, c) in rest.char_indices() {
        if c == '.' {
            if let Some((k, _)) = map.get_key_value(&rest[..i]) {
                keys.push(k.as_str());
            }
        }
    }
    if let Some((k, _)) = map.get_key_value(rest) {
        keys.push(k.as_str());
    }
    keys
}

/// One way to place a goal among the children of an object.
type Placement<'m, 'p> = Vec<(&'m str, Goal<'p>)>;

fn solve_object(map: &Map<String, Value>, path: Option<&str>, goals: &[Goal<'_>]) -> bool {
    let mut fixed: Placement<'_, '_> = Vec::new();
    // Goals with several possible placements: one must be chosen.
    let mut choices: Vec<Vec<Placement<'_, '_>>> = Vec::new();
    for &goal in goals {
        let rest = match path {
            None => Some(goal.field()),
            Some(p) => goal.field().strip_prefix(p).and_then(|r| r.strip_prefix('.')),
        };
        let keys = match rest {
            Some(rest) => candidate_keys(map, rest),
            // The goal names this very object, which is not a value.
            None => Vec::new(),
        };
        match (goal.presence, keys.len()) {
            (Presence::Required, 0) => return false,
            (Presence::Absent, _) | (_, 1) => fixed.extend(keys.iter().map(|k| (*k, goal))),
            (Presence::Optional, 0) => {}
            (Presence::Required, _) => {
                choices.push(keys.iter().map(|k| vec![(*k, goal)]).collect());
            }
            (Presence::Optional, _) => {
                let mut options: Vec<Placement<'_, '_>> =
                    keys.iter().map(|k| vec![(*k, goal.with(Presence::Required))]).collect();
                options.push(keys.iter().map(|k| (*k, goal.with(Presence::Absent))).collect());
                choices.push(options);
            }
        }
    }
    try_choices(map, path, &mut fixed, &choices)
}

fn try_choices<'m, 'p>(
    map: &'m Map<String, Value>,
    path: Option<&str>,
    placed: &mut Placement<'m, 'p>,
    choices: &[Vec<Placement<'m, 'p>>],
) -> bool {
    let Some((options, later)) = choices.split_first() else {
        return solve_children(map, path, placed);
    };
    options.iter().any(|option| {
        let before = placed.len();
        placed.extend(option.iter().copied());
        let ok = try_choices(map, path, placed, later);
        placed.truncate(before);
        ok
    })
}

fn solve_children(map: &Map<String, Value>, path: Option<&str>, placed: &Placement<'_, '_>) -> bool {
    let mut keys: Vec<&str> = placed.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().all(|key| {
        let Some(child) = map.get(key) else {
            return false;
        };
        let goals: Vec<Goal<'_>> = placed.iter().filter(|(k, _)| *k == key).map(|(_, g)| *g).collect();
        let child_path = match path {
            None => key.to_string(),
            Some(p) => format!("{p}.{key}"),
        };
        solve(child, &child_path, &goals)
    })
}
