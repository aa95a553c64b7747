//! The processor of an application that makes each batch durable before it returns
//! (the player-state-worker's stages): nothing is buffered, so what was delivered is
//! checkpointed after each batch and at shard end, and a stop has nothing to flush.
//! Applications that buffer across batches use [`crate::buffered`] instead.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::processor::{Batch, Checkpointer, ProcessorError, ProcessorFactory, RecordProcessor};

/// Makes one batch durable, or fails without having made anything durable that a
/// retry of the same batch would not make durable the same way (see
/// [`RecordProcessor::process`]). `lease_lost` is cancelled when the lease moves on:
/// stop retrying then.
pub trait BatchOutput<R>: Send + Sync + 'static {
    fn write(
        self: Arc<Self>,
        batch: &Batch<R>,
        lease_lost: CancellationToken,
    ) -> impl Future<Output = Result<(), ProcessorError>> + Send;
}

/// A [`PerBatchProcessor`] per shard, all writing through one output.
pub struct PerBatchFactory<O, R> {
    output: Arc<O>,
    records: PhantomData<fn(R)>,
}

impl<O, R> PerBatchFactory<O, R> {
    pub fn new(output: O) -> Self {
        Self {
            output: Arc::new(output),
            records: PhantomData,
        }
    }
}

impl<R: Send + Sync + 'static, O: BatchOutput<R>> ProcessorFactory<R> for PerBatchFactory<O, R> {
    type Processor = PerBatchProcessor<O>;

    fn create(&self, _shard_id: &str) -> PerBatchProcessor<O> {
        PerBatchProcessor {
            output: self.output.clone(),
        }
    }
}

/// Writes each batch, then checkpoints it.
pub struct PerBatchProcessor<O> {
    output: Arc<O>,
}

impl<R: Send + Sync + 'static, O: BatchOutput<R>> RecordProcessor<R> for PerBatchProcessor<O> {
    async fn process(&mut self, batch: &Batch<R>, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        let lease_lost = checkpointer.lease_lost_token().clone();
        self.output.clone().write(batch, lease_lost).await?;
        checkpointer.checkpoint_delivered().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint_delivered().await?;
        Ok(())
    }

    async fn shutdown_requested(&mut self, _checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        // Every batch was checkpointed as it finished: nothing is buffered.
        Ok(())
    }
}
