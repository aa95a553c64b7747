//! Read-only queries with bound parameters, one text for both back ends (but where
//! they read `event_data`, whose types differ): the heat map and the totals an
//! operator asks for. Values never enter the SQL text; each back end binds them its own
//! way (`$n` on PostgreSQL, `:name` on the Redshift Data API).

use crate::schema::Dialect;

/// A bound value. Every placeholder is wrapped in a CAST in the SQL, so PostgreSQL
/// infers the parameter's type and the Data API (which sends strings) converts it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    Float(f64),
}

impl Value {
    /// The value as the Data API sends it.
    pub fn as_text(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
        }
    }
}

/// SQL with `:name` placeholders and the values they take. Every result column is a
/// BIGINT.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub sql: String,
    pub parameters: Vec<(&'static str, Value)>,
}

impl Query {
    /// PostgreSQL's form: `:name` becomes `$n` (n by order of the parameters), and the
    /// values in that order.
    pub fn numbered(&self) -> (String, Vec<&Value>) {
        let mut sql = self.sql.clone();
        // Longest names first, so `:rows` never eats the start of `:rows_total`.
        let mut order: Vec<(usize, &str)> = self.parameters.iter().enumerate().map(|(i, (n, _))| (i, *n)).collect();
        order.sort_by_key(|(_, name)| std::cmp::Reverse(name.len()));
        for (index, name) in order {
            sql = sql.replace(&format!(":{name}"), &format!("${}", index + 1));
        }
        (sql, self.parameters.iter().map(|(_, v)| v).collect())
    }
}

/// What a heat map counts: events of one type on one level in `[since_ms, until_ms)`,
/// on a `columns` × `rows` grid over a `width` × `height` map.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapQuery {
    pub level_id: String,
    pub event_type: String,
    pub since_ms: i64,
    pub until_ms: i64,
    pub columns: u32,
    pub rows: u32,
    pub width: f64,
    pub height: f64,
    /// Only events whose `event_data` has these values (all of them).
    pub filters: Vec<DataFilter>,
}

/// A condition on `event_data`: the value at `path` (keys into nested objects), read
/// as text, equals `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFilter {
    pub path: Vec<String>,
    pub value: String,
}

/// The most conditions on `event_data` one heat map takes.
pub const MAX_DATA_FILTERS: usize = 4;
const FILTER_PARAMETERS: [&str; MAX_DATA_FILTERS] = ["data_0", "data_1", "data_2", "data_3"];

impl std::str::FromStr for DataFilter {
    type Err = String;

