//! The Redshift Data API back end: no driver and no network path to the cluster, IAM
//! or a Secrets Manager secret for credentials, a provisioned cluster or a serverless
//! workgroup. A load is one BatchExecuteStatement (one transaction); its status is
//! polled with backoff, and a failure names the statement and the server's message,
//! and, when COPY failed on a line of a batch file, that file and line.
//!
//! The Data API takes statements of at most [`sql::MAX_STATEMENT_CHARS`] characters
//! and batches of at most [`MAX_BATCH_STATEMENTS`]: statements that list files are
//! split to fit, and [`check_max_files`] says how many files one load can take.

use std::time::Duration;

use pipeline_runtime::backoff::Backoff;
use pipeline_runtime::error::{Classified, ErrorKind};

use crate::manifest::{self, Manifest};
use crate::query::Query;
use crate::schema::{self, Dialect};
use crate::{LoadBatch, LoadReport, WarehouseError, sql};

mod data_api;

use data_api::{DataApi, Ended};
pub use data_api::{IAM_ACTIONS, Target};

/// BatchExecuteStatement runs at most this many statements.
pub const MAX_BATCH_STATEMENTS: usize = 40;

/// The statements of a load besides those recording its files (see [`load_statements`]).
const LOAD_FIXED_STATEMENTS: usize = 7;

/// The most files one load can take: its statements, with one `record_files` INSERT
/// per [`sql::files_per_record_statement`] files (and in a reload one
/// `record_reloaded` UPDATE for as many, which takes more keys), fit in one
/// BatchExecuteStatement.
pub const fn max_files_per_load(reload: bool) -> usize {
    let per_chunk = if reload { 2 } else { 1 };
    (MAX_BATCH_STATEMENTS - LOAD_FIXED_STATEMENTS) / per_chunk * sql::files_per_record_statement(Dialect::Redshift)
}

/// Whether a load (`reload`: a reload) of `max_files` files fits in one
/// BatchExecuteStatement (one transaction); the message says how many do. A loader
/// checks its batch size with this at start: the statements are sized for the longest
/// key a batch file can have, so a size that passes here fits whatever keys come.
pub fn check_max_files(max_files: usize, reload: bool) -> Result<(), String> {
    let most = max_files_per_load(reload);
    if max_files <= most {
        return Ok(());
    }
    Err(format!(
        "a {} of {max_files} files does not fit one transaction: the Redshift Data API runs at most \
         {MAX_BATCH_STATEMENTS} statements in one BatchExecuteStatement, and at most {most} files fit",
        if reload { "reload" } else { "load" }
    ))
}

pub struct RedshiftDataWarehouse {
    api: DataApi,
    s3: aws_sdk_s3::Client,
    /// The IAM role Redshift assumes to read the batch files.
    copy_role_arn: String,
    /// How long one statement may run before it is reported as failed.
    timeout: Duration,
}

/// The statements of one load, in transaction order, and the index of each one whose
/// result the report needs.
pub struct LoadStatements {
    pub sqls: Vec<String>,
    pub copy: usize,
    pub forgotten: usize,
    pub counts: usize,
    pub insert: usize,
}

/// The load transaction for files listed in `manifest_url`: `record` are recorded as
/// loaded, `reloaded` (loaded before, a reload) as loaded again now.
pub fn load_statements(
    manifest_url: &str,
    jsonpaths_url: &str,
    copy_role_arn: &str,
    record: &[(String, u64)],
    reloaded: &[String],
) -> LoadStatements {
    let mut sqls = vec![
        sql::lock_loaded_files(Dialect::Redshift).to_string(),
        sql::create_staging(Dialect::Redshift).to_string(),
        sql::copy_from_manifest(manifest_url, jsonpaths_url, copy_role_arn),
        sql::DROP_FORGOTTEN.to_string(),
        sql::STAGED_COUNTS.to_string(),
        sql::insert_deduplicated(),
    ];
    sqls.extend(sql::record_reloaded(Dialect::Redshift, reloaded));
    sqls.extend(sql::record_files(Dialect::Redshift, record));
    sqls.push(sql::DROP_STAGING.to_string());
    LoadStatements {
        sqls,
        copy: 2,
        forgotten: 3,
        counts: 4,
        insert: 5,
    }
}

/// What SYS_LOAD_ERROR_DETAIL says about a failed COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoadErrorDetail {
    /// `s3://bucket/key`.
    file_name: String,
    line_number: Option<u64>,
    error_message: String,
}

