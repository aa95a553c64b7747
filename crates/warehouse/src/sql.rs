//! The SQL of a load and of maintenance. One text for both dialects wherever they
//! agree; where they do not, the difference is spelled out here and nowhere else.

use crate::query::{Query, Value, timestamp_text};
use crate::schema::{COLUMNS, Dialect, FORGOTTEN_CLIENTS};

fn column_list() -> String {
    COLUMNS.join(", ")
}

/// Serializes concurrent loaders (two connector workers on two `files` shards).
pub fn lock_loaded_files(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Redshift => "LOCK loaded_files",
        Dialect::Postgres => "LOCK TABLE loaded_files IN EXCLUSIVE MODE",
    }
}

pub fn create_staging(dialect: Dialect) -> &'static str {
    match dialect {
        // Redshift has no ON COMMIT DROP; the load drops it before committing.
        Dialect::Redshift => "CREATE TEMP TABLE staging (LIKE events)",
        Dialect::Postgres => "CREATE TEMP TABLE staging (LIKE events) ON COMMIT DROP",
    }
}

pub const DROP_STAGING: &str = "DROP TABLE staging";

/// PostgreSQL: memory for this load's sorts and hashes, so 100,000-row batches do not
/// spill to disk (the default 4 MB is sized for many small queries).
pub const POSTGRES_LOAD_MEMORY: &str = "SET LOCAL work_mem = '256MB'";

/// Rows staged and distinct event ids among them (the difference is in-batch duplicates).
/// (A DISTINCT subquery hashes; `COUNT(DISTINCT …)` sorts.)
pub const STAGED_COUNTS: &str =
    "SELECT (SELECT COUNT(*) FROM staging), (SELECT COUNT(*) FROM (SELECT DISTINCT event_id FROM staging) AS d)";

/// Drops the staged rows of forgotten players, before anything counts or inserts them.
pub const DROP_FORGOTTEN: &str = "DELETE FROM staging WHERE client_id IN (SELECT client_id FROM forgotten_clients)";

/// The first arrival of each event id in staging, as `s`.
fn first_copies(columns: &str) -> String {
    format!(
        "(
    SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY server_timestamp, event_timestamp) AS copy_number
    FROM staging
) AS s"
    )
}

/// Joins `s` to the ids the table already has inside the batch's event-time window
/// (the window keeps the probe to a time range of a sorted table); a null
/// `loaded.event_id` means the event is new.
const ALREADY_LOADED: &str = "LEFT JOIN events AS loaded
    ON loaded.event_id = s.event_id
    AND loaded.event_timestamp BETWEEN (SELECT MIN(event_timestamp) FROM staging) AND (SELECT MAX(event_timestamp) FROM staging)";

fn staged_columns() -> String {
    COLUMNS.iter().map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ")
}

/// Keeps the first arrival of each event id in staging, drops ids the table already
/// has inside the batch's event-time window, inserts the rest.
pub fn insert_deduplicated() -> String {
    let columns = column_list();
    format!(
        "INSERT INTO events ({columns})
SELECT {staged}
FROM {firsts}
{ALREADY_LOADED}
WHERE s.copy_number = 1 AND loaded.event_id IS NULL",
        staged = staged_columns(),
        firsts = first_copies(&columns),
    )
}

