//! The SQLite files at rest (issue 16 item 4, decision 0040): after a
//! customer is erased, no byte of `crm.db`, `crm.db-wal` or `crm.db-shm`
//! holds their personal data in plain text (`secure_delete`, and the WAL
//! truncated after the erasure), and the data directory and every file in it
//! are their owner's alone.

use crm_local::adapters::data_dir::database_files;
use crm_local::runtime::bus::BUILT_IN_TEMPLATE;
use crm_local::runtime::LocalRuntime;
use crm_tests::TestApi;
use serde_json::json;
use std::path::Path;

/// A customer whose every personal value is long and found nowhere else.
struct Distinctive {
    email: &'static str,
    first_name: &'static str,
    last_name: &'static str,
    phone: &'static str,
    ip: &'static str,
    user_agent: &'static str,
    address_line: &'static str,
}

const CUSTOMER: Distinctive = Distinctive {
    email: "wilhelmina.quarterstaff-zed41@erasure-scan.example",
    first_name: "Wilhelminaquartz",
    last_name: "Zebrowskaferntree",
    phone: "+4915198765432",
    ip: "203.0.113.219",
    user_agent: "ScanAgent/9.41 (Quarterstaff; erasure-sqlite-bytes)",
    address_line: "17 Quarterstaff Lantern Passage",
};

impl Distinctive {
    fn values(&self) -> [&'static str; 7] {
        [
            self.email,
            self.first_name,
            self.last_name,
            self.phone,
            self.ip,
            self.user_agent,
            self.address_line,
        ]
    }
}

/// How often `needle` occurs in the bytes of `path` (0 when it does not exist).
fn occurrences(path: &Path, needle: &str) -> usize {
    let Ok(bytes) = std::fs::read(path) else {
        return 0;
    };
    let needle = needle.as_bytes();
    bytes.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Each personal value with every SQLite file of `db` that holds it, and how often.
fn plaintext_in_files(db: &Path) -> Vec<(String, String, usize)> {
    let mut found = Vec::new();
    for file in database_files(db) {
        for value in CUSTOMER.values() {
            let n = occurrences(&file, value);
            if n > 0 {
                found.push((file.display().to_string(), value.to_string(), n));
            }
        }
    }
    found
}

/// The tables with a live row holding `value` (to tell a row that still
/// holds it from bytes left behind in the file).
fn tables_holding(db: &Path, value: &str) -> Vec<String> {
    crm_tests::sqlite_tables(db)
        .into_iter()
        .filter(|table| crm_tests::sqlite_rows(db, table).iter().any(|row| row.contains(value)))
        .collect()
}

#[tokio::test]
async fn an_erased_customer_is_in_no_byte_of_the_database_its_wal_or_shm() {
    let api = TestApi::new();
    let body = json!({
        "email": CUSTOMER.email,
        "first_name": CUSTOMER.first_name,
        "last_name": CUSTOMER.last_name,
        "phone": CUSTOMER.phone,
        "source": "web",
        "marketing_consent": { "email": true, "sms": true, "push": false },
        "terms_accepted": true,
        "ip": CUSTOMER.ip,
        "user_agent": CUSTOMER.user_agent,
        "timezone": "Europe/Berlin",
        "locale": "de-DE"
    });
    let registered = api.call("POST", "/customers", Some(&body.to_string())).await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let id = registered.body["id"].as_str().expect("customer id").to_string();
    let address = json!({ "address": { "line1": CUSTOMER.address_line, "city": "Berlin",
        "postal_code": "10115", "country": "DE" } });
    let updated = api
        .call("PATCH", &format!("/customers/{id}"), Some(&address.to_string()))
        .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    api.runtime.bus.settle().await.expect("settle");

    // The scan finds plain text where it is: the verification mail in the
    // local mail sink holds the address before erasure.
    let db = api.db_path();
    let before = plaintext_in_files(&db);
    assert!(
        before.iter().any(|(_, value, _)| value == CUSTOMER.email),
        "the scan finds the address before erasure: {before:?}"
    );

    let erased = api.call("DELETE", &format!("/customers/{id}"), None).await;
    assert_eq!(erased.status, 202, "{:?}", erased.body);
    api.runtime.bus.settle().await.expect("settle");

    let after = plaintext_in_files(&db);
    let rows: Vec<(&str, Vec<String>)> = CUSTOMER
        .values()
        .iter()
        .map(|v| (*v, tables_holding(&db, v)))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    assert!(
        after.is_empty(),
        "personal data left in the SQLite files: {after:?}; live rows holding it: {rows:?}"
    );
    // The WAL was truncated once the bus delivered what the erasure caused.
    let wal = &database_files(&db)[1];
    let wal_len = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        wal_len,
        0,
        "{} is {wal_len} bytes after the erasure settled",
        wal.display()
    );
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// Every file of `dir` with its mode.
#[cfg(unix)]
fn file_modes(dir: &Path) -> Vec<(String, u32)> {
    let mut modes: Vec<(String, u32)> = std::fs::read_dir(dir)
        .expect("list the data directory")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name().to_string_lossy().into_owned(), mode(&e.path()))
        })
        .collect();
    modes.sort();
    modes
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_data_directory_is_0700_and_every_file_in_it_0600() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data_dir = parent.path().join("fresh").join("data");
    let db = crm_local::adapters::data_dir::database_path(&data_dir);
    let token = crm_local::runtime::serve::load_or_create_token(&data_dir).expect("token");
    let runtime = LocalRuntime::open(&db, BUILT_IN_TEMPLATE).expect("open runtime");
    let app = runtime.app(token.clone());
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/customers")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(crm_tests::registration("modes@shop.example")))
        .expect("request");
    let answer = tower::ServiceExt::oneshot(app, request).await.expect("answer");
    assert_eq!(answer.status(), 201);
    runtime.bus.settle().await.expect("settle");

    assert_eq!(mode(&data_dir), 0o700, "the data directory");
    let modes = file_modes(&data_dir);
    let names: Vec<&str> = modes.iter().map(|(n, _)| n.as_str()).collect();
    for expected in ["crm.db", "crm.db-wal", "crm.db-shm", "master.key", "token"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let open: Vec<_> = modes.iter().filter(|(_, m)| *m != 0o600).collect();
    assert!(open.is_empty(), "files not 0600: {open:?}");
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_data_directory_open_to_others_is_tightened_with_its_files() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().expect("tempdir");
    let data_dir = parent.path().join("old");
    std::fs::create_dir(&data_dir).expect("mkdir");
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let db = crm_local::adapters::data_dir::database_path(&data_dir);
    // A database an earlier version left world-readable, with its WAL.
    {
        let conn = rusqlite::Connection::open(&db).expect("old database");
        conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
        conn.execute_batch("CREATE TABLE old (x TEXT); INSERT INTO old VALUES ('left by an old version');")
            .expect("write");
        for file in database_files(&db) {
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod file");
            }
        }
        assert!(
            database_files(&db)[1].exists(),
            "the old WAL is there while its connection is open"
        );
        let runtime = LocalRuntime::open(&db, BUILT_IN_TEMPLATE).expect("open runtime");
        runtime.bus.settle().await.expect("settle");
        assert_eq!(mode(&data_dir), 0o700, "the data directory was tightened");
        let open: Vec<_> = file_modes(&data_dir).into_iter().filter(|(_, m)| *m != 0o600).collect();
        assert!(open.is_empty(), "files not 0600: {open:?}");
    }
}