impl RedshiftDataWarehouse {
    pub fn new(
        client: aws_sdk_redshiftdata::Client,
        target: Target,
        s3: aws_sdk_s3::Client,
        copy_role_arn: &str,
    ) -> Self {
        Self {
            api: DataApi::new(client, target),
            s3,
            copy_role_arn: copy_role_arn.to_string(),
            timeout: Duration::from_secs(900),
        }
    }

    /// Every statement cancelled past `timeout` instead of 900 s.
    pub fn with_statement_timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// Runs a read-only query; every column is a BIGINT.
    pub async fn select(&self, query: &Query) -> Result<Vec<Vec<i64>>, WarehouseError> {
        let id = self.api.submit(self.api.query_request(query), &query.sql).await?;
        self.wait(&id, &query.sql).await?.into_result()?;
        let rows = self.api.results(&id, &query.sql).await?;
        Ok(rows
            .iter()
            .map(|row| row.iter().map(|f| f.as_long_value().copied().unwrap_or(0)).collect())
            .collect())
    }

    /// Runs statements as one transaction and waits for the end; returns the statement id.
    async fn run(&self, sqls: Vec<String>) -> Result<String, WarehouseError> {
        let first = sqls.first().cloned().unwrap_or_default();
        let id = self.api.submit_batch(sqls).await?;
        self.wait(&id, &first).await?.into_result()?;
        Ok(id)
    }

    /// Runs statements as one transaction; answers the last one's row count.
    pub async fn transaction(&self, sqls: Vec<String>) -> Result<i64, WarehouseError> {
        let last = sqls.len().saturating_sub(1);
        let statement = sqls.last().cloned().unwrap_or_default();
        let id = self.run(sqls).await?;
        self.rows_of(&id, last, &statement).await
    }

