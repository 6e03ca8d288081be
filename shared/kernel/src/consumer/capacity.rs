//! What a page's read-model writes become on a store with DynamoDB's limits
//! and prices (decision 0031), in one place for the DynamoDB adapter (which
//! sends what [`plan`] returns and meters it) and the bench's cost model
//! (which meters the same plan over an in-memory store):
//!
//! - [`plan`] cuts a page's commits into [`Chunk`]s, each one atomic write
//!   within [`MAX_ITEMS_PER_WRITE`] items and [`MAX_BYTES_PER_WRITE`] bytes:
//!   consecutive commits, each (consumer, stream) checkpoint written once
//!   per chunk (expected: the first commit's, new: the last one's), each
//!   document once, as the chunk leaves it. The checkpoints live one item
//!   per stream, holding every consumer's version (decision 0036), so a
//!   chunk writes each stream's item once, however many consumers moved on
//!   it ([`Chunk::streams`]). The items of streams some of whose commits
//!   have documents to move with them, and those documents, are one
//!   transaction; every other stream's item is a conditional update of its
//!   own.
//!   A commit's idempotent operations ([`Commit::idempotent`]) are the
//!   chunk's `loose` writes: written first, each a put (or delete) of its
//!   own, conditioned on a stamp (the stream and version that wrote it) so
//!   an older version never overwrites a newer one; they do not count
//!   against the transaction's limits.
//! - [`doc_item_bytes`], [`stream_checkpoint_item_bytes`] and
//!   [`checkpoint_item_bytes`]: the size of the adapter's items as DynamoDB
//!   counts it (attribute names and values).
//! - [`append_units`]: what an event store append costs, as the DynamoDB
//!   event store writes it (decision 0036).
//! - [`CapacityMeter`]: capacity units by DynamoDB's rounding rules. A write
//!   costs 1 write unit per KB of each item, rounded up per item, twice that
//!   inside a transaction; a read 1 read unit per 4 KB (strongly
//!   consistent), half of that eventually consistent, twice that in a
//!   transaction; a Query rounds the sum of the items it reads, a GetItem or
//!   a BatchGetItem each item; a read that finds nothing still costs the
//!   minimum.

use crate::ports::{Commit, CommitError, ReadOp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// DynamoDB's limit on the items of one `TransactWriteItems`.
pub const MAX_ITEMS_PER_WRITE: usize = 100;
/// DynamoDB's limit on the bytes of one `TransactWriteItems`.
pub const MAX_BYTES_PER_WRITE: usize = 4 * 1024 * 1024;

/// One checkpoint move of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMove {
    pub consumer: String,
    pub stream_id: String,
    /// The checkpoint the chunk's first commit of this pair expected.
    pub expected: u64,
    /// The checkpoint its last commit set.
    pub new: u64,
    /// Whether a commit of this pair in the chunk has operations that must
    /// move with the checkpoint; if not, the checkpoint is written alone.
    pub with_docs: bool,
}

/// The checkpoint item of one stream as a chunk writes it: every
/// consumer's move on the stream in the chunk, in one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMove<'c> {
    pub stream_id: &'c str,
    pub moves: Vec<&'c CheckpointMove>,
}

impl StreamMove<'_> {
    /// Whether one of the moves has documents to move with it: then the
    /// item is part of the chunk's transaction.
    pub fn with_docs(&self) -> bool {
        self.moves.iter().any(|m| m.with_docs)
    }

    /// The item's size with the versions this write sets (other consumers'
    /// versions already on the item add to it).
    pub fn item_bytes(&self) -> usize {
        stream_checkpoint_item_bytes(self.stream_id, self.moves.iter().map(|m| (m.consumer.as_str(), m.new)))
    }
}

/// One document write of a chunk: the last operation of the chunk on it.
#[derive(Debug, Clone, PartialEq)]
pub struct DocWrite {
    pub consumer: String,
    pub op: ReadOp,
}