/// PostgreSQL: the same dedupe and insert in one statement, answering rows staged,
/// distinct event ids and rows inserted. (Redshift has no INSERT inside WITH.)
/// In-batch duplicates are rare, so they are found by hashing the ids, and only their
/// rows are sorted to pick each first copy; sorting the whole batch by id (the window
/// function) cost more than the insert's own sort. No ANALYZE of staging is needed for
/// a good plan, and rows go in in index order so the time index grows at its right edge.
pub fn insert_deduplicated_counted() -> String {
    let columns = column_list();
    format!(
        "WITH dup AS MATERIALIZED (SELECT event_id, COUNT(*) AS n FROM staging GROUP BY event_id HAVING COUNT(*) > 1),
s AS (
    SELECT {columns} FROM staging WHERE NOT EXISTS (SELECT 1 FROM dup WHERE dup.event_id = staging.event_id)
    UNION ALL
    SELECT * FROM (
        SELECT DISTINCT ON (event_id) {columns} FROM staging
        WHERE event_id IN (SELECT event_id FROM dup)
        ORDER BY event_id, server_timestamp, event_timestamp
    ) AS first_copies
),
inserted AS (
    INSERT INTO events ({columns})
    SELECT {staged}
    FROM s
    {ALREADY_LOADED}
    WHERE loaded.event_id IS NULL
    ORDER BY s.event_timestamp, s.event_type
    RETURNING 1
)
SELECT staged, staged - COALESCE((SELECT SUM(n - 1) FROM dup), 0)::BIGINT, (SELECT COUNT(*) FROM inserted)
FROM (SELECT COUNT(*) AS staged FROM staging) AS counted",
        staged = staged_columns(),
    )
}

/// The current time as a UTC `TIMESTAMP`, whatever the session's time zone.
pub const fn now_utc(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Redshift => "GETDATE()",
        // now() is a point in time: stored into a TIMESTAMP column, or compared with
        // one, it would be read in the session's time zone.
        Dialect::Postgres => "(now() AT TIME ZONE 'UTC')",
    }
}

/// A string literal: quotes doubled (and backslashes, which Redshift treats as escapes).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// The Data API's limit on the text of one statement (ExecuteStatement's `Sql`, each
/// of BatchExecuteStatement's `Sqls`), in characters.
pub const MAX_STATEMENT_CHARS: usize = 100_000;

/// The longest key of a batch file, in bytes:
/// `events/YYYY/MM/DD/HH/<first>-<last>.gzip` ([`event_model::layout::batch_key`])
/// with a signed four-digit year (jiff's years run from -9999 to 9999) and sequence
/// numbers of at most 56 digits. Bytes bound characters, so statements sized by it
/// stay under the Data API's limit whatever a key's characters are.
pub const MAX_KEY_BYTES: usize = "events/".len() + "-9999/12/31/23/".len() + 56 + "-".len() + 56 + ".gzip".len();

/// The longest literal of a key: every byte a quote or a backslash, doubled.
const MAX_KEY_LITERAL: usize = 2 * MAX_KEY_BYTES + "''".len();

/// The longest text of a row count (a `u64`).
const MAX_COUNT_DIGITS: usize = 20;

const RECORD_FILES: &str = "INSERT INTO loaded_files (file_key, row_count, loaded_at) VALUES ";

/// Files one `record_files` statement records: as many `(key, rows, now), ` as fit
/// under [`MAX_STATEMENT_CHARS`] with the longest key and the largest count.
pub const fn files_per_record_statement(dialect: Dialect) -> usize {
    let row =
        "(".len() + MAX_KEY_LITERAL + ", ".len() + MAX_COUNT_DIGITS + ", ".len() + now_utc(dialect).len() + ")".len();
    (MAX_STATEMENT_CHARS - 1 - RECORD_FILES.len()) / (row + ", ".len())
}

/// Records the loaded files with their row counts: one INSERT per
/// [`files_per_record_statement`] files (none for no files), all of them run in the
/// load's transaction.
pub fn record_files(dialect: Dialect, files: &[(String, u64)]) -> Vec<String> {
    files
        .chunks(files_per_record_statement(dialect))
        .map(|chunk| {
            let rows: Vec<String> = chunk
                .iter()
                .map(|(key, rows)| format!("({}, {rows}, {})", literal(key), now_utc(dialect)))
                .collect();
            format!("{RECORD_FILES}{}", rows.join(", "))
        })
        .collect()
}

const LOADED_AMONG: &str = "SELECT file_key FROM loaded_files WHERE file_key IN (";

