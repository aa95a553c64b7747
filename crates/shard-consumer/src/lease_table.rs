//! The lease table's DynamoDB calls, one function per operation, and those of the
//! worker table beside it (`<lease table>-workers`, hash key `workerId`: one entry per
//! live worker, its heartbeat; [`crate::membership`]).
//!
//! Every write that changes a lease is conditional on the counter read before it
//! (and on the owner, for the holder's own writes), and bumps the counter: whoever
//! wrote last wins, anyone with a stale view fails with [`ErrorKind::ConditionFailed`].
//! Leases are not renewed one by one: a worker's heartbeat keeps all of its leases.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use futures::future::BoxFuture;

use crate::error::{AwsError, Classified, ErrorKind};
use crate::lease::{
    CHECKPOINT, CHECKPOINT_SUBSEQUENCE, LEASE_COUNTER, LEASE_KEY, LEASE_OWNER, Lease, LeaseFormatError, OWNER_SWITCHES,
};
use crate::membership::WorkerEntry;
use crate::position::Checkpoint;

/// The IAM actions of this module's calls.
pub const IAM_ACTIONS: &[&str] = &[
    "dynamodb:CreateTable",
    "dynamodb:DescribeTable",
    "dynamodb:Scan",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
];

/// The worker table's attributes.
pub const WORKER_ID: &str = "workerId";
pub const HEARTBEAT: &str = "heartbeat";
pub const WORKER_LEASES: &str = "leases";
pub const WANTS: &str = "wants";
pub const LEASE_EPOCH: &str = "leaseEpoch";

pub use pipeline_runtime::resources::worker_table_name;

/// Failure of a lease-table call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseTableError {
    #[error("{}", .0.explain())]
    Aws(#[from] AwsError),
    #[error("lease {key}: {source}")]
    Format { key: String, source: LeaseFormatError },
    #[error("lease table {0} did not become active")]
    NotActive(String),
    #[error(
        "lease table {0} does not exist, and this deployment does not create it (CREATE_LEASE_TABLES=false): create it with `pipelinectl setup` or the templates"
    )]
    Missing(String),
}

impl Classified for LeaseTableError {
    fn kind(&self) -> ErrorKind {
        match self {
            LeaseTableError::Aws(error) => error.kind,
            LeaseTableError::Format { .. } | LeaseTableError::NotActive(_) | LeaseTableError::Missing(_) => {
                ErrorKind::Fatal
            }
        }
    }
}

impl LeaseTableError {
    /// The conditional write did not apply: the lease moved on without us, or our own
    /// write was applied and its answer lost (re-read to tell the two apart).
    pub fn is_condition_failed(&self) -> bool {
        self.kind() == ErrorKind::ConditionFailed
    }

    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// A lease table, and its worker table.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    client: Client,
    name: String,
    workers: String,
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

impl LeaseTable {
    pub fn new(client: Client, name: &str) -> Self {
        Self {
            client,
            name: name.to_string(),
            workers: worker_table_name(name),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that the lease table and its worker table exist, creating what is missing
    /// when `create` allows it.
    pub async fn ensure_both_exist(&self, create: bool) -> Result<(), LeaseTableError> {
        self.ensure_exists(create).await?;
        ensure_table(&self.client, &self.workers, WORKER_ID, create).await
    }

    /// Checks that the lease table exists (DescribeTable, which every role may call);
    /// when it does not and `create` allows it, creates it (on-demand billing, hash key
    /// `leaseKey`). Waits until it is active either way. The singleton lease needs no
    /// worker table: [`LeaseTable::ensure_both_exist`] is the shard consumer's.
    pub async fn ensure_exists(&self, create: bool) -> Result<(), LeaseTableError> {
        ensure_table(&self.client, &self.name, LEASE_KEY, create).await
    }

    /// Every lease, read with strong consistency (a stale view makes bad decisions).
    pub async fn list(&self) -> Result<Vec<Lease>, LeaseTableError> {
        let mut leases = self.scan_all(&self.name, LEASE_KEY, Lease::from_item).await?;
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(leases)
    }

    /// Every item of `table`, strongly consistent, page after page, each parsed by
    /// `parse`; an item that does not parse is an error naming its `key_attribute`.
    async fn scan_all<T>(
        &self,
        table: &str,
        key_attribute: &str,
        parse: impl Fn(&HashMap<String, AttributeValue>) -> Result<T, LeaseFormatError>,
    ) -> Result<Vec<T>, LeaseTableError> {
        let mut parsed = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("dynamodb:Scan", e))?;
            for item in output.items() {
                parsed.push(parse(item).map_err(|source| {
                    LeaseTableError::Format {
                        key: item
                            .get(key_attribute)
                            .and_then(|v| v.as_s().ok())
                            .cloned()
                            .unwrap_or_default(),
                        source,
                    }
                })?);
            }
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(parsed),
            }
        }
    }