/// One idempotent document write of a chunk, with the stream and version
/// of the commit that made it (the stamp its condition compares).
#[derive(Debug, Clone, PartialEq)]
pub struct LooseWrite {
    pub consumer: String,
    pub op: ReadOp,
    pub stream_id: String,
    pub version: u64,
}

/// One atomic write of a page: checkpoints and documents together.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chunk {
    pub checkpoints: Vec<CheckpointMove>,
    pub docs: Vec<DocWrite>,
    /// Written before the atomic part, each on its own.
    pub loose: Vec<LooseWrite>,
}

impl Chunk {
    /// The items of the chunk that count against a write's limits: one
    /// checkpoint item per stream, one per document.
    pub fn items(&self) -> usize {
        self.streams().len() + self.docs.len()
    }

    /// The checkpoint moves by stream, in the order the streams first
    /// appear: one item each.
    pub fn streams(&self) -> Vec<StreamMove<'_>> {
        let mut order: Vec<StreamMove<'_>> = Vec::new();
        let mut at: HashMap<&str, usize> = HashMap::new();
        for moved in &self.checkpoints {
            match at.get(moved.stream_id.as_str()) {
                Some(&i) => order[i].moves.push(moved),
                None => {
                    at.insert(moved.stream_id.as_str(), order.len());
                    order.push(StreamMove {
                        stream_id: moved.stream_id.as_str(),
                        moves: vec![moved],
                    });
                }
            }
        }
        order
    }

    /// The stream items that move with documents: with them, the atomic part.
    pub fn bound(&self) -> Vec<StreamMove<'_>> {
        self.streams().into_iter().filter(StreamMove::with_docs).collect()
    }

    /// The stream items without atomic documents: each written alone as a
    /// conditional update (after the chunk's loose writes).
    pub fn alone(&self) -> Vec<StreamMove<'_>> {
        self.streams().into_iter().filter(|s| !s.with_docs()).collect()
    }

    /// Whether the atomic part (bound stream items and documents) is a
    /// transaction: more than one item.
    pub fn is_transaction(&self) -> bool {
        self.bound().len() + self.docs.len() > 1
    }
}

fn doc_key(consumer: &str, op: &ReadOp) -> (String, String, String) {
    let (partition, sort) = op.key();
    (consumer.to_string(), partition.to_string(), sort.to_string())
}

/// The field of a document an adapter copies to the item's time to live
/// (epoch seconds; decision 0088).
pub const EXPIRES_AT: &str = "expires_at";

/// The attribute of a document item holding what adds added to the body's
/// field `field` (decision 0088).
pub fn count_attribute(field: &str) -> String {
    format!("n#{field}")
}

/// The attribute of a document item holding a field an add set (its JSON).
pub fn set_attribute(field: &str) -> String {
    format!("s#{field}")
}

/// The size of a document item of the DynamoDB read-model table:
/// `pk` = `<consumer>#<partition>`, `sk` = sort, `kind` = `doc`, `body` = the
/// JSON (a delete counts its key). An add's item has, instead of `body`, a
/// number `n#<field>` per count (counted as the digits of the count it
/// adds: the sum is not known), a JSON string `s#<field>` per field set,
/// and the time to live `expires_at` when one is set.
pub fn doc_item_bytes(consumer: &str, op: &ReadOp) -> usize {
    let (partition, sort) = op.key();
    let key = "pk".len() + consumer.len() + 1 + partition.len() + "sk".len() + sort.len();
    match op {
        ReadOp::Put { body, .. } => key + "kind".len() + "doc".len() + "body".len() + body.to_string().len(),
        ReadOp::Delete { .. } => key,
        ReadOp::Add { counts, set, .. } => {
            key + "kind".len()
                + "doc".len()
                + counts
                    .iter()
                    .map(|(field, n)| count_attribute(field).len() + n.to_string().len())
                    .sum::<usize>()
                + set
                    .iter()
                    .map(|(field, value)| set_attribute(field).len() + value.to_string().len())
                    .sum::<usize>()
                + set
                    .get(EXPIRES_AT)
                    .and_then(serde_json::Value::as_i64)
                    .map_or(0, |at| EXPIRES_AT.len() + at.to_string().len())
        }
    }
}

