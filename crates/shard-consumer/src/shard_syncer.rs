//! The shard syncer, the Java KCL's `ShardSyncTask` in this worker's terms: it lists the
//! stream's shards and the lease table, and writes what [`plan_shard_leases`] decides:
//! leases for shards that have none, and deletions of finished leases nothing needs any
//! more. The leader runs it every shard-sync interval; any worker runs it at start and
//! when it read a shard to its end (to make the children's leases and take them).

use std::sync::Arc;

use pipeline_runtime::retry::{RetryPolicy, retry};
use tokio_util::sync::CancellationToken;

use crate::config::ConsumerConfig;
use crate::consumer::ConsumerError;
use crate::lease::Lease;
use crate::lease_store::LeaseStore;
use crate::shard_sync::plan_shard_leases;
use crate::source::Source;

pub(crate) struct ShardSyncer<S> {
    source: S,
    store: Arc<dyn LeaseStore>,
    config: Arc<ConsumerConfig>,
    /// Cancels the syncer's retries once the worker stops its shards.
    stopping: CancellationToken,
}

impl<S: Source> ShardSyncer<S> {
    pub fn new(
        source: S,
        store: Arc<dyn LeaseStore>,
        config: Arc<ConsumerConfig>,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            source,
            store,
            config,
            stopping,
        }
    }

    /// Creates leases for shards that have none, and deletes finished leases that
    /// nothing needs any more; adds the leases it made to `created` (also those made
    /// before a failure, and those another worker made meanwhile: a create whose answer
    /// was lost looks like one).
    pub async fn sync(&self, created: &mut Vec<Lease>) -> Result<(), ConsumerError> {
        let store = &self.store;
        let table_error = |source| ConsumerError::LeaseTable {
            table: store.name().to_string(),
            source,
        };
        let shards = self
            .source
            .list_shards()
            .await
            .map_err(|source| ConsumerError::ListShards {
                stream: self.source.describe(),
                source,
            })?;
        let stop = &self.stopping;
        let leases = retry(&RetryPolicy::CONTROL_READ, stop, || store.list())
            .await
            .map_err(|e| table_error(e.into_error()))?;
        let plan = plan_shard_leases(&shards, &leases, self.config.initial_position);
        let application = &self.config.application;
        for lease in plan.create {
            let made = retry(&RetryPolicy::CONTROL_READ, stop, || store.create(&lease))
                .await
                .map_err(|e| table_error(e.into_error()))?;
            if made {
                tracing::info!(%application, shard_id = %lease.key, checkpoint = %lease.checkpoint, parents = ?lease.parent_shard_ids, "lease created");
            }
            created.push(lease);
        }
        for key in &plan.delete {
            retry(&RetryPolicy::CONTROL_READ, stop, || store.delete_finished(key))
                .await
                .map_err(|e| table_error(e.into_error()))?;
            tracing::info!(%application, shard_id = %key, "finished lease deleted");
        }
        Ok(())
    }
}