    /// Reads one lease.
    pub async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseTableError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:GetItem", e))?;
        output
            .item()
            .map(|item| {
                Lease::from_item(item).map_err(|source| LeaseTableError::Format {
                    key: key.to_string(),
                    source,
                })
            })
            .transpose()
    }

    /// Writes a new lease unless one exists for the key; returns whether it wrote.
    pub async fn create(&self, lease: &Lease) -> Result<bool, LeaseTableError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(lease.to_item()))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", LEASE_KEY)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(AwsError::from_sdk("dynamodb:PutItem", error).into()),
        }
    }

    /// Takes `lease` (as last read) for `owner`; returns the new counter.
    pub async fn take(&self, lease: &Lease, owner: &str) -> Result<u64, LeaseTableError> {
        let new_counter = lease.counter + 1;
        let switches = if lease.owner.as_deref() == Some(owner) {
            lease.owner_switches_since_checkpoint
        } else {
            lease.owner_switches_since_checkpoint + 1
        };
        self.client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(&lease.key))
            .update_expression("SET #owner = :owner, #counter = :new, #switches = :switches")
            .condition_expression("#counter = :old")
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_names("#switches", OWNER_SWITCHES)
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":new", n(new_counter))
            .expression_attribute_values(":old", n(lease.counter))
            .expression_attribute_values(":switches", n(switches))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:UpdateItem", e))?;
        Ok(new_counter)
    }

    /// An update by the holder: applies only while `owner` holds the lease at
    /// `counter`, and bumps the counter (`:new`). `update` must set `#counter = :new`.
    fn holder_update(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        update: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(key))
            .update_expression(update)
            .condition_expression("#counter = :old AND #owner = :owner")
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":new", n(counter + 1))
            .expression_attribute_values(":old", n(counter))
    }

    /// Renews a held lease; returns the new counter. A conflict means the lease is lost.
    pub async fn renew(&self, key: &str, owner: &str, counter: u64) -> Result<u64, LeaseTableError> {
        self.holder_update(key, owner, counter, "SET #counter = :new")
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:UpdateItem", e))?;
        Ok(counter + 1)
    }

    /// Writes a checkpoint of a held lease; returns the new counter.
    pub async fn checkpoint(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        checkpoint: &Checkpoint,
    ) -> Result<u64, LeaseTableError> {
        let (text, subsequence) = checkpoint.to_kcl();
        self.holder_update(
            key,
            owner,
            counter,
            "SET #counter = :new, #checkpoint = :checkpoint, #sub = :sub, #switches = :zero",
        )
        .expression_attribute_names("#checkpoint", CHECKPOINT)
        .expression_attribute_names("#sub", CHECKPOINT_SUBSEQUENCE)
        .expression_attribute_names("#switches", OWNER_SWITCHES)
        .expression_attribute_values(":checkpoint", s(&text))
        .expression_attribute_values(":sub", n(subsequence))
        .expression_attribute_values(":zero", n(0))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("dynamodb:UpdateItem", e))?;
        Ok(counter + 1)
    }

    /// Hands a held lease to the worker `to` (which asked for it); returns the new counter.
    pub async fn hand_off(&self, key: &str, owner: &str, counter: u64, to: &str) -> Result<u64, LeaseTableError> {
        self.holder_update(
            key,
            owner,
            counter,
            "SET #counter = :new, #owner = :to, #switches = #switches + :one",
        )
        .expression_attribute_names("#switches", OWNER_SWITCHES)
        .expression_attribute_values(":to", s(to))
        .expression_attribute_values(":one", n(1))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("dynamodb:UpdateItem", e))?;
        Ok(counter + 1)
    }

    /// Gives a held lease up so another worker takes it at its next pass.
    pub async fn release(&self, key: &str, owner: &str, counter: u64) -> Result<(), LeaseTableError> {
        self.holder_update(key, owner, counter, "REMOVE #owner SET #counter = :new")
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    /// Every worker's entry in the worker table, read with strong consistency.
    pub async fn workers(&self) -> Result<Vec<WorkerEntry>, LeaseTableError> {
        let mut entries = self.scan_all(&self.workers, WORKER_ID, worker_from_item).await?;
        entries.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(entries)
    }

    /// Writes this worker's entry (a whole item: nobody else writes it).
    pub async fn heartbeat(&self, entry: &WorkerEntry) -> Result<(), LeaseTableError> {
        let mut item = HashMap::from([
            (WORKER_ID.to_string(), s(&entry.worker_id)),
            (HEARTBEAT.to_string(), n(entry.heartbeat)),
            (WORKER_LEASES.to_string(), n(entry.leases)),
            (LEASE_EPOCH.to_string(), n(entry.lease_epoch)),
        ]);
        if !entry.wants.is_empty() {
            item.insert(WANTS.to_string(), AttributeValue::Ss(entry.wants.clone()));
        }
        self.client
            .put_item()
            .table_name(&self.workers)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:PutItem", e))?;
        Ok(())
    }

    /// Deletes a worker's entry; with `heartbeat`, only while it still is that (a
    /// long-dead worker's, which must not be a worker that came back).
    pub async fn remove_worker(&self, worker_id: &str, heartbeat: Option<u64>) -> Result<(), LeaseTableError> {
        let mut request = self
            .client
            .delete_item()
            .table_name(&self.workers)
            .key(WORKER_ID, s(worker_id));
        if let Some(heartbeat) = heartbeat {
            request = request
                .condition_expression("#heartbeat = :heartbeat")
                .expression_attribute_names("#heartbeat", HEARTBEAT)
                .expression_attribute_values(":heartbeat", n(heartbeat));
        }
        deleted_or_gone(request.send().await)
    }

    /// Deletes a finished lease (only while it is still at SHARD_END).
    pub async fn delete_finished(&self, key: &str) -> Result<(), LeaseTableError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(key))
            .condition_expression("#checkpoint = :end")
            .expression_attribute_names("#checkpoint", CHECKPOINT)
            .expression_attribute_values(":end", s(Checkpoint::SHARD_END))
            .send()
            .await;
        deleted_or_gone(result)
    }
}