/// The size of an idempotent document item: a document item and its stamp
/// (`stamp_stream`, `stamp_version`).
pub fn loose_item_bytes(loose: &LooseWrite) -> usize {
    doc_item_bytes(&loose.consumer, &loose.op)
        + match loose.op {
            ReadOp::Put { .. } => {
                "stamp_stream".len() + loose.stream_id.len() + "stamp_version".len() + loose.version.to_string().len()
            }
            ReadOp::Delete { .. } | ReadOp::Add { .. } => 0,
        }
}

/// The name of a consumer's version attribute on a stream's checkpoint item.
pub fn checkpoint_attribute(consumer: &str) -> String {
    format!("v#{consumer}")
}

/// The size of a stream's checkpoint item: `pk` = `checkpoint#<stream>`,
/// `sk` = `checkpoint`, `kind` = `checkpoint`, and one attribute
/// `v#<consumer>` per consumer (a number, counted by its digits).
pub fn stream_checkpoint_item_bytes<'a>(stream_id: &str, versions: impl IntoIterator<Item = (&'a str, u64)>) -> usize {
    "pk".len()
        + "checkpoint#".len()
        + stream_id.len()
        + "sk".len()
        + "checkpoint".len()
        + "kind".len()
        + "checkpoint".len()
        + versions
            .into_iter()
            .map(|(consumer, version)| checkpoint_attribute(consumer).len() + version.to_string().len())
            .sum::<usize>()
}

/// The size of a stream's checkpoint item holding one consumer's version.
pub fn checkpoint_item_bytes(consumer: &str, stream_id: &str, version: u64) -> usize {
    stream_checkpoint_item_bytes(stream_id, [(consumer, version)])
}

/// What one append costs the DynamoDB event store (decision 0036): an
/// expected version `n > 0` is read first (`(stream, n)`, one strongly
/// consistent GetItem of an event of `check_bytes`); the items are then
/// written, one alone as a conditional `PutItem`, several in one
/// `TransactWriteItems` (twice the units). Returns (write units, read
/// units in halves, whether it is a transaction).
pub fn append_units(item_bytes: &[usize], check_bytes: Option<usize>) -> (u64, u64, bool) {
    let transaction = item_bytes.len() > 1;
    let units: u64 = item_bytes.iter().map(|b| write_units(*b)).sum();
    let reads = check_bytes.map_or(0, |b| read_halves(b, ReadKind::StronglyConsistentItem));
    (if transaction { 2 * units } else { units }, reads, transaction)
}

