//! The warehouse schema, versioned, in both dialects.
//!
//! One `events` table, not one per month: dedupe looks up event ids inside the time
//! window of a batch, which the sort key (Redshift) or index (PostgreSQL) on
//! `event_timestamp` makes a narrow range scan; loads arrive in time order, so new rows
//! append mostly sorted and VACUUM SORT stays cheap; retention is one
//! `DELETE … WHERE event_timestamp < …` plus VACUUM DELETE ONLY. Monthly tables behind a
//! view would make every dedupe span two tables at month boundaries and every query
//! plan a UNION ALL.

/// The SQL dialect of a back end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Redshift,
    Postgres,
}

/// The events table's columns, in COPY order.
pub const COLUMNS: [&str; 12] = [
    "app_name",
    "app_version",
    "event_version",
    "event_id",
    "event_type",
    "event_timestamp",
    "server_timestamp",
    "client_id",
    "level_id",
    "position_x",
    "position_y",
    "event_data",
];

pub const EVENTS: &str = "events";
pub const LOADED_FILES: &str = "loaded_files";
pub const SCHEMA_VERSION: &str = "schema_version";
/// Players erased on request (`pipelinectl forget`): every load drops their rows
/// before inserting, so a replayed pointer or a backfill cannot bring them back.
pub const FORGOTTEN_CLIENTS: &str = "forgotten_clients";

fn events_table(dialect: Dialect) -> String {
    let body = "CREATE TABLE IF NOT EXISTS events (
    app_name VARCHAR(64) NOT NULL,
    app_version VARCHAR(64),
    event_version VARCHAR(64) NOT NULL,
    event_id CHAR(36) NOT NULL,
    event_type VARCHAR(256) NOT NULL,
    event_timestamp TIMESTAMP NOT NULL,
    server_timestamp TIMESTAMP NOT NULL,
    client_id CHAR(36) NOT NULL,
    level_id VARCHAR(64),
    position_x DOUBLE PRECISION,
    position_y DOUBLE PRECISION
)";
    match dialect {
        Dialect::Redshift => format!("{body} DISTKEY(client_id) SORTKEY(event_timestamp, event_type)"),
        Dialect::Postgres => body.to_string(),
    }
}

/// Each migration is a list of statements; version N is the N-th entry.
pub fn migrations(dialect: Dialect) -> Vec<Vec<String>> {
    let mut first = vec![
        events_table(dialect),
        "CREATE TABLE IF NOT EXISTS loaded_files (
    file_key VARCHAR(1024) NOT NULL,
    row_count BIGINT NOT NULL,
    loaded_at TIMESTAMP NOT NULL
)"
        .to_string(),
    ];
    if dialect == Dialect::Postgres {
        // PostgreSQL has no sort keys: an index on time gives dedupe (a batch's time
        // window, then a hash join on event id) and heat maps their ranges. An index on
        // event_id would cost a random B-tree insert per row and buy nothing here.
        first.extend([
            "CREATE INDEX IF NOT EXISTS events_time_type ON events (event_timestamp, event_type)".to_string(),
            "CREATE UNIQUE INDEX IF NOT EXISTS loaded_files_key ON loaded_files (file_key)".to_string(),
        ]);
    }
    let mut tombstones = vec![format!(
        "CREATE TABLE IF NOT EXISTS {FORGOTTEN_CLIENTS} (
    client_id CHAR(36) NOT NULL,
    forgotten_at TIMESTAMP NOT NULL
)"
    )];
    if dialect == Dialect::Postgres {
        tombstones.push(format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS forgotten_clients_id ON {FORGOTTEN_CLIENTS} (client_id)"
        ));
    }
    // The game's own attributes: Redshift's semi-structured SUPER, PostgreSQL's JSONB.
    // Added to a table that may hold rows already: they keep a NULL.
    let event_data = vec![format!(
        "ALTER TABLE events ADD COLUMN event_data {}",
        match dialect {
            Dialect::Redshift => "SUPER",
            Dialect::Postgres => "JSONB",
        }
    )];
    vec![first, tombstones, event_data]
}

/// The schema version table itself (created before any migration).
pub fn version_table() -> &'static str {
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)"
}

/// Redshift COPY's JSONPaths file: which JSON field feeds which column, in order.
pub fn jsonpaths() -> String {
    let paths: Vec<String> = COLUMNS.iter().map(|c| format!("$['{c}']")).collect();
    serde_json::json!({ "jsonpaths": paths }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redshift_has_dist_and_sort_keys_postgres_has_indexes() {
        let redshift = migrations(Dialect::Redshift).concat().join(";\n");
        assert!(redshift.contains("DISTKEY(client_id) SORTKEY(event_timestamp, event_type)"));
        assert!(!redshift.contains("CREATE INDEX"));
        let postgres = migrations(Dialect::Postgres).concat().join(";\n");
        assert!(!postgres.contains("DISTKEY"));
        assert!(postgres.contains("CREATE INDEX IF NOT EXISTS events_time_type"));
    }

    #[test]
    fn the_tombstone_table_is_a_migration_of_its_own() {
        for dialect in [Dialect::Redshift, Dialect::Postgres] {
            let migrations = migrations(dialect);
            assert_eq!(migrations.len(), 3);
            assert!(!migrations[0].concat().contains(FORGOTTEN_CLIENTS));
            assert!(migrations[1][0].starts_with("CREATE TABLE IF NOT EXISTS forgotten_clients"));
        }
    }

    #[test]
    fn event_data_is_a_column_added_to_a_table_that_may_hold_rows() {
        assert_eq!(
            migrations(Dialect::Redshift)[2],
            ["ALTER TABLE events ADD COLUMN event_data SUPER"]
        );
        assert_eq!(
            migrations(Dialect::Postgres)[2],
            ["ALTER TABLE events ADD COLUMN event_data JSONB"]
        );
        assert!(!migrations(Dialect::Postgres)[0].concat().contains("event_data"));
    }

    #[test]
    fn jsonpaths_follow_the_column_order() {
        let value: serde_json::Value = serde_json::from_str(&jsonpaths()).expect("json");
        let paths = value["jsonpaths"].as_array().expect("array");
        assert_eq!(paths.len(), COLUMNS.len());
        assert_eq!(paths[3], "$['event_id']");
        // Into the SUPER column as a whole: COPY's jsonpaths load an object as SUPER.
        assert_eq!(paths[11], "$['event_data']");
    }
}
