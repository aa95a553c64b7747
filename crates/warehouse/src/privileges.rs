//! Who may do what in the warehouse, as on Redshift, where every task role is a database
//! user of its own (`IAMR:<role>`) and nothing is granted by default.
//!
//! - The **owner** creates and upgrades the schema (`pipelinectl setup`, and nothing
//!   else: a service never runs a migration) and grants the others their part.
//! - The **loader** (redshift-connector) reads and appends: [`Grantee::Loader`].
//! - The **reader** (`pipelinectl` queries, dashboards) reads: [`Grantee::Reader`].
//! - **Maintenance** (cron-connector) must be able to VACUUM, which no table GRANT
//!   allows: it owns the tables or (PostgreSQL) is a member of the role that does.
//!   Redshift's role-based VACUUM permission would do too, but the check accepts only
//!   ownership (or a superuser), which docs/deploy.md's setup gives and a query can prove.
//!   A VACUUM by anyone else does nothing and says nothing, so the cron-connector checks
//!   at start ([`can_maintain`]).
//!
//! Creating the users is the administrator's (docs/deploy.md, "Warehouse users").

use crate::query::Query;
use crate::schema::{Dialect, EVENTS, FORGOTTEN_CLIENTS, LOADED_FILES, SCHEMA_VERSION};

/// A warehouse user that gets grants from the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantee {
    /// Loads batches: reads `events` (dedupe) and appends to it, reads, locks and
    /// appends to `loaded_files`, reads `schema_version` and `forgotten_clients`.
    Loader,
    /// Reads every table.
    Reader,
}

/// A user name as an SQL identifier (Redshift's IAM users hold a colon).
pub fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a PostgreSQL string literal (standard_conforming_strings, on since 9.1:
/// only a quote is special).
fn postgres_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The GRANTs the owner runs for `user`, in the current schema.
pub fn grants(dialect: Dialect, grantee: Grantee, name: &str) -> Vec<String> {
    let user = identifier(name);
    let mut statements = Vec::new();
    if dialect == Dialect::Postgres {
        // Tables live in the connection's first schema (tests give each its own);
        // Redshift's `public` is usable by everyone unless an administrator revoked it.
        // A quoted body, not a dollar-quoted one: no name can end it early.
        let body = format!(
            "BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), {}); END",
            postgres_literal(name)
        );
        statements.push(format!("DO {}", postgres_literal(&body)));
    }
    match grantee {
        Grantee::Loader => statements.extend([
            format!("GRANT SELECT, INSERT ON {EVENTS} TO {user}"),
            // The load's LOCK needs UPDATE (or DELETE) on both PostgreSQL and Redshift;
            // no statement of the loader updates a row.
            format!("GRANT SELECT, INSERT, UPDATE ON {LOADED_FILES} TO {user}"),
            format!("GRANT SELECT ON {SCHEMA_VERSION} TO {user}"),
            // Each load drops the rows of forgotten players.
            format!("GRANT SELECT ON {FORGOTTEN_CLIENTS} TO {user}"),
        ]),
        Grantee::Reader => statements.push(format!(
            "GRANT SELECT ON {EVENTS}, {LOADED_FILES}, {SCHEMA_VERSION}, {FORGOTTEN_CLIENTS} TO {user}"
        )),
    }
    statements
}

/// The schema version the warehouse is at: one row, one column (0 when the schema was
/// never created).
pub fn schema_version() -> [Query; 2] {
    [
        Query {
            sql: format!(
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = '{SCHEMA_VERSION}'"
            ),
            parameters: Vec::new(),
        },
        Query {
            sql: format!("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM {SCHEMA_VERSION}"),
            parameters: Vec::new(),
        },
    ]
}

/// How many of `events` and `loaded_files` the current user may VACUUM: one row, one
/// column; 2 when maintenance can do its work.
pub fn can_maintain(dialect: Dialect) -> Query {
    let may = match dialect {
        Dialect::Postgres => "pg_has_role(tableowner, 'USAGE')",
        Dialect::Redshift => {
            "(tableowner = current_user OR EXISTS (SELECT 1 FROM pg_user WHERE usename = current_user AND usesuper))"
        }
    };
    Query {
        sql: format!(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename IN ('{EVENTS}', '{LOADED_FILES}') AND {may}"
        ),
        parameters: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_cannot_break_out() {
        assert_eq!(identifier("IAMR:role"), "\"IAMR:role\"");
        assert_eq!(
            identifier("a\"; DROP TABLE events; --"),
            "\"a\"\"; DROP TABLE events; --\""
        );
        let schema_grant = &grants(Dialect::Postgres, Grantee::Reader, "it's $$ a\\b")[0];
        assert_eq!(
            schema_grant,
            "DO 'BEGIN EXECUTE format(''GRANT USAGE ON SCHEMA %I TO %I'', current_schema(), ''it''''s $$ a\\b''); END'"
        );
    }

    #[test]
    fn the_loader_may_append_and_the_reader_only_read() {
        let loader = grants(Dialect::Redshift, Grantee::Loader, "IAMR:loader").join(";\n");
        assert!(loader.contains("GRANT SELECT, INSERT ON events TO \"IAMR:loader\""));
        assert!(loader.contains("GRANT SELECT, INSERT, UPDATE ON loaded_files"));
        assert!(loader.contains("GRANT SELECT ON forgotten_clients"));
        assert!(!loader.contains("DELETE") && !loader.contains("SCHEMA"));
        let reader = grants(Dialect::Postgres, Grantee::Reader, "reader").join(";\n");
        assert!(reader.contains("GRANT USAGE ON SCHEMA"));
        assert!(
            reader.contains("GRANT SELECT ON events, loaded_files, schema_version, forgotten_clients TO \"reader\"")
        );
        assert!(!reader.contains("INSERT"));
    }
}
