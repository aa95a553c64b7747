//! Read-only queries with bound parameters, one text for both back ends: the heat map
//! and the totals an operator asks for. Values never enter the SQL text; each back end
//! binds them its own way (`$n` on PostgreSQL, `:name` on the Redshift Data API).

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
    AND position_y BETWEEN 0 AND CAST(:height AS DOUBLE PRECISION)
GROUP BY 1, 2";

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
    /// The grid is binned by the warehouse: only the non-empty cells come back.
    pub fn query(&self) -> Query {
        Query {
            sql: HEATMAP_SQL.to_string(),
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
        }
    }
}

/// Rows in `events`, rows staged by all loads (the sum over `loaded_files`), and
/// files loaded. Staged minus rows is the duplicates the loads dropped.
pub fn totals() -> Query {
    Query {
        sql: "SELECT (SELECT COUNT(*) FROM events), (SELECT CAST(COALESCE(SUM(row_count), 0) AS BIGINT) FROM loaded_files), (SELECT COUNT(*) FROM loaded_files)".into(),
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
        }
    }

    #[test]
    fn values_never_enter_the_sql_text() {
        let query = heatmap().query();
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
        let query = heatmap().query();
        for (name, _) in &query.parameters {
            assert!(query.sql.contains(&format!(":{name} ")) || query.sql.contains(&format!(":{name})")));
        }
    }

    #[test]
    fn times_are_sent_as_utc_text_to_the_millisecond() {
        assert_eq!(timestamp_text(1_767_225_600_123), "2026-01-01 00:00:00.123");
        let query = heatmap().query();
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
