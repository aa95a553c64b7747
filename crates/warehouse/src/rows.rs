//! A lake line (one event as JSON) as a row of PostgreSQL's COPY text format.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The columns of one lake line; other fields are ignored, as Redshift's COPY does.
#[derive(Deserialize)]
struct LakeRow<'a> {
    #[serde(borrow)]
    app_name: Cow<'a, str>,
    #[serde(borrow, default)]
    app_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event_version: Cow<'a, str>,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    event_timestamp: i64,
    server_timestamp: i64,
    #[serde(borrow)]
    client_id: Cow<'a, str>,
    #[serde(borrow, default)]
    level_id: Option<Cow<'a, str>>,
    #[serde(default)]
    position_x: Option<f64>,
    #[serde(default)]
    position_y: Option<f64>,
    /// The game's own attributes, as sent (a JSON object, or absent or null).
    #[serde(borrow, default)]
    event_data: Option<&'a RawValue>,
}

/// Why a line is not a row.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("not an event line: {0}")]
    Json(#[from] serde_json::Error),
    #[error("timestamp {0} ms is out of range")]
    Timestamp(i64),
}

fn text(out: &mut Vec<u8>, value: &str) {
    for byte in value.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
}

fn optional_text(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(v) => text(out, v),
        None => out.extend_from_slice(b"\\N"),
    }
}

fn timestamp(out: &mut Vec<u8>, ms: i64) -> Result<(), RowError> {
    use std::io::Write;
    let time = jiff::Timestamp::from_millisecond(ms).map_err(|_| RowError::Timestamp(ms))?;
    let civil = time.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    // Written straight into the row: strftime would build a String per value.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        civil.year(),
        civil.month(),
        civil.day(),
        civil.hour(),
        civil.minute(),
        civil.second(),
        civil.millisecond()
    );
    Ok(())
}

fn number(out: &mut Vec<u8>, value: Option<f64>) {
    use std::io::Write;
    match value {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.extend_from_slice(b"\\N"),
    }
}

/// Appends `line` as one COPY text row (with its newline).
pub fn append_copy_row(line: &[u8], out: &mut Vec<u8>) -> Result<(), RowError> {
    let row: LakeRow<'_> = serde_json::from_slice(line)?;
    let start = out.len();
    let result = (|| {
        text(out, &row.app_name);
        out.push(b'\t');
        optional_text(out, row.app_version.as_deref());
        out.push(b'\t');
        text(out, &row.event_version);
        out.push(b'\t');
        text(out, &row.event_id);
        out.push(b'\t');
        text(out, &row.event_type);
        out.push(b'\t');
        timestamp(out, row.event_timestamp)?;
        out.push(b'\t');
        timestamp(out, row.server_timestamp)?;
        out.push(b'\t');
        text(out, &row.client_id);
        out.push(b'\t');
        optional_text(out, row.level_id.as_deref());
        out.push(b'\t');
        number(out, row.position_x);
        out.push(b'\t');
        number(out, row.position_y);
        out.push(b'\t');
        optional_text(out, row.event_data.map(RawValue::get));
        out.push(b'\n');
        Ok(())
    })();
    if result.is_err() {
        out.truncate(start);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_becomes_an_escaped_row() {
        let line = br#"{"server_timestamp":1767225600123,"event_id":"e","client_id":"c","app_name":"g","event_version":"1","event_type":"tab\there \\ back","event_timestamp":0,"level_id":null,"position_x":12.5,"position_y":3,"extra":{"x":1}}"#;
        let mut out = Vec::new();
        append_copy_row(line, &mut out).expect("row");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "g\t\\N\t1\te\ttab\\there \\\\ back\t1970-01-01 00:00:00.000\t2026-01-01 00:00:00.123\tc\t\\N\t12.5\t3\t\\N\n"
        );
        // event_data goes in as its JSON text, escaped for COPY like any text.
        let line = br#"{"server_timestamp":0,"event_id":"e","client_id":"c","app_name":"g","event_version":"1","event_type":"t","event_timestamp":0,"event_data":{"note":"a\\b","n":[1,2.5]}}"#;
        let mut out = Vec::new();
        append_copy_row(line, &mut out).expect("row");
        let row = String::from_utf8(out).expect("utf8");
        assert!(row.ends_with("\t{\"note\":\"a\\\\\\\\b\",\"n\":[1,2.5]}\n"), "{row}");
        let mut out = b"kept".to_vec();
        assert!(append_copy_row(b"{\"event_id\":1}", &mut out).is_err());
        assert_eq!(out, b"kept");
    }
}
