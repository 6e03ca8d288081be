//! A bound `LIMIT` is written `LIMIT (0 + ?N)` (see `adapters::db`): SQLite
//! re-prepares a statement with a bare `LIMIT ?N` on every new binding. This
//! reads the crate's sources for SQL that would, and shows that the rule
//! holds for the reason given, on the bundled SQLite.

use rusqlite::{params, Connection, StatementStatus};

fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_statement_binds_a_bare_limit() {
    let mut files = Vec::new();
    sources(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 20, "{files:?}");
    let mut bare = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a source");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let upper = line.to_uppercase();
            if let Some(at) = upper.find("LIMIT ?") {
                bare.push(format!("{}:{}: {}", file.display(), n + 1, &line[at..]));
            }
        }
    }
    assert!(bare.is_empty(), "write LIMIT (0 + ?N):\n{}", bare.join("\n"));
}

#[test]
fn a_bare_bound_limit_is_prepared_again_on_every_binding_and_the_written_one_is_not() {
    let conn = Connection::open_in_memory().expect("open");
    conn.execute_batch(
        "CREATE TABLE e (position INTEGER PRIMARY KEY, s TEXT, v INTEGER, UNIQUE (s, v));
         INSERT INTO e (s, v) VALUES ('a', 1), ('a', 2), ('b', 1);",
    )
    .expect("schema");
    let reprepares = |sql: &str| {
        for limit in 1..=5i64 {
            let mut stmt = conn.prepare_cached(sql).expect("prepare");
            let rows = stmt
                .query_map(params!["a", 0, limit], |r| r.get::<_, i64>(0))
                .expect("query")
                .count();
            assert_eq!(rows as i64, limit.min(2));
        }
        let stmt = conn.prepare_cached(sql).expect("prepare");
        stmt.get_status(StatementStatus::RePrepare)
    };
    assert_eq!(
        reprepares("SELECT position FROM e WHERE s = ?1 AND v > ?2 ORDER BY v LIMIT ?3"),
        5
    );
    assert_eq!(
        reprepares("SELECT position FROM e WHERE s = ?1 AND v > ?2 ORDER BY v LIMIT (0 + ?3)"),
        0
    );
}
