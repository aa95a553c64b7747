//! The PostgreSQL wire-protocol back end. PostgreSQL cannot COPY from S3, so the load
//! streams each batch file from S3, gunzips it, and feeds `COPY … FROM STDIN`, inside
//! the load's transaction.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use pipeline_runtime::error::ErrorKind;
use pipeline_runtime::s3::{self, GetError};
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::query::{Query, Value};
use crate::schema::{self, Dialect};
use crate::{LoadBatch, LoadReport, WarehouseError, rows, sql};

/// Longest a connection may take to open (TCP, TLS, login).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long past its statement timeout a server may stay silent before the client
/// stops waiting (the server's cancel and its error take a moment to arrive).
const SILENCE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Rows are sent to the server in chunks of about this size.
const COPY_CHUNK: usize = 1 << 20;
/// Batch files fetched ahead of the one being copied (memory: that many gunzipped files).
const PREFETCH_FILES: usize = 3;

/// Whether to use TLS (a real Redshift endpoint) or not (a local PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    Disable,
    Require,
}

pub struct PostgresWarehouse {
    url: String,
    tls: Tls,
    s3: aws_sdk_s3::Client,
    /// One connection, reopened after a failure.
    client: Mutex<Option<Arc<Client>>>,
    /// One load at a time on the connection (a transaction owns it while it runs).
    loading: Mutex<()>,
    /// `statement_timeout` of every session: the server cancels a statement past it,
    /// so a caller that stops waiting leaves nothing running behind it.
    statement_timeout: Option<std::time::Duration>,
    /// Set while a transaction runs. Still set when the next one starts means the
    /// last was abandoned mid-way (its future dropped, or a panic) with the
    /// transaction open on the connection.
    in_transaction: AtomicBool,
}

impl PostgresWarehouse {
    pub fn new(url: &str, tls: Tls, s3: aws_sdk_s3::Client) -> Self {
        Self {
            url: url.to_string(),
            tls,
            s3,
            client: Mutex::new(None),
            loading: Mutex::new(()),
            statement_timeout: None,
            in_transaction: AtomicBool::new(false),
        }
    }

    /// Every statement cancelled by the server past `timeout` (`None`: the server's own).
    pub fn with_statement_timeout(self, timeout: Option<std::time::Duration>) -> Self {
        Self {
            statement_timeout: timeout,
            ..self
        }
    }

