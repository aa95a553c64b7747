//! The events warehouse: schema ([`schema`]), the SQL of loads and maintenance
//! ([`sql`]), COPY manifests ([`manifest`]) and two back ends with the same semantics:
//! the Redshift Data API ([`redshift_data`]) for production and the PostgreSQL wire
//! protocol ([`postgres`]) for a Redshift endpoint over 5439 or a local PostgreSQL.
//!
//! A load is one transaction: stage the batch files, keep the first copy of each
//! event id, drop ids the table already holds within the batch's time window, insert,
//! record the files in `loaded_files`. Replaying a load inserts nothing.
//!
//! Every error has a kind ([`WarehouseError`] is [`Classified`]): PostgreSQL's by
//! SQLSTATE ([`sqlstate_kind`]), AWS calls' by error code and status. A load that one
//! batch file makes impossible names that file ([`WarehouseError::file`]), so a loader
//! can set it aside and load the rest. [`check_max_files`] says how many files one load
//! can take.

pub mod config;
pub mod manifest;
pub mod postgres;
pub mod privileges;
pub mod query;
pub mod redshift_data;
pub mod rows;
pub mod schema;
pub mod sql;

use event_model::FilePointer;
use pipeline_runtime::error::{AwsError, Classified, ErrorKind};

pub use config::WarehouseArgs;
pub use redshift_data::check_max_files;
pub use schema::Dialect;
pub use sql::Maintenance;

/// The files of one load.
#[derive(Debug, Clone)]
pub struct LoadBatch {
    pub bucket: String,
    pub files: Vec<FilePointer>,
    /// Where the batch's COPY manifest is (written before the load).
    pub manifest_key: String,
    /// Load the files again when `loaded_files` lists them as loaded before this time
    /// (ms), and record them as loaded now: a backfill into an `events` table truncated
    /// or rebuilt at or before then. The event-id dedupe still drops every row the
    /// table holds, and files loaded since (by the connector or an earlier, interrupted
    /// run of the same backfill) are skipped, so the backfill resumes where it stopped.
    pub reload_loaded_before: Option<i64>,
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
    /// Rows of forgotten players (`forgotten_clients`), dropped.
    pub rows_forgotten: u64,
    pub rows_inserted: u64,
}

impl LoadReport {
    /// Records what a committed load of `files` files did, from the rows it `staged`,
    /// the rows of forgotten players it dropped from them, the `distinct` event ids
    /// among the rest and the rows it `inserted`.
    pub fn count_rows(&mut self, files: usize, staged: i64, forgotten: i64, distinct: i64, inserted: i64) {
        self.files_loaded = files as u64;
        self.rows_staged = u64::try_from(staged).unwrap_or(0);
        self.rows_forgotten = u64::try_from(forgotten).unwrap_or(0);
        self.duplicates_in_batch = u64::try_from(staged - forgotten - distinct).unwrap_or(0);
        self.rows_inserted = u64::try_from(inserted).unwrap_or(0);
        self.duplicates_in_table = u64::try_from(distinct - inserted).unwrap_or(0);
    }

    /// Adds another load's counts (a backfill's total).
    pub fn add(&mut self, other: &LoadReport) {
        self.files_loaded += other.files_loaded;
        self.files_skipped += other.files_skipped;
        self.rows_staged += other.rows_staged;
        self.duplicates_in_batch += other.duplicates_in_batch;
        self.duplicates_in_table += other.duplicates_in_table;
        self.rows_forgotten += other.rows_forgotten;
        self.rows_inserted += other.rows_inserted;
    }
}

/// Players erased from the warehouse ([`Warehouse::forget`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Their events deleted from `events`.
    pub events_deleted: u64,
}

/// Refuses ids that are not client ids: they go into statements as literals.
fn check_client_ids(client_ids: &[String]) -> Result<(), WarehouseError> {
    match client_ids.iter().find(|id| !is_client_id(id)) {
        Some(bad) => Err(WarehouseError::Refused(format!(
            "{bad:?} is not a client id (a lower-case hyphenated UUID)"
        ))),
        None => Ok(()),
    }
}

