//! openraft's storage conformance suite over the real sled store, one fresh database in
//! a temporary folder per case.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use std::sync::Arc;

use shoal_cluster::{GroupConfig, GroupId, NoObserver, RaftNodeId, SledLogStore, SledStateMachine};
use shoal_store::{Store, StoreConfig};
use tempfile::TempDir;

/// Opens a store in a new temporary folder; the folder and the store live as long as the
/// suite's case (the guard).
struct SledStoreBuilder;

impl StoreBuilder<GroupConfig, SledLogStore, SledStateMachine, (Store, TempDir)>
    for SledStoreBuilder
{
    async fn build(
        &self,
    ) -> Result<((Store, TempDir), SledLogStore, SledStateMachine), StorageError<RaftNodeId>> {
        let dir = tempfile::tempdir().expect("a temporary folder can be made");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("a new store opens");
        // A group other than routes/0, so the suite runs on prefixed trees that are not
        // the first ones of the database.
        let log = SledLogStore::open(&store, GroupId::Routes(3))?;
        let state_machine =
            SledStateMachine::open(&store, GroupId::Routes(3), 1, Arc::new(NoObserver))?;
        Ok(((store, dir), log, state_machine))
    }
}

// The suite's own signature returns openraft's (large) StorageError.
#[allow(clippy::result_large_err)]
#[test]
fn sled_storage_passes_openraft_conformance_suite() -> Result<(), StorageError<RaftNodeId>> {
    Suite::test_all(SledStoreBuilder)
}