/// Cuts `commits` (in order; consecutive commits of one pair chain) into
/// atomic chunks of consecutive commits within `max_items` and `max_bytes`
/// (`size` gives a document write's bytes). Within a chunk every checkpoint
/// and document is written once, as the chunk leaves it, so each chunk
/// leaves the store exactly as its commits applied one after another would.
/// A commit that alone exceeds the limits is `TooLarge`; a commit that does
/// not chain on the one before it of its pair, a `Conflict` (as applying
/// them in order would find).
pub fn plan(
    commits: Vec<Commit>,
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&str, &ReadOp) -> usize,
) -> Result<Vec<Chunk>, CommitError> {
    let mut chunks = Vec::new();
    let mut chunk = Chunk::default();
    let mut checkpoints: HashMap<(String, String), usize> = HashMap::new();
    let mut docs: HashMap<(String, String, String), usize> = HashMap::new();
    let mut loose: HashMap<(String, String, String), usize> = HashMap::new();
    let mut streams: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut bytes = 0usize;
    for mut c in commits {
        // An add is never written apart from its checkpoint.
        if c.idempotent.iter().any(ReadOp::is_add) {
            let (adds, idempotent): (Vec<ReadOp>, Vec<ReadOp>) =
                std::mem::take(&mut c.idempotent).into_iter().partition(ReadOp::is_add);
            c.idempotent = idempotent;
            c.ops.splice(0..0, adds);
        }
        let pair = (c.consumer.clone(), c.stream_id.clone());
        let new_items = usize::from(!streams.contains(&c.stream_id))
            + c.ops
                .iter()
                .map(|op| doc_key(&c.consumer, op))
                .collect::<std::collections::HashSet<_>>()
                .iter()
                .filter(|k| !docs.contains_key(*k))
                .count();
        let added: usize = c.ops.iter().map(|op| size(&c.consumer, op)).sum::<usize>()
            + checkpoint_item_bytes(&c.consumer, &c.stream_id, c.new);
        if chunk.items() > 0 && (chunk.items() + new_items > max_items || bytes + added > max_bytes) {
            chunks.push(std::mem::take(&mut chunk));
            checkpoints.clear();
            docs.clear();
            loose.clear();
            streams.clear();
            bytes = 0;
        }
        if chunk.items() == 0 && (new_items > max_items || added > max_bytes) {
            return Err(CommitError::TooLarge(format!(
                "one commit of {} on {} is {new_items} items and {added} bytes \
                 (at most {max_items} items and {max_bytes} bytes in one write)",
                c.consumer, c.stream_id
            )));
        }
        bytes += added;
        streams.insert(c.stream_id.clone());
        match checkpoints.get(&pair) {
            Some(&i) => {
                let moved = &mut chunk.checkpoints[i];
                if moved.new != c.expected {
                    return Err(CommitError::Conflict {
                        consumer: c.consumer,
                        stream_id: c.stream_id,
                        expected: c.expected,
                    });
                }
                moved.new = c.new;
                moved.with_docs |= !c.ops.is_empty();
            }
            None => {
                checkpoints.insert(pair, chunk.checkpoints.len());
                chunk.checkpoints.push(CheckpointMove {
                    consumer: c.consumer.clone(),
                    stream_id: c.stream_id.clone(),
                    expected: c.expected,
                    new: c.new,
                    with_docs: !c.ops.is_empty(),
                });
            }
        }
        for op in c.idempotent {
            let key = doc_key(&c.consumer, &op);
            let write = LooseWrite {
                consumer: c.consumer.clone(),
                op,
                stream_id: c.stream_id.clone(),
                version: c.new,
            };
            match loose.get(&key) {
                Some(&i) => chunk.loose[i] = write,
                None => {
                    loose.insert(key, chunk.loose.len());
                    chunk.loose.push(write);
                }
            }
        }
        for op in c.ops {
            let key = doc_key(&c.consumer, &op);
            match docs.get(&key) {
                // Written once as the chunk leaves it: two adds sum.
                Some(&i) => {
                    let before = std::mem::replace(
                        &mut chunk.docs[i].op,
                        ReadOp::Delete {
                            partition: String::new(),
                            sort: String::new(),
                        },
                    );
                    chunk.docs[i].op = before.then(op);
                }
                None => {
                    docs.insert(key, chunk.docs.len());
                    chunk.docs.push(DocWrite {
                        consumer: c.consumer.clone(),
                        op,
                    });
                }
            }
        }
    }
    if chunk.items() > 0 || !chunk.loose.is_empty() {
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// How a read is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// GetItem or BatchGetItem (each item rounded alone), strongly consistent.
    StronglyConsistentItem,
    /// A Query (the items' sizes summed, then rounded), strongly consistent.
    StronglyConsistentQuery,
    /// A Query, eventually consistent (half the units).
    EventuallyConsistentQuery,
}

/// What was spent, as read from a [`CapacityMeter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Capacity {
    pub write_units: f64,
    pub read_units: f64,
    /// Write requests sent (a transaction or a put counts once).
    pub write_requests: u64,
    /// Read requests sent (GetItem, BatchGetItem, Query pages).
    pub read_requests: u64,
    /// Of the write requests, the transactions.
    pub transactions: u64,
}

/// Counts capacity units by DynamoDB's rules, from the sizes of the items
/// written and read (never from what an emulator reports).
#[derive(Debug, Default)]
pub struct CapacityMeter {
    write_units: AtomicU64,
    /// Read units in halves (eventually consistent reads cost half a unit).
    read_halves: AtomicU64,
    write_requests: AtomicU64,
    read_requests: AtomicU64,
    transactions: AtomicU64,
}