/// Whether `client_id` is what the warehouse stores as one: a hyphenated UUID in lower
/// case (the event model's normal form).
pub fn is_client_id(client_id: &str) -> bool {
    client_id.len() == 36
        && client_id.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                matches!(b, b'0'..=b'9' | b'a'..=b'f')
            }
        })
}

/// Why the warehouse refused or failed. Every error has a kind ([`Classified`]):
/// retry throttled and transient ones, quarantine the input of a permanent one (see
/// [`WarehouseError::file`]), stop on a fatal one.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// A batch file could not be read or loaded: a missing or corrupt object or a bad
    /// line (permanent), or S3 failing to serve it (the S3 error's kind).
    #[error("batch file s3://{bucket}/{key}{}: {reason}", line.map(|n| format!(" line {n}")).unwrap_or_default())]
    File {
        bucket: String,
        key: String,
        /// The line the reason is about (1-based, counting every line of the file).
        line: Option<u64>,
        reason: String,
        kind: ErrorKind,
    },
    /// The warehouse refused or failed a statement. `message` carries the server's
    /// words and, from PostgreSQL, its severity and SQLSTATE.
    #[error("statement failed: {statement}: {message}")]
    Statement {
        statement: String,
        /// PostgreSQL's SQLSTATE; the Data API reports none.
        sqlstate: Option<String>,
        message: String,
        kind: ErrorKind,
    },
    /// An AWS call failed: the Data API running `context` (a statement), or S3
    /// writing `context` (an object).
    #[error("{context}: {}", error.explain())]
    Aws { context: String, error: AwsError },
    #[error("cannot connect to the warehouse: {message}")]
    Connect { message: String, kind: ErrorKind },
    /// A request the warehouse cannot take as it is configured (a load of more files
    /// than one transaction holds): fatal.
    #[error("{0}")]
    Refused(String),
    /// The schema is older than this build's: services never migrate it (they run as
    /// users that may not), `pipelinectl setup` does, as the schema's owner.
    #[error(
        "the warehouse schema is at version {found}, this build needs {needed}: run `pipelinectl setup` as the schema's owner (services never change the schema)"
    )]
    SchemaBehind { found: u32, needed: u32 },
    /// This user may not VACUUM the tables (it neither owns them nor, on PostgreSQL, is
    /// a member of their owner): its VACUUM would do nothing and say nothing.
    #[error(
        "the warehouse user may not VACUUM events and loaded_files (a VACUUM by a non-owner does nothing): run the cron-connector as the tables' owner, or as a member of the owning role (docs/deploy.md, \"Warehouse users\")"
    )]
    CannotMaintain,
}

/// The batch file a permanent failure is about (see [`WarehouseError::file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFault<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// The failing line, when one was found (1-based).
    pub line: Option<u64>,
    pub reason: &'a str,
}

impl Classified for WarehouseError {
    fn kind(&self) -> ErrorKind {
        match self {
            WarehouseError::File { kind, .. }
            | WarehouseError::Statement { kind, .. }
            | WarehouseError::Connect { kind, .. } => *kind,
            WarehouseError::Aws { error, .. } => error.kind,
            WarehouseError::Refused(_) | WarehouseError::SchemaBehind { .. } | WarehouseError::CannotMaintain => {
                ErrorKind::Fatal
            }
        }
    }
}

impl WarehouseError {
    /// The one batch file that makes this load impossible, when there is one: a
    /// missing or corrupt object, a line the warehouse cannot take, a key too long to
    /// be ours. The rest of the batch may load without it, so a caller quarantines
    /// (dead-letters) that file's pointer, after a retry window if it wants to ride out
    /// a file written late, and loads the others. `None` for every other failure,
    /// including an S3 outage on a file (not permanent) and a failure the warehouse
    /// could not attribute to a file (then nothing tells which file to drop).
    pub fn file(&self) -> Option<FileFault<'_>> {
        match self {
            WarehouseError::File {
                bucket,
                key,
                line,
                reason,
                kind: ErrorKind::Permanent,
            } => Some(FileFault {
                bucket,
                key,
                line: *line,
                reason,
            }),
            _ => None,
        }
    }

    /// A PostgreSQL error of `statement`, classified by its SQLSTATE.
    pub(crate) fn postgres(statement: &str, error: &tokio_postgres::Error) -> Self {
        let sqlstate = error.as_db_error().map(|db| db.code().code().to_string());
        // No server error: the connection closed or broke, which a new one may not.
        let kind = sqlstate.as_deref().map_or(ErrorKind::Transient, sqlstate_kind);
        WarehouseError::Statement {
            statement: short_statement(statement),
            sqlstate,
            message: postgres::ServerMessage(error).to_string(),
            kind,
        }
    }

    /// A statement that failed with `kind` and no SQLSTATE.
    pub(crate) fn statement(statement: &str, kind: ErrorKind, message: impl std::fmt::Display) -> Self {
        WarehouseError::Statement {
            statement: short_statement(statement),
            sqlstate: None,
            message: message.to_string(),
            kind,
        }
    }

    /// A failed Data API call about `statement`.
    pub(crate) fn data_api(statement: &str, error: AwsError) -> Self {
        WarehouseError::Aws {
            context: short_statement(statement),
            error,
        }
    }
}