/// The longest condition on the load time `loaded_among` adds.
const MAX_LOADED_SINCE: usize = " AND loaded_at >= CAST('-9999-12-31 23:59:59.999' AS TIMESTAMP)".len();

/// Keys one `loaded_among` query asks about: as many as fit under
/// [`MAX_STATEMENT_CHARS`] with the longest key.
pub const KEYS_PER_LOADED_QUERY: usize =
    (MAX_STATEMENT_CHARS - 1 - LOADED_AMONG.len() - ")".len() - MAX_LOADED_SINCE) / (MAX_KEY_LITERAL + ", ".len());

/// Which of `keys` were already loaded (at or after `loaded_since`, ms, when given):
/// one SELECT per [`KEYS_PER_LOADED_QUERY`] keys (none for no keys); the answer is the
/// union of their rows.
pub fn loaded_among(keys: &[String], loaded_since: Option<i64>) -> Vec<String> {
    let since = loaded_since
        .map(|ms| format!(" AND loaded_at >= CAST({} AS TIMESTAMP)", literal(&timestamp_text(ms))))
        .unwrap_or_default();
    keys.chunks(KEYS_PER_LOADED_QUERY)
        .map(|chunk| {
            let list: Vec<String> = chunk.iter().map(|k| literal(k)).collect();
            format!("{LOADED_AMONG}{}){since}", list.join(", "))
        })
        .collect()
}

/// Records that `keys`, loaded before, were loaded again now (a reload), keeping their
/// row counts: one UPDATE per [`KEYS_PER_LOADED_QUERY`] keys, run in the load's
/// transaction. (Its text before the keys is shorter than `loaded_among`'s around them.)
pub fn record_reloaded(dialect: Dialect, keys: &[String]) -> Vec<String> {
    keys.chunks(KEYS_PER_LOADED_QUERY)
        .map(|chunk| {
            let list: Vec<String> = chunk.iter().map(|k| literal(k)).collect();
            format!(
                "UPDATE loaded_files SET loaded_at = {} WHERE file_key IN ({})",
                now_utc(dialect),
                list.join(", ")
            )
        })
        .collect()
}

/// The most client ids one [`forget_clients`] call takes: their statements stay far
/// under [`MAX_STATEMENT_CHARS`] whatever the ids are.
pub const MAX_CLIENTS_PER_FORGET: usize = 500;