    async fn connect(&self) -> Result<Client, WarehouseError> {
        let config = self
            .url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| WarehouseError::Connect {
                message: format!("WAREHOUSE_URL: {e}"),
                kind: ErrorKind::Fatal,
            })?;
        match self.tls {
            Tls::Disable => {
                let (client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::warn!(%error, "warehouse connection closed");
                    }
                });
                Ok(client)
            }
            Tls::Require => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                let tls_config =
                    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_safe_default_protocol_versions()
                        .map_err(|e| WarehouseError::Connect {
                            message: e.to_string(),
                            kind: ErrorKind::Fatal,
                        })?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config);
                let (client, connection) = config.connect(tls).await.map_err(connect_error)?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::warn!(%error, "warehouse connection closed");
                    }
                });
                Ok(client)
            }
        }
    }

    /// The open connection, or a new one.
    async fn client(&self) -> Result<Arc<Client>, WarehouseError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        // A server that takes the connection and never answers would hold this lock,
        // and every caller behind it, for good.
        let bound = self.silence_bound().min(CONNECT_TIMEOUT);
        let client = match tokio::time::timeout(bound, self.connect()).await {
            Ok(client) => Arc::new(client?),
            Err(_) => {
                return Err(WarehouseError::Connect {
                    message: format!("no answer within {} ms while connecting", bound.as_millis()),
                    kind: ErrorKind::Transient,
                });
            }
        };
        // "already exists, skipping" and similar notices are not news worth a log line.
        if let Err(error) = client.batch_execute("SET client_min_messages = warning").await {
            tracing::debug!(%error, "the warehouse keeps sending notices");
        }
        if let Some(timeout) = self.statement_timeout {
            let set = format!("SET statement_timeout = {}", timeout.as_millis());
            client
                .batch_execute(&set)
                .await
                .map_err(|e| WarehouseError::postgres(&set, &e))?;
        }
        *slot = Some(client.clone());
        Ok(client)
    }

    /// How long the server may stay silent before the client gives up on it: past the
    /// statement timeout, it would have cancelled the statement and said so.
    fn silence_bound(&self) -> std::time::Duration {
        self.statement_timeout
            .map_or(CONNECT_TIMEOUT, |timeout| timeout + SILENCE_GRACE)
    }

    /// The connection for work under `loading`: a fresh one when the last transaction
    /// was abandoned, since the server still holds it open on the old connection
    /// (closing that connection rolls it back).
    async fn session(&self) -> Result<Arc<Client>, WarehouseError> {
        if self.in_transaction.swap(false, Ordering::SeqCst) {
            tracing::warn!("the last warehouse transaction was abandoned; reconnecting");
            *self.client.lock().await = None;
        }
        self.client().await
    }

    /// [`Self::session`] for a transaction, which [`Self::end_transaction`] ends.
    async fn transaction_client(&self) -> Result<Arc<Client>, WarehouseError> {
        let client = self.session().await?;
        self.in_transaction.store(true, Ordering::SeqCst);
        Ok(client)
    }

    /// Ends a transaction started on [`Self::transaction_client`]'s connection,
    /// rolling it back when it failed.
    async fn end_transaction<T>(&self, client: &Client, result: &Result<T, WarehouseError>) {
        if result.is_err() {
            // Leave no half-open transaction behind on a shared connection.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        self.in_transaction.store(false, Ordering::SeqCst);
    }

    /// Applies the missing migrations in one transaction, under an advisory lock so
    /// that services starting together do not race on `CREATE TABLE`.
    pub async fn migrate(&self) -> Result<u32, WarehouseError> {
        let _one_at_a_time = self.loading.lock().await;
        let client = self.transaction_client().await?;
        let result = Self::migrate_with(&client).await;
        self.end_transaction(&client, &result).await;
        result
    }

    async fn migrate_with(client: &Client) -> Result<u32, WarehouseError> {
        let run = |statement: String| async move {
            client
                .batch_execute(&statement)
                .await
                .map_err(|e| WarehouseError::postgres(&statement, &e))
        };
        run("BEGIN".into()).await?;
        run("SELECT pg_advisory_xact_lock(7212950)".into()).await?;
        run(schema::version_table().into()).await?;
        let current_version = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
        let current: i32 = client
            .query_one(current_version, &[])
            .await
            .map_err(|e| WarehouseError::postgres(current_version, &e))?
            .try_get(0)
            .map_err(|e| unexpected_answer(current_version, &e))?;
        let migrations = schema::migrations(Dialect::Postgres);
        for (index, statements) in migrations.iter().enumerate() {
            let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
            if version <= current {
                continue;
            }
            for statement in statements {
                run(statement.clone()).await?;
            }
            run(format!(
                "INSERT INTO schema_version (version, applied_at) VALUES ({version}, {})",
                sql::now_utc(Dialect::Postgres)
            ))
            .await?;
        }
        run("COMMIT".into()).await?;
        Ok(u32::try_from(migrations.len()).unwrap_or(u32::MAX))
    }

    /// The first column of every row of `queries`, as text.
    pub(crate) async fn select_strings(&self, queries: &[String]) -> Result<Vec<String>, WarehouseError> {
        let _one_at_a_time = self.loading.lock().await;
        let client = self.session().await?;
        first_column(&client, queries).await
    }

    /// Runs statements as one transaction; answers the last one's row count.
    pub async fn transaction(&self, statements: &[String]) -> Result<i64, WarehouseError> {
        let _one_at_a_time = self.loading.lock().await;
        let client = self.transaction_client().await?;
        let result = async {
            let begin = "BEGIN";
            client
                .batch_execute(begin)
                .await
                .map_err(|e| WarehouseError::postgres(begin, &e))?;
            let mut rows = 0;
            for statement in statements {
                rows = client
                    .execute(statement.as_str(), &[])
                    .await
                    .map_err(|e| WarehouseError::postgres(statement, &e))?;
            }
            let commit = "COMMIT";
            client
                .batch_execute(commit)
                .await
                .map_err(|e| WarehouseError::postgres(commit, &e))?;
            Ok(i64::try_from(rows).unwrap_or(i64::MAX))
        }
        .await;
        self.end_transaction(&client, &result).await;
        result
    }

    pub async fn execute(&self, statement: &str) -> Result<(), WarehouseError> {
        let _one_at_a_time = self.loading.lock().await;
        let client = self.session().await?;
        client
            .batch_execute(statement)
            .await
            .map_err(|e| WarehouseError::postgres(statement, &e))
    }

    /// Runs a read-only query; every column is a BIGINT.
    pub async fn select(&self, query: &Query) -> Result<Vec<Vec<i64>>, WarehouseError> {
        let client = self.client().await?;
        let (text, values) = query.numbered();
        let bound: Vec<Box<dyn ToSql + Sync + Send>> = values
            .into_iter()
            .map(|v| -> Box<dyn ToSql + Sync + Send> {
                match v {
                    Value::Text(t) => Box::new(t.clone()),
                    Value::Int(i) => Box::new(*i),
                    Value::Float(f) => Box::new(*f),
                }
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = match self.statement_timeout {
            None => client.query(&text, &params).await,
            // A connection that went silent (a network that dropped it, a server that
            // hangs) never delivers the server's cancel: give up on it client-side and
            // leave it, so the next read opens another instead of queueing behind it.
            Some(_) => match tokio::time::timeout(self.silence_bound(), client.query(&text, &params)).await {
                Ok(rows) => rows,
                Err(_) => {
                    let mut slot = self.client.lock().await;
                    if slot.as_ref().is_some_and(|open| Arc::ptr_eq(open, &client)) {
                        *slot = None;
                    }
                    return Err(WarehouseError::statement(
                        &text,
                        ErrorKind::Transient,
                        format!(
                            "no answer within {} ms; the connection is left",
                            self.silence_bound().as_millis()
                        ),
                    ));
                }
            },
        }
        .map_err(|e| WarehouseError::postgres(&text, &e))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<_, i64>(i).map_err(|e| unexpected_answer(&text, &e)))
                    .collect()
            })
            .collect()
    }

    /// Reads a batch file whole and gunzips it.
    async fn fetch(&self, bucket: &str, key: &str) -> Result<Vec<u8>, WarehouseError> {
        let file_error = |kind: ErrorKind, reason: String| WarehouseError::File {
            bucket: bucket.to_string(),
            key: key.to_string(),
            line: None,
            reason,
            kind,
        };
        let body = s3::get_whole(&self.s3, bucket, key).await.map_err(|e| match e {
            GetError::Object(error) => file_error(error.kind, error.explain()),
            // The download broke off; the object may well be whole.
            GetError::BrokeOff(e) => file_error(ErrorKind::Transient, format!("reading the object: {e}")),
        })?;
        // Gunzipping tens of MiB is CPU work: off the runtime's threads.
        let gunzipped = tokio::task::spawn_blocking(move || {
            let mut text = Vec::with_capacity(body.len() * 6);
            flate2::read::MultiGzDecoder::new(&body[..])
                .read_to_end(&mut text)
                .map(|_| text)
        })
        .await;
        match gunzipped {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(e)) => Err(file_error(ErrorKind::Permanent, format!("not gzip: {e}"))),
            Err(e) => Err(file_error(ErrorKind::Transient, format!("gunzip task: {e}"))),
        }
    }

    pub async fn load(&self, batch: &LoadBatch) -> Result<LoadReport, WarehouseError> {
        crate::check_keys(batch)?;
        let _one_at_a_time = self.loading.lock().await;
        let client = self.transaction_client().await?;
        let result = self.load_with(&client, batch).await;
        self.end_transaction(&client, &result).await;
        result
    }

    async fn load_with(&self, client: &Client, batch: &LoadBatch) -> Result<LoadReport, WarehouseError> {
        let run = |statement: &'static str| async move {
            client
                .batch_execute(statement)
                .await
                .map_err(|e| WarehouseError::postgres(statement, &e))
        };
        run("BEGIN").await?;
        run(sql::lock_loaded_files(Dialect::Postgres)).await?;
        let keys: Vec<String> = batch.files.iter().map(|f| f.key.clone()).collect();
        let mut report = LoadReport::default();
        let loaded = first_column(client, &sql::loaded_among(&keys, batch.reload_loaded_before)).await?;
        let todo: Vec<_> = batch.files.iter().filter(|f| !loaded.contains(&f.key)).collect();
        report.files_skipped = (batch.files.len() - todo.len()) as u64;
        if todo.is_empty() {
            run("COMMIT").await?;
            return Ok(report);
        }
        run(sql::POSTGRES_LOAD_MEMORY).await?;
        run(sql::create_staging(Dialect::Postgres)).await?;
        let copy = sql::copy_from_stdin();
        let sink = client
            .copy_in::<_, Bytes>(&copy)
            .await
            .map_err(|e| WarehouseError::postgres(&copy, &e))?;
        futures::pin_mut!(sink);
        let phase = std::time::Instant::now();
        let mut recorded = Vec::with_capacity(todo.len());
        let mut chunk = Vec::with_capacity(COPY_CHUNK + 4096);
        // The next files download and gunzip while this one streams into COPY.
        // Owned keys in the futures: borrowed ones would make the load future not `Send`.
        let keys: Vec<String> = todo.iter().map(|f| f.key.clone()).collect();
        let mut fetched = futures::stream::iter(keys)
            .map(|key| async move {
                let text = self.fetch(&batch.bucket, &key).await;
                (key, text)
            })
            .buffered(PREFETCH_FILES);
        while let Some((key, text)) = fetched.next().await {
            let text = text?;
            let mut lines = 0u64;
            for (number, line) in text.split(|b| *b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                rows::append_copy_row(line, &mut chunk).map_err(|e| WarehouseError::File {
                    bucket: batch.bucket.clone(),
                    key: key.clone(),
                    line: Some(number as u64 + 1),
                    reason: e.to_string(),
                    kind: ErrorKind::Permanent,
                })?;
                lines += 1;
                if chunk.len() >= COPY_CHUNK {
                    sink.send(Bytes::from(std::mem::take(&mut chunk)))
                        .await
                        .map_err(|e| WarehouseError::postgres(&copy, &e))?;
                    chunk.reserve(COPY_CHUNK + 4096);
                }
            }
            recorded.push((key, lines));
        }
        if !chunk.is_empty() {
            sink.send(Bytes::from(chunk))
                .await
                .map_err(|e| WarehouseError::postgres(&copy, &e))?;
        }
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| WarehouseError::postgres(&copy, &e))?;
        let copied = phase.elapsed();
        let forgotten = client
            .execute(sql::DROP_FORGOTTEN, &[])
            .await
            .map_err(|e| WarehouseError::postgres(sql::DROP_FORGOTTEN, &e))?;
        let forgotten = i64::try_from(forgotten).unwrap_or(i64::MAX);
        let insert = sql::insert_deduplicated_counted();
        let counts = client
            .query_one(&insert, &[])
            .await
            .map_err(|e| WarehouseError::postgres(&insert, &e))?;
        let count = |column: usize| {
            counts
                .try_get::<_, i64>(column)
                .map_err(|e| unexpected_answer(&insert, &e))
        };
        let (staged, distinct, inserted) = (count(0)?, count(1)?, count(2)?);
        let deduplicated = phase.elapsed();
        let reloaded: Vec<String> = match batch.reload_loaded_before {
            Some(_) => {
                let keys: Vec<String> = recorded.iter().map(|(key, _)| key.clone()).collect();
                first_column(client, &sql::loaded_among(&keys, None)).await?
            }
            None => Vec::new(),
        };
        let reloaded_keys: std::collections::HashSet<&String> = reloaded.iter().collect();
        recorded.retain(|(key, _)| !reloaded_keys.contains(key));
        let records = sql::record_reloaded(Dialect::Postgres, &reloaded);
        for record in records.iter().chain(&sql::record_files(Dialect::Postgres, &recorded)) {
            client
                .batch_execute(record)
                .await
                .map_err(|e| WarehouseError::postgres(record, &e))?;
        }
        run("COMMIT").await?;
        tracing::debug!(?copied, ?deduplicated, committed = ?phase.elapsed(), "load phases (cumulative)");
        // The counted insert saw staging without the forgotten players' rows.
        report.count_rows(todo.len(), staged + forgotten, forgotten, distinct, inserted);
        Ok(report)
    }
}