/// Refuses a batch holding a key longer than any batch file's
/// ([`sql::MAX_KEY_BYTES`]): pointers come from a stream anyone with write access can
/// put records on, and the statements of a load are sized for keys of that bound.
fn check_keys(batch: &LoadBatch) -> Result<(), WarehouseError> {
    match batch.files.iter().find(|f| f.key.len() > sql::MAX_KEY_BYTES) {
        Some(file) => Err(WarehouseError::File {
            bucket: batch.bucket.clone(),
            key: file.key.clone(),
            line: None,
            reason: format!(
                "a key of {} bytes is not a batch file's (at most {})",
                file.key.len(),
                sql::MAX_KEY_BYTES
            ),
            kind: ErrorKind::Permanent,
        }),
        None => Ok(()),
    }
}

/// A statement as an error shows it: one line, the first 200 characters.
fn short_statement(statement: &str) -> String {
    let statement: String = statement.split_whitespace().collect::<Vec<_>>().join(" ");
    statement.chars().take(200).collect()
}

/// What a PostgreSQL (or Redshift wire protocol) SQLSTATE means to the caller.
///
/// Passing states (a dropped connection, a serialization failure or deadlock, a lock
/// not granted, a server restarting, short of memory or disk, a cancelled query) are
/// transient; bad data (class 22) and a broken constraint (23) make the input
/// permanently unloadable; a denied login or privilege, a missing table, column or
/// database, and every state not listed (a statement this crate got wrong) are fatal.
pub fn sqlstate_kind(sqlstate: &str) -> ErrorKind {
    match sqlstate {
        // serialization_failure, deadlock_detected, lock_not_available, admin_shutdown,
        // crash_shutdown, cannot_connect_now, query_canceled (statement_timeout).
        "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "57014" => ErrorKind::Transient,
        // insufficient_privilege, undefined_table, undefined_column, invalid_catalog_name.
        "42501" | "42P01" | "42703" | "3D000" => ErrorKind::Fatal,
        _ => match sqlstate.get(..2) {
            // connection_exception, insufficient_resources, system_error, internal_error.
            Some("08" | "53" | "58" | "XX") => ErrorKind::Transient,
            // invalid_authorization_specification.
            Some("28") => ErrorKind::Fatal,
            // data_exception, integrity_constraint_violation.
            Some("22" | "23") => ErrorKind::Permanent,
            _ => ErrorKind::Fatal,
        },
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

    /// The schema version this build needs.
    pub fn schema_needed(&self) -> u32 {
        u32::try_from(schema::migrations(self.dialect()).len()).unwrap_or(u32::MAX)
    }

    /// Checks, without changing anything, that the schema is at this build's version
    /// (a service's start: only `pipelinectl setup` migrates); returns the version.
    pub async fn check_schema(&self) -> Result<u32, WarehouseError> {
        let [exists, version] = privileges::schema_version();
        let needed = self.schema_needed();
        let found = if self.single(&exists).await? == 0 {
            0
        } else {
            u32::try_from(self.single(&version).await?).unwrap_or(0)
        };
        if found < needed {
            return Err(WarehouseError::SchemaBehind { found, needed });
        }
        Ok(found)
    }

    /// Checks that this user's VACUUM of the tables does its work.
    pub async fn check_can_maintain(&self) -> Result<(), WarehouseError> {
        match self.single(&privileges::can_maintain(self.dialect())).await? {
            2 => Ok(()),
            _ => Err(WarehouseError::CannotMaintain),
        }
    }

    /// Grants `user` its part (run as the owner, after [`Self::migrate`]).
    pub async fn grant(&self, grantee: privileges::Grantee, user: &str) -> Result<(), WarehouseError> {
        for statement in privileges::grants(self.dialect(), grantee, user) {
            self.execute(&statement).await?;
        }
        Ok(())
    }

    /// A query's one value.
    async fn single(&self, query: &query::Query) -> Result<i64, WarehouseError> {
        let rows = self.select(query).await?;
        match rows.as_slice() {
            [row] if row.len() == 1 => Ok(row[0]),
            _ => Err(WarehouseError::statement(
                &query.sql,
                ErrorKind::Fatal,
                format!("expected one value, got {rows:?}"),
            )),
        }
    }

    /// Loads a batch exactly once (see the crate docs).
    pub async fn load(&self, batch: &LoadBatch) -> Result<LoadReport, WarehouseError> {
        match self {
            Warehouse::Postgres(w) => w.load(batch).await,
            Warehouse::RedshiftData(w) => w.load(batch).await,
        }
    }

    /// Erases players: records each in `forgotten_clients` (every later load drops
    /// their rows) and deletes their events, in one transaction that loads wait for.
    /// At most [`sql::MAX_CLIENTS_PER_FORGET`] ids, each a client id ([`is_client_id`]).
    pub async fn forget(&self, client_ids: &[String]) -> Result<Forgotten, WarehouseError> {
        check_client_ids(client_ids)?;
        if client_ids.len() > sql::MAX_CLIENTS_PER_FORGET {
            return Err(WarehouseError::Refused(format!(
                "{} client ids in one call: at most {}",
                client_ids.len(),
                sql::MAX_CLIENTS_PER_FORGET
            )));
        }
        if client_ids.is_empty() {
            return Ok(Forgotten::default());
        }
        let statements = sql::forget_clients(self.dialect(), client_ids);
        // (Ids checked to be UUIDs, so their literals are plain.)
        let deleted = match self {
            Warehouse::Postgres(w) => w.transaction(&statements).await?,
            Warehouse::RedshiftData(w) => w.transaction(statements).await?,
        };
        Ok(Forgotten {
            events_deleted: u64::try_from(deleted).unwrap_or(0),
        })
    }

    /// How many events of `client_ids` (each checked as in [`Self::forget`]) the table
    /// holds: what a forget would delete.
    pub async fn count_events_of(&self, client_ids: &[String]) -> Result<u64, WarehouseError> {
        check_client_ids(client_ids)?;
        if client_ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = client_ids.iter().map(|id| sql::literal(id)).collect();
        let query = query::Query {
            sql: format!("SELECT COUNT(*) FROM events WHERE client_id IN ({})", ids.join(", ")),
            parameters: Vec::new(),
        };
        Ok(u64::try_from(self.single(&query).await?).unwrap_or(0))
    }

    /// Which of `keys` `loaded_files` lists (as loaded at or after `loaded_since`, ms,
    /// when given): what a load of them would skip.
    pub async fn loaded_files(
        &self,
        keys: &[String],
        loaded_since: Option<i64>,
    ) -> Result<Vec<String>, WarehouseError> {
        let queries = sql::loaded_among(keys, loaded_since);
        match self {
            Warehouse::Postgres(w) => w.select_strings(&queries).await,
            Warehouse::RedshiftData(w) => w.select_strings(queries).await,
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
        let rows = self.select(&heatmap.query(self.dialect())).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_a_lower_case_hyphenated_uuid() {
        assert!(is_client_id("0f8fad5b-d9cb-469f-a165-70867728950e"));
        for not in [
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "0f8fad5bd9cb469fa16570867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5b-d9cb-469f-a165-70867728950'",
            "",
        ] {
            assert!(!is_client_id(not), "{not}");
        }
    }

    #[test]
    fn sqlstates_are_classified_by_code_and_class() {
        for (sqlstate, kind) in [
            ("08006", ErrorKind::Transient),
            ("08001", ErrorKind::Transient),
            ("40001", ErrorKind::Transient),
            ("40P01", ErrorKind::Transient),
            ("55P03", ErrorKind::Transient),
            ("57P01", ErrorKind::Transient),
            ("57P02", ErrorKind::Transient),
            ("57P03", ErrorKind::Transient),
            ("57014", ErrorKind::Transient),
            ("53100", ErrorKind::Transient),
            ("53300", ErrorKind::Transient),
            ("58030", ErrorKind::Transient),
            ("XX000", ErrorKind::Transient),
            ("28P01", ErrorKind::Fatal),
            ("28000", ErrorKind::Fatal),
            ("42501", ErrorKind::Fatal),
            ("42P01", ErrorKind::Fatal),
            ("42703", ErrorKind::Fatal),
            ("3D000", ErrorKind::Fatal),
            ("22P02", ErrorKind::Permanent),
            ("22001", ErrorKind::Permanent),
            ("23505", ErrorKind::Permanent),
            // A syntax error, a statement in an aborted transaction: this crate's own
            // statements are wrong or misused, which no retry fixes.
            ("42601", ErrorKind::Fatal),
            ("25P02", ErrorKind::Fatal),
            ("57000", ErrorKind::Fatal),
            ("", ErrorKind::Fatal),
        ] {
            assert_eq!(sqlstate_kind(sqlstate), kind, "{sqlstate}");
        }
    }

    fn file_error(kind: ErrorKind, line: Option<u64>) -> WarehouseError {
        WarehouseError::File {
            bucket: "lake".into(),
            key: "events/2026/01/01/00/1-2.gzip".into(),
            line,
            reason: "not an event line".into(),
            kind,
        }
    }

    #[test]
    fn only_a_permanent_file_error_names_a_file_to_quarantine() {
        let bad_line = file_error(ErrorKind::Permanent, Some(7));
        assert_eq!(
            bad_line.file(),
            Some(FileFault {
                bucket: "lake",
                key: "events/2026/01/01/00/1-2.gzip",
                line: Some(7),
                reason: "not an event line",
            })
        );
        assert_eq!(bad_line.kind(), ErrorKind::Permanent);
        assert_eq!(
            bad_line.to_string(),
            "batch file s3://lake/events/2026/01/01/00/1-2.gzip line 7: not an event line"
        );
        assert_eq!(
            file_error(ErrorKind::Permanent, None).to_string(),
            "batch file s3://lake/events/2026/01/01/00/1-2.gzip: not an event line"
        );
        // S3 throttling or denying the read says nothing about the file.
        for kind in [ErrorKind::Throttled, ErrorKind::Transient, ErrorKind::Fatal] {
            let error = file_error(kind, None);
            assert_eq!((error.file(), error.kind()), (None, kind));
        }
        let statement =
            WarehouseError::statement("INSERT INTO events …", ErrorKind::Permanent, "ERROR 23505: duplicate");
        assert_eq!((statement.file(), statement.kind()), (None, ErrorKind::Permanent));
        assert_eq!(WarehouseError::Refused("too many".into()).kind(), ErrorKind::Fatal);
    }

    #[test]
    fn a_key_longer_than_a_batch_file_key_is_refused_as_that_file() {
        let pointer = |key: String| FilePointer {
            bucket: "lake".into(),
            key,
            records: 1,
            bytes: 1,
            shard: "shardId-0".into(),
            first_sequence: "1".into(),
            last_sequence: "1".into(),
            min_event_timestamp: 0,
            max_event_timestamp: 0,
        };
        let longest = "k".repeat(sql::MAX_KEY_BYTES);
        let too_long = "k".repeat(sql::MAX_KEY_BYTES + 1);
        let batch = |keys: &[&String]| LoadBatch {
            bucket: "lake".into(),
            files: keys.iter().map(|k| pointer((*k).clone())).collect(),
            manifest_key: "manifests/1-2.manifest".into(),
            reload_loaded_before: None,
        };
        assert!(check_keys(&batch(&[&longest])).is_ok());
        let error = check_keys(&batch(&[&longest, &too_long])).expect_err("refused");
        assert_eq!(error.file().map(|f| f.key), Some(too_long.as_str()));
    }
}