/// The statements erasing `client_ids` (each already checked to be a hyphenated UUID,
/// at most [`MAX_CLIENTS_PER_FORGET`] of them), in transaction order: serialize with
/// loads (a load that staged a player's rows commits before, one that starts after sees
/// the tombstone), record each id not yet recorded, delete their events. The last
/// statement's row count is the events deleted.
pub fn forget_clients(dialect: Dialect, client_ids: &[String]) -> Vec<String> {
    let ids: Vec<String> = client_ids.iter().map(|id| literal(id)).collect();
    let listed = ids
        .iter()
        .map(|id| format!("SELECT CAST({id} AS CHAR(36)) AS client_id"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    vec![
        lock_loaded_files(dialect).to_string(),
        format!(
            "INSERT INTO {FORGOTTEN_CLIENTS} (client_id, forgotten_at) \
             SELECT DISTINCT ids.client_id, {} FROM ({listed}) AS ids \
             WHERE ids.client_id NOT IN (SELECT client_id FROM {FORGOTTEN_CLIENTS})",
            now_utc(dialect)
        ),
        format!("DELETE FROM events WHERE client_id IN ({})", ids.join(", ")),
    ]
}

/// Redshift: the first error SYS_LOAD_ERROR_DETAIL (provisioned and Serverless alike)
/// holds for the COPY Redshift ran as query `redshift_query_id` (the Data API's
/// `SubStatementData::redshift_query_id`, the view's `query_id`): file, line, message.
pub fn load_error_detail(redshift_query_id: i64) -> Query {
    Query {
        sql: "SELECT TRIM(file_name), line_number, TRIM(error_message) FROM sys_load_error_detail \
              WHERE query_id = CAST(:query_id AS BIGINT) ORDER BY file_name, line_number LIMIT 1"
            .into(),
        parameters: vec![("query_id", Value::Int(redshift_query_id))],
    }
}

/// Redshift's COPY of a manifest of gzipped JSON-lines files into staging.
pub fn copy_from_manifest(manifest_url: &str, jsonpaths_url: &str, iam_role: &str) -> String {
    format!(
        "COPY staging ({}) FROM {} IAM_ROLE {} MANIFEST GZIP JSON {} TIMEFORMAT 'epochmillisecs'",
        column_list(),
        literal(manifest_url),
        literal(iam_role),
        literal(jsonpaths_url)
    )
}

/// PostgreSQL's COPY of rows this process streams (text format).
pub fn copy_from_stdin() -> String {
    format!("COPY staging ({}) FROM STDIN", column_list())
}

/// A maintenance job of the cron-connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    /// Re-sort and reclaim space (Redshift `VACUUM`, PostgreSQL `VACUUM (ANALYZE)`).
    Vacuum,
    /// Refresh planner statistics.
    Analyze,
    /// Forget loaded files older than the dedupe window (days).
    PruneLoadedFiles { days: u32 },
    /// Delete events older than this many days.
    Retention { days: u32 },
}

impl Maintenance {
    /// The statements, each run on its own outside a transaction (VACUUM cannot run in
    /// one). Times compare in UTC, the time zone the columns hold.
    pub fn statements(self, dialect: Dialect) -> Vec<String> {
        match (self, dialect) {
            (Maintenance::Vacuum, Dialect::Redshift) => vec![
                "VACUUM DELETE ONLY events".into(),
                "VACUUM SORT ONLY events TO 95 PERCENT".into(),
            ],
            (Maintenance::Vacuum, Dialect::Postgres) => vec!["VACUUM (ANALYZE) events".into()],
            (Maintenance::Analyze, _) => vec!["ANALYZE events".into(), "ANALYZE loaded_files".into()],
            (Maintenance::PruneLoadedFiles { days }, Dialect::Redshift) => {
                vec![format!(
                    "DELETE FROM loaded_files WHERE loaded_at < DATEADD(day, -{days}, GETDATE())"
                )]
            }
            (Maintenance::PruneLoadedFiles { days }, Dialect::Postgres) => {
                vec![format!(
                    "DELETE FROM loaded_files WHERE loaded_at < (now() AT TIME ZONE 'UTC') - INTERVAL '{days} days'"
                )]
            }
            (Maintenance::Retention { days }, Dialect::Redshift) => {
                vec![format!(
                    "DELETE FROM events WHERE event_timestamp < DATEADD(day, -{days}, GETDATE())"
                )]
            }
            (Maintenance::Retention { days }, Dialect::Postgres) => {
                vec![format!(
                    "DELETE FROM events WHERE event_timestamp < (now() AT TIME ZONE 'UTC') - INTERVAL '{days} days'"
                )]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_cannot_break_out() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            literal("a\\'; DROP TABLE events; --"),
            "'a\\\\''; DROP TABLE events; --'"
        );
    }

    #[test]
    fn the_redshift_copy_is_exactly_what_redshift_expects() {
        let sql = copy_from_manifest(
            "s3://lake/manifests/1-2.manifest",
            "s3://lake/manifests/jsonpaths.json",
            "arn:aws:iam::123456789012:role/copy",
        );
        assert_eq!(
            sql,
            "COPY staging (app_name, app_version, event_version, event_id, event_type, event_timestamp, server_timestamp, client_id, level_id, position_x, position_y, event_data) FROM 's3://lake/manifests/1-2.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/copy' MANIFEST GZIP JSON 's3://lake/manifests/jsonpaths.json' TIMEFORMAT 'epochmillisecs'"
        );
    }

    #[test]
    fn dedupe_keeps_one_row_per_event_and_skips_loaded_ids_in_the_window() {
        let sql = insert_deduplicated();
        assert!(sql.contains("ROW_NUMBER() OVER (PARTITION BY event_id"));
        assert!(sql.contains("WHERE s.copy_number = 1 AND loaded.event_id IS NULL"));
        assert!(sql.contains("BETWEEN (SELECT MIN(event_timestamp) FROM staging)"));
    }

    #[test]
    fn postgres_dedupes_inserts_and_counts_in_one_statement() {
        let sql = insert_deduplicated_counted();
        assert!(sql.starts_with("WITH dup AS MATERIALIZED"));
        assert!(sql.contains("SELECT DISTINCT ON (event_id)"));
        assert!(sql.contains("ORDER BY event_id, server_timestamp, event_timestamp"));
        assert!(sql.contains("WHERE loaded.event_id IS NULL"));
        assert!(sql.contains("RETURNING 1"));
        assert!(sql.ends_with("FROM (SELECT COUNT(*) AS staged FROM staging) AS counted"));
    }

    #[test]
    fn maintenance_is_dialect_aware() {
        assert_eq!(
            Maintenance::Vacuum.statements(Dialect::Postgres),
            vec!["VACUUM (ANALYZE) events"]
        );
        assert!(Maintenance::Vacuum.statements(Dialect::Redshift)[1].contains("TO 95 PERCENT"));
        assert!(
            Maintenance::PruneLoadedFiles { days: 30 }.statements(Dialect::Redshift)[0].contains("DATEADD(day, -30")
        );
    }
    /// The longest key the layout makes, in the given hour.
    fn layout_key(arrival_ms: i64) -> String {
        let sequence = "9".repeat(56);
        event_model::layout::batch_key(event_model::layout::BatchKind::Events, arrival_ms, &sequence, &sequence)
    }

    #[test]
    fn the_key_bound_is_the_layouts_longest_key() {
        assert_eq!(layout_key(i64::MIN).len(), MAX_KEY_BYTES, "{}", layout_key(i64::MIN));
        assert!(layout_key(i64::MAX).len() <= MAX_KEY_BYTES);
        assert!(layout_key(1_767_225_600_000).len() <= MAX_KEY_BYTES);
    }

    /// The rows of `record_files` statements, with the dialect's `now` spelled `NOW`.
    fn recorded_rows(dialect: Dialect, statements: &[String]) -> Vec<String> {
        statements
            .iter()
            .flat_map(|statement| {
                let values = statement.strip_prefix(RECORD_FILES).expect("an INSERT of loaded files");
                let values = values.replace(now_utc(dialect), "NOW");
                values
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split("), (")
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn statements_listing_files_are_split_under_the_data_api_limit() {
        // Layout keys (whose characters the row split above can tell apart) and keys of
        // only quotes, which double in a literal: the longest statements there can be.
        let layout: Vec<(String, u64)> = (0..10_000)
            .map(|n| (layout_key(1_767_225_600_000 + n * 3_600_000), u64::MAX))
            .collect();
        let quotes: Vec<(String, u64)> = (0..10_000).map(|_| ("'".repeat(MAX_KEY_BYTES), u64::MAX)).collect();
        for files in [&layout, &quotes] {
            let keys: Vec<String> = files.iter().map(|(k, _)| k.clone()).collect();
            let queries = loaded_among(&keys, Some(i64::MIN));
            assert!(queries.len() <= 40, "{} queries", queries.len());
            for dialect in [Dialect::Redshift, Dialect::Postgres] {
                let mut inserts = record_files(dialect, files);
                let updates = record_reloaded(dialect, &keys);
                assert!(updates.len() <= inserts.len());
                inserts.extend(updates);
                assert_eq!(
                    inserts.len(),
                    files.len().div_ceil(files_per_record_statement(dialect))
                        + keys.len().div_ceil(KEYS_PER_LOADED_QUERY)
                );
                for statement in inserts.iter().chain(&queries) {
                    assert!(
                        statement.chars().count() < MAX_STATEMENT_CHARS,
                        "{dialect:?}: {} characters",
                        statement.chars().count()
                    );
                }
            }
        }
        let keys: Vec<String> = layout.iter().map(|(k, _)| k.clone()).collect();
        let asked: usize = loaded_among(&keys, None)
            .iter()
            .map(|q| q.matches(".gzip'").count())
            .sum();
        assert_eq!(asked, keys.len(), "every key is asked about once");
        let redshift = recorded_rows(Dialect::Redshift, &record_files(Dialect::Redshift, &layout));
        let postgres = recorded_rows(Dialect::Postgres, &record_files(Dialect::Postgres, &layout));
        assert_eq!(redshift.len(), layout.len());
        assert_eq!(redshift, postgres, "both dialects record the same rows");
        assert_eq!(redshift[0], format!("'{}', 18446744073709551615, NOW", layout[0].0));
        assert!(record_files(Dialect::Redshift, &[]).is_empty());
        assert!(loaded_among(&[], None).is_empty());
        assert_eq!(
            loaded_among(&["events/k.gzip".to_string()], Some(1_767_225_600_000)),
            [
                "SELECT file_key FROM loaded_files WHERE file_key IN ('events/k.gzip') AND loaded_at >= CAST('2026-01-01 00:00:00.000' AS TIMESTAMP)"
            ]
        );
    }

    #[test]
    fn forgetting_records_each_id_once_then_deletes_under_the_load_lock() {
        let ids = ["0f8fad5b-d9cb-469f-a165-70867728950e".to_string(), "it's".to_string()];
        for dialect in [Dialect::Redshift, Dialect::Postgres] {
            let statements = forget_clients(dialect, &ids);
            assert_eq!(statements[0], lock_loaded_files(dialect));
            assert!(statements[1].contains("'it''s'"), "ids are literals: {}", statements[1]);
            assert!(statements[1].contains("NOT IN (SELECT client_id FROM forgotten_clients)"));
            assert_eq!(
                statements[2],
                "DELETE FROM events WHERE client_id IN ('0f8fad5b-d9cb-469f-a165-70867728950e', 'it''s')"
            );
        }
        let most: Vec<String> = (0..MAX_CLIENTS_PER_FORGET).map(|_| "'".repeat(36)).collect();
        for statement in forget_clients(Dialect::Redshift, &most) {
            assert!(statement.chars().count() < MAX_STATEMENT_CHARS);
        }
        let keys = ["events/a.gzip".to_string()];
        assert_eq!(
            record_reloaded(Dialect::Redshift, &keys),
            ["UPDATE loaded_files SET loaded_at = GETDATE() WHERE file_key IN ('events/a.gzip')"]
        );
    }

    #[test]
    fn the_load_error_detail_query_binds_the_query_id() {
        let query = load_error_detail(4_242);
        assert_eq!(
            query.sql,
            "SELECT TRIM(file_name), line_number, TRIM(error_message) FROM sys_load_error_detail \
             WHERE query_id = CAST(:query_id AS BIGINT) ORDER BY file_name, line_number LIMIT 1"
        );
        assert_eq!(query.parameters, vec![("query_id", Value::Int(4_242))]);
    }

    #[test]
    fn postgres_compares_and_records_times_in_utc() {
        for job in [
            Maintenance::Retention { days: 3 },
            Maintenance::PruneLoadedFiles { days: 3 },
        ] {
            let statement = &job.statements(Dialect::Postgres)[0];
            assert!(
                statement.ends_with("< (now() AT TIME ZONE 'UTC') - INTERVAL '3 days'"),
                "{statement}"
            );
        }
        let record = &record_files(Dialect::Postgres, &[("events/k.gzip".into(), 7)])[0];
        assert_eq!(
            record,
            "INSERT INTO loaded_files (file_key, row_count, loaded_at) VALUES ('events/k.gzip', 7, (now() AT TIME ZONE 'UTC'))"
        );
    }
}
