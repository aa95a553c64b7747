//! The SQL of a load and of maintenance. One text for both dialects wherever they
//! agree; where they do not, the difference is spelled out here and nowhere else.

use crate::schema::{COLUMNS, Dialect};

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

fn now(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Redshift => "GETDATE()",
        Dialect::Postgres => "now()",
    }
}

/// A string literal: quotes doubled (and backslashes, which Redshift treats as escapes).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// Records the loaded files with their row counts.
pub fn record_files(dialect: Dialect, files: &[(String, u64)]) -> String {
    let rows: Vec<String> = files
        .iter()
        .map(|(key, rows)| format!("({}, {rows}, {})", literal(key), now(dialect)))
        .collect();
    format!(
        "INSERT INTO loaded_files (file_key, row_count, loaded_at) VALUES {}",
        rows.join(", ")
    )
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

/// Which of `keys` were already loaded.
pub fn loaded_among(keys: &[String]) -> String {
    let list: Vec<String> = keys.iter().map(|k| literal(k)).collect();
    format!(
        "SELECT file_key FROM loaded_files WHERE file_key IN ({})",
        list.join(", ")
    )
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
    /// The statements, each run on its own outside a transaction (VACUUM cannot run in one).
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
                    "DELETE FROM loaded_files WHERE loaded_at < now() - INTERVAL '{days} days'"
                )]
            }
            (Maintenance::Retention { days }, Dialect::Redshift) => {
                vec![format!(
                    "DELETE FROM events WHERE event_timestamp < DATEADD(day, -{days}, GETDATE())"
                )]
            }
            (Maintenance::Retention { days }, Dialect::Postgres) => {
                vec![format!(
                    "DELETE FROM events WHERE event_timestamp < now() - INTERVAL '{days} days'"
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
            "COPY staging (app_name, app_version, event_version, event_id, event_type, event_timestamp, server_timestamp, client_id, level_id, position_x, position_y) FROM 's3://lake/manifests/1-2.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/copy' MANIFEST GZIP JSON 's3://lake/manifests/jsonpaths.json' TIMEFORMAT 'epochmillisecs'"
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
}
