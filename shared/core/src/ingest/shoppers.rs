//! The messages of a batch, grouped by the shopper they are about, so that
//! a batch's shoppers can be taken side by side while each shopper's
//! messages keep their order (a product added before the identify that
//! merges the cart's anonymous profile must stay before it).

use serde_json::Value;
use std::collections::HashMap;

/// The ids that name a shopper in a raw message (as text: numbers written
/// out): its `userId` and `anonymousId`, and an alias's `previousId`, which
/// may be either.
fn shopper_ids(message: &Value) -> Vec<String> {
    let text = |field: &str| match message.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut ids = Vec::new();
    ids.extend(text("userId").map(|id| format!("user:{id}")));
    ids.extend(text("anonymousId").map(|id| format!("anonymous:{id}")));
    if let Some(previous) = text("previousId") {
        ids.push(format!("user:{previous}"));
        ids.push(format!("anonymous:{previous}"));
    }
    ids
}

/// The indexes of `messages`, grouped so that messages sharing any shopper id
/// (directly, or through a message that names two of them, as an identify
/// with both ids does) are in one group, in their order in the batch.
/// Groups come in the order of their first message; a message naming no
/// shopper is a group of its own.
pub fn shopper_groups(messages: &[Value]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..messages.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_with: HashMap<String, usize> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        for id in shopper_ids(message) {
            match first_with.get(&id) {
                Some(&other) => {
                    let (a, b) = (root(&mut parent, index), root(&mut parent, other));
                    if a != b {
                        // The earlier message's root stays the root.
                        parent[a.max(b)] = a.min(b);
                    }
                }
                None => {
                    first_with.insert(id, index);
                }
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of_root: HashMap<usize, usize> = HashMap::new();
    for index in 0..messages.len() {
        let r = root(&mut parent, index);
        let group = *group_of_root.entry(r).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(index);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_of_one_shopper_stay_together_and_in_order() {
        let messages = vec![
            json!({ "anonymousId": "a1", "type": "page" }),
            json!({ "anonymousId": "a2", "type": "page" }),
            json!({ "userId": "u1", "type": "track" }),
            // Joins a1 and u1 (and so messages 0 and 2).
            json!({ "userId": "u1", "anonymousId": "a1", "type": "identify" }),
            json!({ "type": "track" }),
            json!({ "userId": 42, "type": "track" }),
            json!({ "anonymousId": "a2", "type": "track" }),
            // An alias joins user 42 with anonymous a3 (named later).
            json!({ "userId": "42", "previousId": "a3", "type": "alias" }),
            json!({ "anonymousId": "a3", "type": "track" }),
        ];
        assert_eq!(
            shopper_groups(&messages),
            vec![vec![0, 2, 3], vec![1, 6], vec![4], vec![5, 7, 8]]
        );
    }

    #[test]
    fn a_batch_of_strangers_is_one_group_each() {
        let messages: Vec<Value> = (0..5).map(|i| json!({ "anonymousId": format!("a{i}") })).collect();
        assert_eq!(shopper_groups(&messages).len(), 5);
        assert!(shopper_groups(&[]).is_empty());
    }
}