/// Reads a worker table item.
fn worker_from_item(item: &HashMap<String, AttributeValue>) -> Result<WorkerEntry, LeaseFormatError> {
    let number = |name: &'static str| match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse::<u64>().map_err(|_| LeaseFormatError::NotANumber(name)),
        None => Ok(0),
        Some(_) => Err(LeaseFormatError::NotANumber(name)),
    };
    let worker_id = match item.get(WORKER_ID) {
        Some(AttributeValue::S(id)) => id.clone(),
        _ => return Err(LeaseFormatError::Missing(WORKER_ID)),
    };
    let mut wants = match item.get(WANTS) {
        Some(AttributeValue::Ss(keys)) => keys.clone(),
        _ => Vec::new(),
    };
    wants.sort();
    Ok(WorkerEntry {
        worker_id,
        heartbeat: number(HEARTBEAT)?,
        leases: number(WORKER_LEASES)?,
        wants,
        lease_epoch: number(LEASE_EPOCH)?,
    })
}

/// Checks that a table exists; when it does not and `create` allows it, creates it
/// (on-demand billing, hash key `key`). Waits until it is active either way.
async fn ensure_table(client: &Client, name: &str, key: &str, create: bool) -> Result<(), LeaseTableError> {
    let described = client.describe_table().table_name(name).send().await;
    let missing = match &described {
        Err(error) => matches!(
            error.as_service_error(),
            Some(aws_sdk_dynamodb::operation::describe_table::DescribeTableError::ResourceNotFoundException(_))
        ),
        Ok(_) => false,
    };
    match described {
        Ok(_) => {}
        Err(_) if missing && !create => return Err(LeaseTableError::Missing(name.to_string())),
        Err(_) if missing => create_table(client, name, key).await?,
        Err(error) => return Err(AwsError::from_sdk("dynamodb:DescribeTable", error).into()),
    }
    for _ in 0..240 {
        let output = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:DescribeTable", e))?;
        if output.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(LeaseTableError::NotActive(name.to_string()))
}

/// A conditional delete whose condition no longer held: what it would have deleted is
/// gone already, or is no longer this caller's to delete. Either way, nothing to do.
fn deleted_or_gone<O>(
    result: Result<O, aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::delete_item::DeleteItemError>>,
) -> Result<(), LeaseTableError> {
    match result {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(())
        }
        Err(error) => Err(AwsError::from_sdk("dynamodb:DeleteItem", error).into()),
    }
}