/// Write units of one item of `bytes` outside a transaction.
pub fn write_units(bytes: usize) -> u64 {
    bytes.div_ceil(1024).max(1) as u64
}

/// Read units, in halves, of reading `bytes` (one item, or a Query's sum).
pub fn read_halves(bytes: usize, kind: ReadKind) -> u64 {
    let units = bytes.div_ceil(4096).max(1) as u64;
    match kind {
        ReadKind::EventuallyConsistentQuery => units,
        ReadKind::StronglyConsistentItem | ReadKind::StronglyConsistentQuery => 2 * units,
    }
}

impl CapacityMeter {
    /// One write request of items of these sizes: a single put (or delete),
    /// or a transaction (twice the units).
    pub fn write(&self, item_bytes: &[usize], transaction: bool) {
        let units: u64 = item_bytes.iter().map(|b| write_units(*b)).sum();
        self.write_units
            .fetch_add(if transaction { 2 * units } else { units }, Ordering::Relaxed);
        self.write_requests.fetch_add(1, Ordering::Relaxed);
        if transaction {
            self.transactions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A GetItem or BatchGetItem of items of these sizes (0: not found, the
    /// minimum is still paid), strongly consistent.
    pub fn get(&self, item_bytes: &[usize]) {
        let halves: u64 = item_bytes
            .iter()
            .map(|b| read_halves(*b, ReadKind::StronglyConsistentItem))
            .sum();
        self.read_halves.fetch_add(halves, Ordering::Relaxed);
        self.read_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// One Query page that read items of these sizes.
    pub fn query(&self, item_bytes: &[usize], consistent: bool) {
        let kind = if consistent {
            ReadKind::StronglyConsistentQuery
        } else {
            ReadKind::EventuallyConsistentQuery
        };
        self.read_halves
            .fetch_add(read_halves(item_bytes.iter().sum(), kind), Ordering::Relaxed);
        self.read_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The units and requests counted so far.
    pub fn capacity(&self) -> Capacity {
        Capacity {
            write_units: self.write_units.load(Ordering::Relaxed) as f64,
            read_units: self.read_halves.load(Ordering::Relaxed) as f64 / 2.0,
            write_requests: self.write_requests.load(Ordering::Relaxed),
            read_requests: self.read_requests.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
        }
    }

    /// Meters a planned chunk as the adapter writes it: each loose write a
    /// request of its own, each stream item without documents one, then the
    /// atomic part. `stream_item` gives a stream item's size after the
    /// write (an update is charged the larger of the item before and after:
    /// with versions only growing, after); [`StreamMove::item_bytes`] when
    /// the other consumers' versions on it are not known.
    pub fn chunk(&self, chunk: &Chunk, stream_item: impl Fn(&StreamMove<'_>) -> usize) {
        for loose in &chunk.loose {
            self.write(&[loose_item_bytes(loose)], false);
        }
        for stream in chunk.alone() {
            self.write(&[stream_item(&stream)], false);
        }
        let sizes: Vec<usize> = chunk
            .bound()
            .iter()
            .map(&stream_item)
            .chain(chunk.docs.iter().map(|d| doc_item_bytes(&d.consumer, &d.op)))
            .collect();
        if !sizes.is_empty() {
            self.write(&sizes, chunk.is_transaction());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn commit(consumer: &str, stream: &str, expected: u64, new: u64, ops: Vec<ReadOp>) -> Commit {
        Commit {
            consumer: consumer.into(),
            stream_id: stream.into(),
            expected,
            new,
            ops,
            idempotent: Vec::new(),
        }
    }

    fn put(sort: &str, n: i64) -> ReadOp {
        ReadOp::Put {
            partition: "p".into(),
            sort: sort.into(),
            body: json!(n),
        }
    }

    fn unit(_: &str, _: &ReadOp) -> usize {
        1
    }

    fn add(sort: &str, n: i64) -> ReadOp {
        ReadOp::Add {
            partition: "p".into(),
            sort: sort.into(),
            counts: std::collections::BTreeMap::from([("n".to_string(), n)]),
            set: serde_json::Map::from_iter([("expires_at".to_string(), json!(9))]),
        }
    }

    #[test]
    fn adds_to_one_document_in_a_chunk_are_summed_and_never_loose() {
        let mut loose_add = commit("a", "u", 0, 1, Vec::new());
        loose_add.idempotent.push(add("x", 4));
        let chunks = plan(
            vec![
                commit("a", "s", 0, 1, vec![add("x", 1)]),
                commit("a", "t", 0, 2, vec![add("x", 2), add("y", 1)]),
                loose_add,
                commit("a", "s", 1, 2, vec![put("y", 7), add("y", 3)]),
            ],
            100,
            1 << 20,
            unit,
        )
        .expect("plan");
        assert_eq!(chunks.len(), 1);
        let chunk = &chunks[0];
        assert!(chunk.loose.is_empty(), "{chunk:?}");
        assert!(chunk.checkpoints.iter().all(|c| c.with_docs));
        let docs: Vec<(&str, ReadOp)> = chunk.docs.iter().map(|d| (d.consumer.as_str(), d.op.clone())).collect();
        assert_eq!(
            docs,
            [
                ("a", add("x", 7)),
                (
                    "a",
                    ReadOp::Put {
                        partition: "p".into(),
                        sort: "y".into(),
                        body: json!({"n": 3, "expires_at": 9}),
                    }
                ),
            ]
        );
        // Three stream items and two documents: one transaction.
        assert_eq!(chunk.items(), 5);
        assert!(chunk.is_transaction());
    }

    #[test]
    fn a_page_is_one_chunk_with_each_checkpoint_and_document_once() {
        let chunks = plan(
            vec![
                commit("a", "s", 0, 1, vec![put("x", 1)]),
                commit("a", "t", 3, 4, vec![put("x", 2)]),
                commit("a", "s", 1, 5, vec![put("y", 1), put("x", 3)]),
                commit("b", "s", 0, 5, Vec::new()),
            ],
            100,
            1 << 20,
            unit,
        )
        .expect("plan");
        assert_eq!(chunks.len(), 1);
        let chunk = &chunks[0];
        let moves: Vec<(&str, &str, u64, u64, bool)> = chunk
            .checkpoints
            .iter()
            .map(|c| {
                (
                    c.consumer.as_str(),
                    c.stream_id.as_str(),
                    c.expected,
                    c.new,
                    c.with_docs,
                )
            })
            .collect();
        assert_eq!(
            moves,
            [("a", "s", 0, 5, true), ("a", "t", 3, 4, true), ("b", "s", 0, 5, false)]
        );
        // Two stream items: s (both consumers, with documents), t.
        assert_eq!(chunk.items(), 2 + 2);
        assert_eq!(chunk.alone().len(), 0);
        assert_eq!(chunk.bound().len(), 2);
        assert_eq!(chunk.bound()[0].moves.len(), 2);
        assert_eq!(
            chunk.docs.iter().map(|d| d.op.clone()).collect::<Vec<_>>(),
            [put("x", 3), put("y", 1)]
        );
    }

    #[test]
    fn chunks_stay_within_the_limits_and_keep_the_order() {
        // 30 commits of 4 documents each on their own stream: 5 items each.
        let commits: Vec<Commit> = (0..30)
            .map(|i| {
                commit(
                    "a",
                    &format!("s{i}"),
                    0,
                    1,
                    (0..4).map(|d| put(&format!("{i}-{d}"), d)).collect(),
                )
            })
            .collect();
        let chunks = plan(commits, 100, 1 << 20, unit).expect("plan");
        assert_eq!(chunks.iter().map(Chunk::items).collect::<Vec<_>>(), [100, 50]);
        // By bytes: at most 3 commits of (4 + 1) bytes... plus the checkpoint items' sizes.
        let commits: Vec<Commit> = (0..6)
            .map(|i| commit("a", "s", i, i + 1, vec![put(&format!("{i}"), 1)]))
            .collect();
        let per = 1 + checkpoint_item_bytes("a", "s", 6);
        let chunks = plan(commits, 100, 3 * per, unit).expect("plan");
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            (chunks[0].checkpoints[0].expected, chunks[0].checkpoints[0].new),
            (0, 3)
        );
        assert_eq!(
            (chunks[1].checkpoints[0].expected, chunks[1].checkpoints[0].new),
            (3, 6)
        );
    }

    #[test]
    fn consumers_of_one_stream_share_its_checkpoint_item() {
        // Ten consumers on one stream, one without documents: one item,
        // part of the transaction with the documents.
        let mut commits: Vec<Commit> = (0..9)
            .map(|c| commit(&format!("c{c}"), "s", 2, 3, vec![put(&format!("{c}"), 1)]))
            .collect();
        commits.push(commit("alone", "s", 0, 3, Vec::new()));
        commits.push(commit("alone", "t", 0, 1, Vec::new()));
        let chunks = plan(commits, 100, 1 << 20, unit).expect("plan");
        assert_eq!(chunks.len(), 1);
        let chunk = &chunks[0];
        assert_eq!(chunk.items(), 2 + 9, "two stream items and nine documents");
        let bound = chunk.bound();
        assert_eq!(bound.len(), 1);
        assert_eq!((bound[0].stream_id, bound[0].moves.len()), ("s", 10));
        assert_eq!(chunk.alone().iter().map(|s| s.stream_id).collect::<Vec<_>>(), ["t"]);
        assert!(bound[0].item_bytes() < 1024, "{}", bound[0].item_bytes());
        let meter = CapacityMeter::default();
        meter.chunk(chunk, |s| s.item_bytes());
        // t alone (1), then s and nine documents in a transaction (2 each).
        assert_eq!(meter.capacity().write_units, 1.0 + 2.0 * 10.0);
        assert_eq!(meter.capacity().write_requests, 2);
        // 100 items: the stream items count once per stream.
        let many: Vec<Commit> = (0..200)
            .map(|c| commit(&format!("c{c}"), "s", 0, 1, Vec::new()))
            .collect();
        assert_eq!(plan(many, 100, 1 << 20, unit).expect("plan").len(), 1);
    }

    #[test]
    fn an_append_alone_is_a_put_and_several_items_a_transaction() {
        // One event of 535 bytes on a new stream: one unit, nothing read.
        assert_eq!(append_units(&[535], None), (1, 0, false));
        // After version n: the read of (stream, n), one unit (two halves).
        assert_eq!(append_units(&[535], Some(535)), (1, 2, false));
        // An event, a reservation and a receipt: a transaction.
        assert_eq!(append_units(&[1500, 80, 300], Some(600)), (2 * (2 + 1 + 1), 2, true));
    }

    #[test]
    fn an_oversized_commit_and_a_broken_chain_are_refused() {
        let big = commit("a", "s", 0, 1, (0..100).map(|d| put(&format!("{d}"), d)).collect());
        assert!(matches!(
            plan(vec![big], 100, 1 << 20, unit),
            Err(CommitError::TooLarge(_))
        ));
        let broken = vec![commit("a", "s", 0, 1, Vec::new()), commit("a", "s", 2, 3, Vec::new())];
        assert!(matches!(
            plan(broken, 100, 1 << 20, unit),
            Err(CommitError::Conflict { .. })
        ));
    }

    #[test]
    fn units_follow_dynamodbs_rounding() {
        let meter = CapacityMeter::default();
        meter.write(&[100], false);
        meter.write(&[1024, 1025, 10], true);
        assert_eq!(meter.capacity().write_units, 1.0 + 2.0 * (1.0 + 2.0 + 1.0));
        meter.get(&[0, 4096, 4097]);
        meter.query(&[3000, 3000], true);
        meter.query(&[100], false);
        let c = meter.capacity();
        assert_eq!(c.read_units, 1.0 + 1.0 + 2.0 + 2.0 + 0.5);
        assert_eq!((c.write_requests, c.transactions, c.read_requests), (2, 1, 3));
    }
}
