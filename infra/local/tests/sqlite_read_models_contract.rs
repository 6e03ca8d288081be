//! The read-model contract suite against the SQLite adapter (a real file).

use crm_core::ports::ReadModelStore;
use crm_local::adapters::read_models::SqliteReadModels;
use std::sync::Arc;

async fn fresh_read_models() -> Arc<dyn ReadModelStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.keep().join("read-models.db");
    Arc::new(SqliteReadModels::open(&path).expect("open sqlite read models"))
}

crm_core::read_model_contract!(fresh_read_models);