async fn create_table(client: &Client, name: &str, key: &str) -> Result<(), LeaseTableError> {
    let invalid =
        |e: aws_sdk_dynamodb::error::BuildError| AwsError::new("dynamodb:CreateTable", ErrorKind::Fatal, e.to_string());
    let created = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(invalid)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .map_err(invalid)?,
        )
        .send()
        .await;
    match created {
        Ok(_) => {
            tracing::info!(table = %name, "table created");
            Ok(())
        }
        // Another worker created it first.
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(error) => Err(AwsError::from_sdk("dynamodb:CreateTable", error).into()),
    }
}

impl crate::lease_store::LeaseStore for LeaseTable {
    fn name(&self) -> &str {
        &self.name
    }
    fn ensure_exists(&self, create: bool) -> BoxFuture<'_, Result<(), LeaseTableError>> {
        Box::pin(LeaseTable::ensure_both_exist(self, create))
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<Lease>, LeaseTableError>> {
        Box::pin(LeaseTable::list(self))
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Lease>, LeaseTableError>> {
        Box::pin(LeaseTable::get(self, key))
    }
    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseTableError>> {
        Box::pin(LeaseTable::create(self, lease))
    }
    fn take<'a>(&'a self, lease: &'a Lease, owner: &'a str) -> BoxFuture<'a, Result<u64, LeaseTableError>> {
        Box::pin(LeaseTable::take(self, lease, owner))
    }
    fn checkpoint<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        counter: u64,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<u64, LeaseTableError>> {
        Box::pin(LeaseTable::checkpoint(self, key, owner, counter, checkpoint))
    }
    fn release<'a>(&'a self, key: &'a str, owner: &'a str, counter: u64) -> BoxFuture<'a, Result<(), LeaseTableError>> {
        Box::pin(LeaseTable::release(self, key, owner, counter))
    }
    fn hand_off<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        counter: u64,
        to: &'a str,
    ) -> BoxFuture<'a, Result<u64, LeaseTableError>> {
        Box::pin(LeaseTable::hand_off(self, key, owner, counter, to))
    }
    fn delete_finished<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LeaseTableError>> {
        Box::pin(LeaseTable::delete_finished(self, key))
    }
    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerEntry>, LeaseTableError>> {
        Box::pin(LeaseTable::workers(self))
    }
    fn heartbeat<'a>(&'a self, entry: &'a WorkerEntry) -> BoxFuture<'a, Result<(), LeaseTableError>> {
        Box::pin(LeaseTable::heartbeat(self, entry))
    }
    fn remove_worker<'a>(
        &'a self,
        worker_id: &'a str,
        heartbeat: Option<u64>,
    ) -> BoxFuture<'a, Result<(), LeaseTableError>> {
        Box::pin(LeaseTable::remove_worker(self, worker_id, heartbeat))
    }
}
