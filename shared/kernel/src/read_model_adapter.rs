//! What every adapter of [`ReadModelStore`](crate::ports::ReadModelStore)
//! does the same way, in one place (pure, no I/O):
//!
//! - [`single_commit`]: `commit` as a batch of one, for the adapters whose
//!   real write is `commit_all` (SQLite's one transaction, DynamoDB's
//!   chunks, the bench's metered store);
//! - [`check_commit_sizes`]: every commit of a batch within
//!   [`MAX_OPS_PER_COMMIT`](crate::ports::MAX_OPS_PER_COMMIT), before any is
//!   written;
//! - [`ListStart`] and [`listed`]: which sort keys `list(prefix, after)`
//!   returns, and where a store walking its keys in order starts.

use crate::ports::{check_commit_size, Commit, CommitError, ReadOp};

/// `commit(consumer, stream_id, expected, new, ops)` as the batch of one
/// commit that `commit_all` takes (no idempotent operations).
pub fn single_commit(consumer: &str, stream_id: &str, expected: u64, new: u64, ops: Vec<ReadOp>) -> Vec<Commit> {
    vec![Commit {
        consumer: consumer.to_string(),
        stream_id: stream_id.to_string(),
        expected,
        new,
        ops,
        idempotent: Vec::new(),
    }]
}

/// Refuses a batch one of whose commits holds more operations (its
/// idempotent ones included) than one commit may.
pub fn check_commit_sizes(commits: &[Commit]) -> Result<(), CommitError> {
    for c in commits {
        check_commit_size(&c.all_ops().cloned().collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Where a `list(prefix, after)` starts in a partition's sort keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStart<'a> {
    /// At the first key starting with the prefix (the empty prefix: the
    /// partition's first key).
    Prefix(&'a str),
    /// Just past this key: `after` is at or past the prefix, so the keys
    /// after it that start with the prefix are one contiguous run from it.
    After(&'a str),
}

impl<'a> ListStart<'a> {
    /// The start of `list(prefix, after)`. An `after` before the prefix's
    /// keys (or empty: sort keys never are) bounds nothing the prefix does
    /// not.
    pub fn of(prefix: &'a str, after: Option<&'a str>) -> Self {
        match after {
            Some(after) if !after.is_empty() && after >= prefix => ListStart::After(after),
            _ => ListStart::Prefix(prefix),
        }
    }
}

/// Whether `list(prefix, after)` returns the sort key `sort`: it starts with
/// `prefix` and comes after `after` (exclusive). The keys returned are one
/// contiguous run in sort order: a store walking keys in order from
/// [`ListStart::of`] stops at the first key without the prefix.
pub fn listed(sort: &str, prefix: &str, after: Option<&str>) -> bool {
    sort.starts_with(prefix) && after.is_none_or(|a| sort > a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_is_the_later_of_the_prefix_and_after() {
        assert_eq!(ListStart::of("touch#", None), ListStart::Prefix("touch#"));
        assert_eq!(ListStart::of("touch#", Some("")), ListStart::Prefix("touch#"));
        assert_eq!(ListStart::of("touch#", Some("order")), ListStart::Prefix("touch#"));
        assert_eq!(ListStart::of("touch#", Some("touch#2")), ListStart::After("touch#2"));
        assert_eq!(ListStart::of("", Some("a")), ListStart::After("a"));
        assert_eq!(ListStart::of("", None), ListStart::Prefix(""));
    }

    #[test]
    fn listed_keys_start_with_the_prefix_and_come_after_after() {
        assert!(listed("touch#1", "touch#", None));
        assert!(!listed("order", "touch#", None));
        assert!(listed("touch#2", "touch#", Some("touch#1")));
        assert!(!listed("touch#1", "touch#", Some("touch#1")));
        assert!(listed("touch#1", "touch#", Some("a")));
        assert!(listed("anything", "", None));
    }

    #[test]
    fn one_commit_is_a_batch_of_one_and_sizes_are_checked_per_commit() {
        let put = |n: usize| ReadOp::Put {
            partition: "p".into(),
            sort: format!("s{n}"),
            body: serde_json::json!(n),
        };
        let batch = single_commit("c", "s-1", 2, 3, vec![put(1)]);
        assert_eq!(batch.len(), 1);
        assert_eq!(
            (
                batch[0].consumer.as_str(),
                batch[0].stream_id.as_str(),
                batch[0].expected,
                batch[0].new
            ),
            ("c", "s-1", 2, 3)
        );
        assert!(batch[0].idempotent.is_empty());
        assert_eq!(check_commit_sizes(&batch), Ok(()));
        let max = crate::ports::MAX_OPS_PER_COMMIT;
        let mut too_large = single_commit("c", "s-1", 0, 1, (0..max).map(put).collect());
        assert_eq!(check_commit_sizes(&too_large), Ok(()));
        too_large[0].idempotent.push(put(max));
        assert!(matches!(check_commit_sizes(&too_large), Err(CommitError::TooLarge(_))));
    }
}
