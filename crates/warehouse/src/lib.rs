//! The events warehouse: schema ([`schema`]), the SQL of loads and maintenance
//! ([`sql`]), COPY manifests ([`manifest`]) and two back ends with the same semantics:
//! the Redshift Data API ([`redshift_data`]) for production and the PostgreSQL wire
//! protocol ([`postgres`]) for a Redshift endpoint over 5439 or a local PostgreSQL.
//!
//! A load is one transaction: stage the batch files, keep the first copy of each
//! event id, drop ids the table already holds within the batch's time window, insert,
//! record the files in `loaded_files`. Replaying a load inserts nothing.

pub mod config;
pub mod manifest;
pub mod postgres;
pub mod query;
pub mod redshift_data;
pub mod rows;
pub mod schema;
pub mod sql;

use event_model::FilePointer;

pub use config::WarehouseArgs;
pub use schema::Dialect;
pub use sql::Maintenance;

/// The files of one load.
#[derive(Debug, Clone)]
pub struct LoadBatch {
    pub bucket: String,
    pub files: Vec<FilePointer>,
    /// Where the batch's COPY manifest is (written before the load).
    pub manifest_key: String,
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub files_loaded: u64,
    /// Files already in `loaded_files` (a replayed pointer).
    pub files_skipped: u64,
    pub rows_staged: u64,
    /// Second and later copies of an event id inside this batch.
    pub duplicates_in_batch: u64,
    /// Event ids the table already had.
    pub duplicates_in_table: u64,
    pub rows_inserted: u64,
}

/// Why the warehouse refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("batch file s3://{bucket}/{key}: {reason}")]
    File {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("statement failed: {statement}: {message}")]
    Statement { statement: String, message: String },
    #[error("cannot connect to the warehouse: {0}")]
    Connect(String),
    #[error("{0}")]
    Api(String),
}

impl WarehouseError {
    pub(crate) fn statement(statement: &str, error: impl std::fmt::Display) -> Self {
        let statement: String = statement.split_whitespace().collect::<Vec<_>>().join(" ");
        let statement = statement.chars().take(200).collect();
        WarehouseError::Statement {
            statement,
            message: error.to_string(),
        }
    }
}

/// Either back end, chosen by configuration.
pub enum Warehouse {
    Postgres(postgres::PostgresWarehouse),
    RedshiftData(redshift_data::RedshiftDataWarehouse),
}

impl Warehouse {
    pub fn dialect(&self) -> Dialect {
        match self {
            Warehouse::Postgres(_) => Dialect::Postgres,
            Warehouse::RedshiftData(_) => Dialect::Redshift,
        }
    }

    /// Creates or upgrades the schema to the latest version.
    pub async fn migrate(&self) -> Result<u32, WarehouseError> {
        match self {
            Warehouse::Postgres(w) => w.migrate().await,
            Warehouse::RedshiftData(w) => w.migrate().await,
        }
    }

    /// Loads a batch exactly once (see the crate docs).
    pub async fn load(&self, batch: &LoadBatch) -> Result<LoadReport, WarehouseError> {
        match self {
            Warehouse::Postgres(w) => w.load(batch).await,
            Warehouse::RedshiftData(w) => w.load(batch).await,
        }
    }

    /// Runs a read-only query with bound parameters; every column is a BIGINT.
    pub async fn select(&self, query: &query::Query) -> Result<Vec<Vec<i64>>, WarehouseError> {
        match self {
            Warehouse::Postgres(w) => w.select(query).await,
            Warehouse::RedshiftData(w) => w.select(query).await,
        }
    }

    /// The heat map's non-empty cells.
    pub async fn heatmap(&self, heatmap: &query::HeatmapQuery) -> Result<Vec<query::CellCount>, WarehouseError> {
        let rows = self.select(&heatmap.query()).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| match row[..] {
                [column, row, events] => Some(query::CellCount { column, row, events }),
                _ => None,
            })
            .collect())
    }

    /// Runs one statement on its own, outside any transaction.
    pub async fn execute(&self, statement: &str) -> Result<(), WarehouseError> {
        match self {
            Warehouse::Postgres(w) => w.execute(statement).await,
            Warehouse::RedshiftData(w) => w.execute(statement).await,
        }
    }
}
