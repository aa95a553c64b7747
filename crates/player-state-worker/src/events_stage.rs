//! Events stage: telemetry → one conditional UpdateItem per player per batch in
//! PlayerState, moving a player only forward in event time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use event_model::{RejectedRecord, Rejection, Rules};
use futures::StreamExt;
use pipeline_runtime::Metrics;
use pipeline_runtime::clock::now_ms;
use pipeline_runtime::error::{AwsError, Classified, ErrorKind};
use pipeline_runtime::metrics::names::{self, dimension::REASON};
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use shard_consumer::kinesis::KinesisRecord;
use shard_consumer::{Batch, BatchOutput, ProcessorError};
use tokio_util::sync::CancellationToken;

use crate::events::{
    InputFormat, Sighting, Skip, SnowplowLevelContext, detect, latest_per_player, sighting_from_json,
    sighting_from_snowplow,
};
use crate::quarantine::Quarantine;
use crate::sink::player_state::{self, Written};

pub const APPLICATION: &str = "player-state";

pub struct EventsStage {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub table: String,
    pub rules: Rules,
    pub format: InputFormat,
    pub level_context: SnowplowLevelContext,
    pub idle_timeout: Duration,
    pub concurrency: usize,
    /// Where the records only this stage rejects go (see [`EventsStage::owns_reject`]).
    pub quarantine: Quarantine,
    pub metrics: Metrics,
}

impl EventsStage {
    async fn move_player(&self, sighting: &Sighting) -> Result<Written, AwsError> {
        player_state::move_player(
            &self.dynamodb,
            &self.table,
            &sighting.player,
            &sighting.level,
            sighting.timestamp,
        )
        .await
    }

    /// Whether this stage stores a reject in `errors/`. The s3-connector reads the same
    /// telemetry stream and stores every record that is not valid telemetry JSON; this
    /// stage stores what only it rejects: Snowplow lines (and, in [`Self::process`],
    /// writes DynamoDB refuses).
    fn owns_reject(&self, data: &[u8]) -> bool {
        detect(self.format, data) == InputFormat::Snowplow
    }

    fn reject(shard: &str, record: &KinesisRecord, why: Rejection) -> RejectedRecord {
        RejectedRecord {
            reason: why.reason.as_str().to_string(),
            field: why.field,
            detail: why.detail,
            shard: shard.to_string(),
            sequence: record.position.sequence.to_string(),
            subsequence: record.position.subsequence,
            arrival: record.arrival_ms,
            raw_base64: RejectedRecord::encode_raw(&record.data),
        }
    }

    /// Every record of a batch read, rejected or skipped.
    fn read(&self, batch: &Batch<KinesisRecord>) -> (Vec<Sighting>, Vec<RejectedRecord>) {
        let now = now_ms();
        let idle_ms = i64::try_from(self.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut sightings = Vec::with_capacity(batch.records.len());
        let mut rejects = Vec::new();
        for (index, record) in batch.records.iter().enumerate() {
            let sighting = match (&record.invalid, detect(self.format, &record.data)) {
                (Some(error), _) => Err(Skip::BadAggregate(error.reason())),
                (None, InputFormat::Snowplow) => {
                    sighting_from_snowplow(&record.data, now, idle_ms, &self.level_context)
                }
                (None, _) => sighting_from_json(&record.data, record.arrival_ms, now, idle_ms, &self.rules),
            };
            match sighting {
                Ok(sighting) => sightings.push(Sighting {
                    record: index,
                    ..sighting
                }),
                Err(skip) => {
                    self.metrics.count(names::SKIPPED_EVENTS, 1, &[(REASON, skip.reason())]);
                    if let Skip::Invalid(why) = skip
                        && self.owns_reject(&record.data)
                    {
                        rejects.push(Self::reject(&batch.shard_id, record, why));
                    }
                }
            }
        }
        (sightings, rejects)
    }
}

impl BatchOutput<KinesisRecord> for EventsStage {
    async fn write(
        self: Arc<Self>,
        batch: &Batch<KinesisRecord>,
        stop: CancellationToken,
    ) -> Result<(), ProcessorError> {
        let stage = &self;
        let (sightings, mut rejects) = stage.read(batch);
        stage.metrics.count(names::EVENTS_IN, batch.records.len() as u64, &[]);
        // Every record of each player: all of them go to errors/ when its item is refused.
        let mut records_of: HashMap<String, Vec<usize>> = HashMap::new();
        for sighting in &sightings {
            records_of
                .entry(sighting.player.clone())
                .or_default()
                .push(sighting.record);
        }
        let latest = latest_per_player(sightings);
        // Owned values in the futures: borrowed ones make this future not `Send`.
        let results: Vec<(Sighting, Result<Written, RetryError<AwsError>>)> = futures::stream::iter(latest)
            .map(|sighting| {
                let stage = stage.clone();
                let stop = stop.clone();
                async move {
                    let written = retry(&RetryPolicy::SHARD_OUTPUT, &stop, || stage.move_player(&sighting)).await;
                    (sighting, written)
                }
            })
            .buffer_unordered(stage.concurrency)
            .collect()
            .await;
        let (mut moved, mut stale) = (0, 0);
        for (sighting, result) in results {
            match result {
                Ok(Written::Moved) => moved += 1,
                Ok(Written::Stale) => stale += 1,
                // DynamoDB refused this player's item for good (a key it cannot hold):
                // the record goes to errors/ and the shard moves on.
                Err(RetryError::Failed { error, .. }) if error.kind() == ErrorKind::Permanent => {
                    let why = Rejection::field(
                        event_model::Reason::Unwritable,
                        "playerId",
                        format!("PlayerState refused the item: {error}"),
                    );
                    for &index in records_of.get(&sighting.player).into_iter().flatten() {
                        rejects.push(EventsStage::reject(&batch.shard_id, &batch.records[index], why.clone()));
                    }
                }
                Err(error) => return Err(ProcessorError::new(error.kind(), error)),
            }
        }
        // Stream order (sequence numbers compare as numbers): the file is named after its ends.
        rejects.sort_by(|a, b| {
            (a.sequence.len(), &a.sequence, a.subsequence).cmp(&(b.sequence.len(), &b.sequence, b.subsequence))
        });
        stage
            .quarantine
            .store(&rejects, &stop)
            .await
            .map_err(ProcessorError::of_own_request)?;
        stage.metrics.count(names::PLAYER_UPDATES, moved, &[]);
        stage.metrics.count(names::STALE_EVENTS, stale, &[]);
        Ok(())
    }
}