    /// Polls statement `id` (about `statement`, for errors) until it ends; cancels it
    /// past the timeout.
    async fn wait(&self, id: &str, statement: &str) -> Result<Ended, WarehouseError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.api.describe(id, statement).await {
                Ok(described) => {
                    if let Some(ended) = described.ended {
                        return Ok(ended);
                    }
                    if tokio::time::Instant::now() > deadline {
                        self.api.cancel(id).await;
                        return Err(WarehouseError::statement(
                            statement,
                            ErrorKind::Transient,
                            format!("statement {id} ran past {:?}; cancelled", self.timeout),
                        ));
                    }
                }
                // The statement runs on whether or not we can see it: a throttled
                // look must not give up on it (and start it again) while it may commit.
                Err(error) if error.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%error, statement_id = id, "cannot see the statement yet");
                }
                Err(error) => return Err(WarehouseError::data_api(statement, error)),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Rows affected by sub-statement `index` of batch `id`.
    async fn rows_of(&self, id: &str, index: usize, statement: &str) -> Result<i64, WarehouseError> {
        let described = (self.api.describe(id, statement).await).map_err(|e| WarehouseError::data_api(statement, e))?;
        Ok(described.sub_statement_rows.get(index).copied().unwrap_or(0))
    }

    /// The first row of a SELECT sub-statement, as numbers.
    async fn numbers_of(&self, id: &str, index: usize, statement: &str) -> Result<Vec<i64>, WarehouseError> {
        let rows = self.api.results(&format!("{id}:{}", index + 1), statement).await?;
        Ok(rows
            .first()
            .map(|row| row.iter().map(|f| f.as_long_value().copied().unwrap_or(0)).collect())
            .unwrap_or_default())
    }

    /// The first column of every row of the SELECTs `sqls`, run as one batch.
    /// (In batches of at most [`MAX_BATCH_STATEMENTS`], which is all one call runs.)
    pub(crate) async fn select_strings(&self, sqls: Vec<String>) -> Result<Vec<String>, WarehouseError> {
        let mut strings = Vec::new();
        for batch in sqls.chunks(MAX_BATCH_STATEMENTS) {
            let id = self.run(batch.to_vec()).await?;
            for (index, statement) in batch.iter().enumerate() {
                let rows = self.api.results(&format!("{id}:{}", index + 1), statement).await?;
                strings.extend(
                    rows.iter()
                        .filter_map(|row| row.first().and_then(|f| f.as_string_value().ok()).cloned()),
                );
            }
        }
        Ok(strings)
    }

    pub async fn migrate(&self) -> Result<u32, WarehouseError> {
        self.run(vec![schema::version_table().to_string()]).await?;
        let migrations = schema::migrations(Dialect::Redshift);
        let applied = self
            .select_strings(vec![
                "SELECT CAST(COALESCE(MAX(version), 0) AS VARCHAR) FROM schema_version".into(),
            ])
            .await?;
        let current: usize = applied.first().and_then(|v| v.parse().ok()).unwrap_or(0);
        for (index, statements) in migrations.iter().enumerate().skip(current) {
            let mut sqls = statements.clone();
            sqls.push(format!(
                "INSERT INTO schema_version (version, applied_at) VALUES ({}, {})",
                index + 1,
                sql::now_utc(Dialect::Redshift)
            ));
            self.run(sqls).await?;
        }
        Ok(u32::try_from(migrations.len()).unwrap_or(u32::MAX))
    }

    /// Runs one statement on its own with ExecuteStatement, outside any transaction
    /// (a batch is one, and VACUUM refuses to run inside one), and waits for it.
    pub async fn execute(&self, statement: &str) -> Result<(), WarehouseError> {
        let id = self.api.submit(self.api.execute_request(statement), statement).await?;
        self.wait(&id, statement).await?.into_result()
    }

    pub async fn load(&self, batch: &LoadBatch) -> Result<LoadReport, WarehouseError> {
        crate::check_keys(batch)?;
        let reload = batch.reload_loaded_before.is_some();
        check_max_files(batch.files.len(), reload).map_err(WarehouseError::Refused)?;
        let keys: Vec<String> = batch.files.iter().map(|f| f.key.clone()).collect();
        // Skipping loaded files here saves work; the event-id dedupe inside the
        // transaction is what keeps a racing replay from inserting twice.
        let loaded = self
            .select_strings(sql::loaded_among(&keys, batch.reload_loaded_before))
            .await?;
        let todo: Vec<_> = batch
            .files
            .iter()
            .filter(|f| !loaded.contains(&f.key))
            .cloned()
            .collect();
        let mut report = LoadReport {
            files_skipped: (batch.files.len() - todo.len()) as u64,
            ..LoadReport::default()
        };
        if todo.is_empty() {
            return Ok(report);
        }
        manifest::write(
            &self.s3,
            &batch.bucket,
            &batch.manifest_key,
            &Manifest::for_files(&todo),
        )
        .await?;
        manifest::write_jsonpaths(&self.s3, &batch.bucket).await?;
        let files: Vec<(String, u64)> = todo.iter().map(|f| (f.key.clone(), f.records)).collect();
        let reloaded = if reload {
            let keys: Vec<String> = files.iter().map(|(key, _)| key.clone()).collect();
            self.select_strings(sql::loaded_among(&keys, None)).await?
        } else {
            Vec::new()
        };
        let reloaded_keys: std::collections::HashSet<&String> = reloaded.iter().collect();
        let record: Vec<(String, u64)> = files
            .iter()
            .filter(|(key, _)| !reloaded_keys.contains(key))
            .cloned()
            .collect();
        let statements = load_statements(
            &format!("s3://{}/{}", batch.bucket, batch.manifest_key),
            &format!("s3://{}/{}", batch.bucket, manifest::JSONPATHS_KEY),
            &self.copy_role_arn,
            &record,
            &reloaded,
        );
        let copy = statements.sqls[statements.copy].clone();
        let id = self.api.submit_batch(statements.sqls).await?;
        match self.wait(&id, &copy).await? {
            Ended::Finished => {}
            Ended::Failed {
                statement,
                message,
                sub_statement: Some((index, query_id)),
            } if index == statements.copy => {
                let failed = WarehouseError::statement(&statement, ErrorKind::Transient, message);
                return Err(self.copy_failure(query_id, batch, &files, failed).await);
            }
            failed => failed.into_result()?,
        }
        let staged = self.rows_of(&id, statements.copy, &copy).await?;
        let forgotten = self.rows_of(&id, statements.forgotten, sql::DROP_FORGOTTEN).await?;
        let counts = self.numbers_of(&id, statements.counts, sql::STAGED_COUNTS).await?;
        let distinct = counts.get(1).copied().unwrap_or(staged - forgotten);
        let inserted = self.rows_of(&id, statements.insert, &copy).await?;
        report.count_rows(todo.len(), staged, forgotten, distinct, inserted);
        Ok(report)
    }

    /// The error of a load whose COPY (Redshift query `query_id`) failed: the batch
    /// file and line SYS_LOAD_ERROR_DETAIL names, as a permanent error of that file,
    /// or `failed` (transient) when it names none of the load's files.
    async fn copy_failure(
        &self,
        query_id: i64,
        batch: &LoadBatch,
        files: &[(String, u64)],
        failed: WarehouseError,
    ) -> WarehouseError {
        let detail = match self.load_error_detail(query_id).await {
            Ok(detail) => detail,
            // Without the permission to ask, no load error can ever be attributed.
            Err(error) if error.kind() == ErrorKind::Fatal => return error,
            Err(error) => {
                tracing::warn!(%error, query_id, "cannot read the COPY's load errors");
                None
            }
        };
        // The detail is written as COPY fails; one not written yet is found by the
        // next attempt, which fails the same way.
        let Some(detail) = detail else {
            return failed;
        };
        match attributed_key(&detail.file_name, &batch.bucket, files) {
            Some(key) => WarehouseError::File {
                bucket: batch.bucket.clone(),
                key: key.to_string(),
                line: detail.line_number,
                reason: format!("COPY: {}", detail.error_message),
                kind: ErrorKind::Permanent,
            },
            None => failed,
        }
    }

    /// The first row SYS_LOAD_ERROR_DETAIL holds for Redshift query `query_id`.
    async fn load_error_detail(&self, query_id: i64) -> Result<Option<LoadErrorDetail>, WarehouseError> {
        let query = sql::load_error_detail(query_id);
        let id = self.api.submit(self.api.query_request(&query), &query.sql).await?;
        self.wait(&id, &query.sql).await?.into_result()?;
        let rows = self.api.results(&id, &query.sql).await?;
        Ok(rows.first().and_then(|row| match &row[..] {
            [file_name, line_number, error_message] => Some(LoadErrorDetail {
                file_name: file_name.as_string_value().ok()?.trim_end().to_string(),
                line_number: line_number.as_long_value().ok().and_then(|n| u64::try_from(*n).ok()),
                error_message: error_message
                    .as_string_value()
                    .map(|m| m.trim_end().to_string())
                    .unwrap_or_default(),
            }),
            _ => None,
        }))
    }
}