    /// `KEY=VALUE` or `KEY.KEY=VALUE`: keys of letters, digits and `_` (they become
    /// part of the SQL text, so nothing else is allowed in them); the value is any text
    /// and is only ever a bound parameter.
    fn from_str(text: &str) -> Result<Self, String> {
        let (path, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
        let path: Vec<String> = path.split('.').map(str::to_string).collect();
        let fine = |key: &String| {
            !key.is_empty() && key.len() <= 64 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if !path.iter().all(fine) {
            return Err(format!(
                "{text:?}: keys are letters, digits and _, up to 64 each, joined by dots"
            ));
        }
        Ok(DataFilter {
            path,
            value: value.to_string(),
        })
    }
}

/// The text at `filter`'s path in `event_data`, in `dialect`: PostgreSQL's JSONB path
/// operator, Redshift's navigation into SUPER (quoted attribute names; Redshift
/// matches them case-insensitively unless `enable_case_sensitive_super_attribute` is on).
fn data_text(dialect: Dialect, filter: &DataFilter) -> String {
    match dialect {
        Dialect::Postgres => format!("event_data #>> '{{{}}}'", filter.path.join(",")),
        Dialect::Redshift => {
            let path: Vec<String> = filter.path.iter().map(|k| format!("\"{k}\"")).collect();
            format!("CAST(event_data.{} AS VARCHAR)", path.join("."))
        }
    }
}

/// Events counted in one grid cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellCount {
    pub column: i64,
    pub row: i64,
    pub events: i64,
}

const HEATMAP_SQL: &str = "SELECT
    CAST(FLOOR(position_x * CAST(:columns AS BIGINT) / CAST(:width AS DOUBLE PRECISION)) AS BIGINT),
    CAST(FLOOR(position_y * CAST(:rows AS BIGINT) / CAST(:height AS DOUBLE PRECISION)) AS BIGINT),
    COUNT(*)
FROM events
WHERE level_id = CAST(:level_id AS VARCHAR)
    AND event_type = CAST(:event_type AS VARCHAR)
    AND event_timestamp >= CAST(CAST(:since AS VARCHAR) AS TIMESTAMP)
    AND event_timestamp < CAST(CAST(:until AS VARCHAR) AS TIMESTAMP)
    AND position_x BETWEEN 0 AND CAST(:width AS DOUBLE PRECISION)
    AND position_y BETWEEN 0 AND CAST(:height AS DOUBLE PRECISION)";

/// A UTC time as both dialects read a TIMESTAMP literal (text, so the one cast works
/// with PostgreSQL's inferred parameter type and with the Data API's strings).
pub(crate) fn timestamp_text(ms: i64) -> String {
    let time = jiff::Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    time.to_zoned(jiff::tz::TimeZone::UTC)
        .datetime()
        .strftime("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

impl HeatmapQuery {
    /// The grid is binned by the warehouse: only the non-empty cells come back. At
    /// most [`MAX_DATA_FILTERS`] filters count (the caller checks).
    pub fn query(&self, dialect: Dialect) -> Query {
        let mut sql = HEATMAP_SQL.to_string();
        let mut filters = Vec::new();
        for (filter, name) in self.filters.iter().zip(FILTER_PARAMETERS) {
            sql.push_str(&format!(
                "\n    AND {} = CAST(:{name} AS VARCHAR)",
                data_text(dialect, filter)
            ));
            filters.push((name, Value::Text(filter.value.clone())));
        }
        sql.push_str("\nGROUP BY 1, 2");
        let mut query = Query {
            sql,
            parameters: vec![
                ("columns", Value::Int(i64::from(self.columns))),
                ("rows", Value::Int(i64::from(self.rows))),
                ("width", Value::Float(self.width)),
                ("height", Value::Float(self.height)),
                ("level_id", Value::Text(self.level_id.clone())),
                ("event_type", Value::Text(self.event_type.clone())),
                ("since", Value::Text(timestamp_text(self.since_ms))),
                ("until", Value::Text(timestamp_text(self.until_ms))),
            ],
        };
        query.parameters.extend(filters);
        query
    }
}

/// Rows in `events`, rows staged by all loads (the sum over `loaded_files`), files
/// loaded, and the time of the last load in ms since the epoch (0 before the first).
/// Staged minus rows is the duplicates the loads dropped. `loaded_files` is small (a
/// row per file), so its MAX is cheap where `events` would be scanned.
pub fn totals() -> Query {
    Query {
        sql: "SELECT (SELECT COUNT(*) FROM events), (SELECT CAST(COALESCE(SUM(row_count), 0) AS BIGINT) FROM loaded_files), (SELECT COUNT(*) FROM loaded_files), (SELECT CAST(COALESCE(EXTRACT(EPOCH FROM MAX(loaded_at)) * 1000, 0) AS BIGINT) FROM loaded_files)".into(),
        parameters: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heatmap() -> HeatmapQuery {
        HeatmapQuery {
            level_id: "level-'01'; DROP TABLE events; --".into(),
            event_type: "player_death".into(),
            since_ms: 0,
            until_ms: 1,
            columns: 50,
            rows: 35,
            width: 1000.0,
            height: 700.0,
            filters: Vec::new(),
        }
    }

    #[test]
    fn an_event_data_filter_binds_its_value_and_names_only_checked_keys() {
        let mut map = heatmap();
        map.filters = vec![
            "cause=lava'; DROP TABLE events; --".parse().expect("filter"),
            "weapon.kind=axe".parse().expect("filter"),
        ];
        let postgres = map.query(Dialect::Postgres);
        assert!(
            postgres
                .sql
                .contains("AND event_data #>> '{cause}' = CAST(:data_0 AS VARCHAR)"),
            "{}",
            postgres.sql
        );
        assert!(
            postgres
                .sql
                .contains("AND event_data #>> '{weapon,kind}' = CAST(:data_1 AS VARCHAR)")
        );
        assert!(postgres.sql.ends_with("GROUP BY 1, 2"));
        assert!(!postgres.sql.contains("DROP"));
        assert_eq!(postgres.parameters.last(), Some(&("data_1", Value::Text("axe".into()))));
        let redshift = map.query(Dialect::Redshift);
        assert!(
            redshift
                .sql
                .contains("AND CAST(event_data.\"weapon\".\"kind\" AS VARCHAR) = CAST(:data_1 AS VARCHAR)"),
            "{}",
            redshift.sql
        );
        for bad in ["cause", "=x", "a-b=x", "a..b=x", "a b=x", "ca'use=x"] {
            assert!(bad.parse::<DataFilter>().is_err(), "{bad}");
        }
        assert_eq!("n=a=b".parse::<DataFilter>().map(|f| f.value), Ok("a=b".to_string()));
    }

    #[test]
    fn values_never_enter_the_sql_text() {
        let query = heatmap().query(Dialect::Postgres);
        assert!(!query.sql.contains("DROP"));
        assert!(!query.sql.contains("player_death"));
        let (numbered, values) = query.numbered();
        assert!(!numbered.contains(':'), "{numbered}");
        assert!(numbered.contains("CAST($5 AS VARCHAR)"));
        assert!(numbered.contains("CAST($1 AS BIGINT)"));
        assert_eq!(values[4], &Value::Text("level-'01'; DROP TABLE events; --".into()));
    }

    #[test]
    fn every_placeholder_has_a_value_and_the_reverse() {
        let query = heatmap().query(Dialect::Postgres);
        for (name, _) in &query.parameters {
            assert!(query.sql.contains(&format!(":{name} ")) || query.sql.contains(&format!(":{name})")));
        }
    }

    #[test]
    fn times_are_sent_as_utc_text_to_the_millisecond() {
        assert_eq!(timestamp_text(1_767_225_600_123), "2026-01-01 00:00:00.123");
        let query = heatmap().query(Dialect::Postgres);
        assert!(
            query
                .parameters
                .contains(&("until", Value::Text("1970-01-01 00:00:00.001".into())))
        );
    }

    #[test]
    fn longer_names_are_replaced_before_their_prefixes() {
        let query = Query {
            sql: "SELECT CAST(:rows AS BIGINT), CAST(:rows_total AS BIGINT)".into(),
            parameters: vec![("rows", Value::Int(1)), ("rows_total", Value::Int(2))],
        };
        assert_eq!(query.numbered().0, "SELECT CAST($1 AS BIGINT), CAST($2 AS BIGINT)");
    }
}
