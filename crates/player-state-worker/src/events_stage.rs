//! Events stage: telemetry → one conditional UpdateItem per player per batch in
//! PlayerState, moving a player only forward in event time.

use pipeline_runtime::clock::now_ms;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use event_model::Rules;
use futures::StreamExt;
use pipeline_runtime::Metrics;
use shard_consumer::backoff::Backoff;
use shard_consumer::kinesis::KinesisRecord;
use shard_consumer::{Batch, Checkpointer, ProcessorError, ProcessorFactory, RecordProcessor};

use crate::events::{
    InputFormat, Sighting, Skip, SnowplowLevelContext, detect, latest_per_player, sighting_from_json,
    sighting_from_snowplow,
};

pub const APPLICATION: &str = "player-state";

pub struct EventsStage {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub table: String,
    pub rules: Rules,
    pub format: InputFormat,
    pub level_context: SnowplowLevelContext,
    pub idle_timeout: Duration,
    pub concurrency: usize,
    pub metrics: Metrics,
}

pub struct EventsProcessorFactory(pub Arc<EventsStage>);

impl ProcessorFactory<KinesisRecord> for EventsProcessorFactory {
    type Processor = EventsProcessor;
    fn create(&self, _shard_id: &str) -> EventsProcessor {
        EventsProcessor(self.0.clone())
    }
}

pub struct EventsProcessor(Arc<EventsStage>);

/// What a conditional write did.
enum Written {
    Moved,
    /// PlayerState already holds a later event: this one is older news.
    Stale,
}

impl EventsStage {
    async fn write(&self, sighting: &Sighting) -> Result<Written, aws_sdk_dynamodb::Error> {
        let result = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("playerId", AttributeValue::S(sighting.player.clone()))
            .update_expression("SET levelId = :level, lastUpdated = :ts")
            .condition_expression("attribute_not_exists(lastUpdated) OR lastUpdated <= :ts")
            .expression_attribute_values(":level", AttributeValue::S(sighting.level.clone()))
            .expression_attribute_values(":ts", AttributeValue::N(sighting.timestamp.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Written::Moved),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(Written::Stale)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Writes one sighting, retrying throttling and transient failures with backoff.
    async fn write_with_retries(&self, sighting: &Sighting) -> Result<Written, aws_sdk_dynamodb::Error> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut attempts = 0;
        loop {
            match self.write(sighting).await {
                Ok(written) => return Ok(written),
                Err(error) if attempts < 8 => {
                    attempts += 1;
                    self.metrics.count("PlayerWriteRetries", 1, &[]);
                    tracing::debug!(%error, "PlayerState write failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl RecordProcessor<KinesisRecord> for EventsProcessor {
    async fn process(
        &mut self,
        batch: &Batch<KinesisRecord>,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let stage = &self.0;
        let now = now_ms();
        let idle_ms = i64::try_from(stage.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut sightings = Vec::with_capacity(batch.records.len());
        for record in &batch.records {
            let sighting = match (&record.invalid, detect(stage.format, &record.data)) {
                (Some(error), _) => Err(Skip::Invalid(error.reason())),
                (None, InputFormat::Snowplow) => {
                    sighting_from_snowplow(&record.data, now, idle_ms, &stage.level_context)
                }
                (None, _) => sighting_from_json(&record.data, record.arrival_ms, now, idle_ms, &stage.rules),
            };
            match sighting {
                Ok(sighting) => sightings.push(sighting),
                Err(skip) => stage.metrics.count("SkippedEvents", 1, &[("Reason", skip.reason())]),
            }
        }
        stage.metrics.count("EventsIn", batch.records.len() as u64, &[]);
        let latest = latest_per_player(sightings);
        // Owned values in the futures: borrowed ones make this future not `Send`.
        let results: Vec<Result<Written, aws_sdk_dynamodb::Error>> = futures::stream::iter(latest)
            .map(|sighting| {
                let stage = stage.clone();
                async move { stage.write_with_retries(&sighting).await }
            })
            .buffer_unordered(stage.concurrency)
            .collect()
            .await;
        let (mut moved, mut stale) = (0, 0);
        for result in results {
            match result? {
                Written::Moved => moved += 1,
                Written::Stale => stale += 1,
            }
        }
        stage.metrics.count("PlayerUpdates", moved, &[]);
        stage.metrics.count("StaleEvents", stale, &[]);
        checkpointer.checkpoint_delivered().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint_delivered().await?;
        Ok(())
    }

    async fn shutdown_requested(&mut self, _checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        // Every processed batch was checkpointed as it finished: nothing is buffered.
        Ok(())
    }
}