/// The key of one of `files` that `file_name` (`s3://bucket/key`, as COPY names the
/// files it reads) is.
fn attributed_key<'a>(file_name: &str, bucket: &str, files: &'a [(String, u64)]) -> Option<&'a str> {
    let key = file_name
        .strip_prefix("s3://")?
        .strip_prefix(bucket)?
        .strip_prefix('/')?;
    files.iter().map(|(k, _)| k.as_str()).find(|k| *k == key)
}

#[cfg(test)]
mod tests {
    use pipeline_runtime::error::Classified;

    use super::*;

    fn warehouse(target: Target) -> RedshiftDataWarehouse {
        let config = aws_sdk_redshiftdata::Config::builder()
            .behavior_version(aws_sdk_redshiftdata::config::BehaviorVersion::latest())
            .region(aws_sdk_redshiftdata::config::Region::new("eu-west-1"))
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("eu-west-1"))
                .build(),
        );
        RedshiftDataWarehouse::new(
            aws_sdk_redshiftdata::Client::from_conf(config),
            target,
            s3,
            "arn:aws:iam::1:role/copy",
        )
    }

    /// The named parameters an ExecuteStatement request sends.
    fn parameters(
        input: &aws_sdk_redshiftdata::operation::execute_statement::builders::ExecuteStatementInputBuilder,
    ) -> Vec<(&str, &str)> {
        input
            .get_parameters()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|p| (p.name(), p.value()))
            .collect()
    }

    #[test]
    fn a_load_is_one_batch_in_transaction_order() {
        let statements = load_statements("s3://b/m", "s3://b/j", "arn:role", &[("events/k.gzip".into(), 7)], &[]);
        assert_eq!(statements.sqls[0], "LOCK loaded_files");
        assert_eq!(statements.sqls[1], "CREATE TEMP TABLE staging (LIKE events)");
        assert!(statements.sqls[statements.copy].starts_with("COPY staging ("));
        assert!(statements.sqls[statements.copy].contains("MANIFEST GZIP JSON 's3://b/j' TIMEFORMAT 'epochmillisecs'"));
        assert_eq!(statements.sqls[statements.forgotten], sql::DROP_FORGOTTEN);
        assert!(
            statements.forgotten < statements.counts,
            "forgotten players' rows are never counted as staged"
        );
        assert_eq!(statements.sqls[statements.counts], sql::STAGED_COUNTS);
        assert!(statements.sqls[statements.insert].starts_with("INSERT INTO events"));
        assert_eq!(
            statements.sqls[6],
            "INSERT INTO loaded_files (file_key, row_count, loaded_at) VALUES ('events/k.gzip', 7, GETDATE())"
        );
        assert_eq!(statements.sqls.last().map(String::as_str), Some("DROP TABLE staging"));
        let reload = load_statements(
            "s3://b/m",
            "s3://b/j",
            "arn:role",
            &[("events/new.gzip".into(), 7)],
            &["events/k.gzip".into()],
        );
        assert_eq!(
            reload.sqls[6..8],
            [
                "UPDATE loaded_files SET loaded_at = GETDATE() WHERE file_key IN ('events/k.gzip')".to_string(),
                "INSERT INTO loaded_files (file_key, row_count, loaded_at) VALUES ('events/new.gzip', 7, GETDATE())"
                    .to_string()
            ],
            "a reload records its files again, in the same transaction"
        );
    }

    #[test]
    fn a_query_sends_its_values_as_named_parameters() {
        let serverless = warehouse(Target::Workgroup {
            workgroup: "wg".into(),
            database: "games".into(),
            secret_arn: None,
        });
        let query = crate::query::HeatmapQuery {
            level_id: "it's".into(),
            event_type: "player_death".into(),
            since_ms: 5,
            until_ms: 6,
            columns: 10,
            rows: 7,
            width: 1000.0,
            height: 700.5,
            filters: Vec::new(),
        }
        .query(Dialect::Redshift);
        let request = serverless.api.query_request(&query);
        let input = request.as_input();
        assert_eq!(input.get_sql().as_deref(), Some(query.sql.as_str()));
        assert_eq!(input.get_workgroup_name().as_deref(), Some("wg"));
        let sent = parameters(input);
        assert!(sent.contains(&("level_id", "it's")));
        assert!(sent.contains(&("height", "700.5")));
        assert!(sent.contains(&("since", "1970-01-01 00:00:00.005")));
        assert_eq!(sent.len(), query.parameters.len());
    }

    #[test]
    fn requests_name_the_cluster_or_the_workgroup() {
        let cluster = warehouse(Target::Cluster {
            cluster_id: "analytics".into(),
            database: "games".into(),
            db_user: Some("loader".into()),
            secret_arn: None,
        });
        let request = cluster.api.batch_request(vec!["SELECT 1".into()]);
        let input = request.as_input();
        assert_eq!(input.get_cluster_identifier().as_deref(), Some("analytics"));
        assert_eq!(input.get_database().as_deref(), Some("games"));
        assert_eq!(input.get_db_user().as_deref(), Some("loader"));
        assert_eq!(input.get_workgroup_name(), &None);
        assert_eq!(input.get_sqls().as_deref(), Some(&["SELECT 1".to_string()][..]));

        let serverless = warehouse(Target::Workgroup {
            workgroup: "wg".into(),
            database: "games".into(),
            secret_arn: Some("arn:aws:secretsmanager:eu-west-1:1:secret:x".into()),
        });
        let request = serverless.api.batch_request(vec!["SELECT 1".into()]);
        let input = request.as_input();
        assert_eq!(input.get_workgroup_name().as_deref(), Some("wg"));
        assert_eq!(input.get_cluster_identifier(), &None);
        assert!(
            input
                .get_secret_arn()
                .as_deref()
                .is_some_and(|a| a.contains("secretsmanager"))
        );
    }
    #[test]
    fn maintenance_runs_each_statement_on_its_own() {
        let cluster = warehouse(Target::Cluster {
            cluster_id: "analytics".into(),
            database: "games".into(),
            db_user: Some("loader".into()),
            secret_arn: None,
        });
        // An ExecuteStatement, not a batch: a batch is a transaction, which VACUUM refuses.
        let request = cluster.api.execute_request("VACUUM DELETE ONLY events");
        let input = request.as_input();
        assert_eq!(input.get_sql().as_deref(), Some("VACUUM DELETE ONLY events"));
        assert_eq!(input.get_parameters(), &None);
        assert_eq!(input.get_cluster_identifier().as_deref(), Some("analytics"));
        assert_eq!(input.get_database().as_deref(), Some("games"));
        assert_eq!(input.get_db_user().as_deref(), Some("loader"));
        assert_eq!(input.get_workgroup_name(), &None);
    }

    #[test]
    fn load_errors_are_asked_for_by_the_copys_query_id() {
        let serverless = warehouse(Target::Workgroup {
            workgroup: "wg".into(),
            database: "games".into(),
            secret_arn: None,
        });
        let request = serverless.api.query_request(&sql::load_error_detail(1_234_567));
        let input = request.as_input();
        assert_eq!(
            input.get_sql().as_deref(),
            Some(
                "SELECT TRIM(file_name), line_number, TRIM(error_message) FROM sys_load_error_detail \
                 WHERE query_id = CAST(:query_id AS BIGINT) ORDER BY file_name, line_number LIMIT 1"
            )
        );
        let sent = parameters(input);
        assert_eq!(sent, vec![("query_id", "1234567")]);
        assert_eq!(input.get_workgroup_name().as_deref(), Some("wg"));
    }

    #[test]
    fn copy_names_a_file_of_the_load_or_none() {
        let files = vec![
            ("events/2026/01/01/00/1-2.gzip".to_string(), 2),
            ("events/2026/01/01/00/3-4.gzip".to_string(), 2),
        ];
        assert_eq!(
            attributed_key("s3://lake/events/2026/01/01/00/3-4.gzip", "lake", &files),
            Some("events/2026/01/01/00/3-4.gzip")
        );
        // The manifest, another bucket, a key the load does not hold: nothing to quarantine.
        assert_eq!(attributed_key("s3://lake/manifests/1-4.manifest", "lake", &files), None);
        assert_eq!(
            attributed_key("s3://other/events/2026/01/01/00/3-4.gzip", "lake", &files),
            None
        );
        assert_eq!(
            attributed_key("s3://lakehouse/events/2026/01/01/00/3-4.gzip", "lake", &files),
            None
        );
        assert_eq!(attributed_key("events/2026/01/01/00/3-4.gzip", "lake", &files), None);
    }

    #[test]
    fn a_failed_statement_without_a_file_is_transient() {
        let failed = Ended::Failed {
            statement: "VACUUM DELETE ONLY events".into(),
            message: "ERROR: permission denied".into(),
            sub_statement: None,
        };
        let error = failed.into_result().expect_err("failed");
        assert_eq!((error.kind(), error.file()), (ErrorKind::Transient, None));
        assert_eq!(
            error.to_string(),
            "statement failed: VACUUM DELETE ONLY events: ERROR: permission denied"
        );
    }

    /// The longest keys the layout makes (56-digit sequence numbers), each different.
    fn longest_keys(n: usize) -> Vec<(String, u64)> {
        (0..n)
            .map(|i| {
                let first = format!("{i:0>56}");
                (format!("events/-9999/12/31/23/{first}-{first}.gzip"), u64::MAX)
            })
            .collect()
    }

    #[test]
    fn a_ten_thousand_file_load_fits_one_batch_execute_statement() {
        assert!(sql::KEYS_PER_LOADED_QUERY >= sql::files_per_record_statement(Dialect::Redshift));
        for reload in [false, true] {
            let most = max_files_per_load(reload);
            for n in [1, 5_000, most] {
                let files = longest_keys(n);
                assert!(files.iter().all(|(k, _)| k.len() == sql::MAX_KEY_BYTES));
                let keys: Vec<String> = files.iter().map(|(k, _)| k.clone()).collect();
                let reloaded = if reload { &keys[..] } else { &[][..] };
                let statements = load_statements("s3://b/manifests/m", "s3://b/j", "arn:role", &files, reloaded);
                assert!(
                    statements.sqls.len() <= MAX_BATCH_STATEMENTS,
                    "{n}: {}",
                    statements.sqls.len()
                );
                for statement in &statements.sqls {
                    assert!(statement.chars().count() < sql::MAX_STATEMENT_CHARS, "{n}");
                }
                let keys: Vec<String> = files.into_iter().map(|(k, _)| k).collect();
                assert!(sql::loaded_among(&keys, None).len() <= MAX_BATCH_STATEMENTS, "{n}");
                assert_eq!(check_max_files(n, reload), Ok(()));
            }
            let refused = check_max_files(most + 1, reload).expect_err("too many");
            assert!(refused.ends_with(&format!("at most {most} files fit")), "{refused}");
        }
        assert!(max_files_per_load(false) >= 10_000, "{}", max_files_per_load(false));
    }
}