/// The first column of every row of `queries`, as text, on `client` (in its
/// transaction, if one is open).
async fn first_column(client: &Client, queries: &[String]) -> Result<Vec<String>, WarehouseError> {
    let mut values = Vec::new();
    for query in queries {
        for row in client
            .query(query.as_str(), &[])
            .await
            .map_err(|e| WarehouseError::postgres(query, &e))?
        {
            values.push(row.try_get(0).map_err(|e| unexpected_answer(query, &e))?);
        }
    }
    Ok(values)
}

/// Why a connection failed. A server that refuses the login or does not have the
/// database will refuse it again; anything else (no answer, a server starting or full)
/// may pass.
fn connect_error(error: tokio_postgres::Error) -> WarehouseError {
    let kind = match error.as_db_error().map(|db| db.code().code()) {
        Some(code) if code.starts_with("28") || code == "3D000" => ErrorKind::Fatal,
        _ => ErrorKind::Transient,
    };
    WarehouseError::Connect {
        message: ServerMessage(&error).to_string(),
        kind,
    }
}

/// A row that does not have the columns its query asks for: the query or the table
/// is not what this crate expects, which no retry changes.
fn unexpected_answer(statement: &str, error: &tokio_postgres::Error) -> WarehouseError {
    WarehouseError::statement(statement, ErrorKind::Fatal, format!("unexpected answer: {error}"))
}

/// A PostgreSQL error with what the server said: tokio-postgres displays a server
/// error as just "db error", leaving its message, detail and SQLSTATE in the source.
pub(crate) struct ServerMessage<'a>(pub(crate) &'a tokio_postgres::Error);

impl std::fmt::Display for ServerMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(f, "{} {}: {}", db.severity(), db.code().code(), db.message())?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            None => write!(f, "{}", self.0),
        }
    }
}
