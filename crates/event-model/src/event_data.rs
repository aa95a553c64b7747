//! `event_data`: a game's own attributes of an event (a purchase's SKU and price, a
//! death's cause), an optional JSON object. It is kept exactly as sent (the lake line
//! holds its bytes verbatim), so it is only checked, never rewritten: an object, at most
//! `max_bytes` of JSON and `max_depth` levels of nesting, numbers a 64-bit float holds,
//! keys without control characters. `null` means none.

use serde_json::Value;
use serde_json::value::RawValue;

use crate::rejection::{Reason, Rejection};

/// The field's name.
pub const FIELD: &str = "event_data";
/// Default bound on its JSON text.
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024;
/// Default bound on its nesting (the object itself is level 1).
pub const DEFAULT_MAX_DEPTH: usize = 16;

/// Checks `raw`, the value of `event_data` as sent.
pub fn check(raw: &RawValue, max_bytes: usize, max_depth: usize) -> Result<(), Rejection> {
    let text = raw.get();
    if text == "null" {
        return Ok(());
    }
    if !text.starts_with('{') {
        return Err(Rejection::field(
            Reason::EventDataNotAnObject,
            FIELD,
            "a JSON object is expected",
        ));
    }
    if text.len() > max_bytes {
        return Err(Rejection::field(
            Reason::EventDataTooLarge,
            FIELD,
            format!("{} bytes, more than {max_bytes}", text.len()),
        ));
    }
    // Nesting far beyond the limit is refused before the parser meets its own bound
    // (128 levels); nearer, the walk below names where.
    if nesting(text) > max_depth.saturating_mul(2).min(100) {
        return Err(Rejection::field(
            Reason::EventDataTooDeep,
            FIELD,
            format!("more than {max_depth} levels"),
        ));
    }
    // The record already parsed as JSON and the nesting is bounded, so what fails here
    // is a number too large for a float (1e999).
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Rejection::field(
            Reason::EventDataInvalidNumber,
            FIELD,
            format!("not a finite number: {e}"),
        )
    })?;
    walk(&value, 1, max_depth, &mut String::new())
}

/// The deepest nesting of objects and arrays in JSON `text` (brackets in strings aside).
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in text.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Checks nesting and keys below `value`, at `depth`, whose JSON Pointer is `pointer`.
fn walk(value: &Value, depth: usize, max_depth: usize, pointer: &mut String) -> Result<(), Rejection> {
    let nested = matches!(value, Value::Object(_) | Value::Array(_));
    if nested && depth > max_depth {
        return Err(Rejection::field(
            Reason::EventDataTooDeep,
            FIELD,
            format!("more than {max_depth} levels at /{FIELD}{pointer}"),
        ));
    }
    let mark = pointer.len();
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key.chars().any(char::is_control) {
                    return Err(Rejection::field(
                        Reason::EventDataInvalidKey,
                        FIELD,
                        format!("a key with a control character at /{FIELD}{pointer}: {key:?}"),
                    ));
                }
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                walk(child, depth + 1, max_depth, pointer)?;
                pointer.truncate(mark);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                pointer.push_str(&format!("/{index}"));
                walk(child, depth + 1, max_depth, pointer)?;
                pointer.truncate(mark);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(json: &str) -> Result<(), Rejection> {
        let raw: Box<RawValue> = serde_json::from_str(json).expect("JSON");
        check(&raw, 200, 3)
    }

    fn reason(json: &str) -> Reason {
        checked(json).expect_err("rejected").reason
    }

    #[test]
    fn an_object_within_the_bounds_passes_and_null_means_none() {
        for fine in [
            "{}",
            "null",
            r#"{"sku": "sword-01", "price": 4.99, "currency": "EUR"}"#,
            r#"{"cause": {"weapon": ["axe", 2]}}"#,
            r#"{"name": "Zoë, ☃ and \"quotes\""}"#,
        ] {
            assert_eq!(checked(fine), Ok(()), "{fine}");
        }
    }

    #[test]
    fn each_way_to_fail_has_its_own_reason() {
        for not_object in ["[1]", "\"text\"", "3", "true"] {
            assert_eq!(reason(not_object), Reason::EventDataNotAnObject, "{not_object}");
        }
        assert_eq!(
            reason(&format!(r#"{{"a": "{}"}}"#, "x".repeat(200))),
            Reason::EventDataTooLarge
        );
        assert_eq!(reason(r#"{"a": {"b": {"c": {}}}}"#), Reason::EventDataTooDeep);
        assert_eq!(reason(r#"{"a": [[[]]]}"#), Reason::EventDataTooDeep);
        assert_eq!(reason(r#"{"a\u0007b": 1}"#), Reason::EventDataInvalidKey);
        assert_eq!(reason(r#"{"price": 1e999}"#), Reason::EventDataInvalidNumber);
    }

    #[test]
    fn nesting_far_beyond_the_bound_is_refused_before_parsing() {
        let deep = format!("{{\"a\": {}1{}}}", "[".repeat(500), "]".repeat(500));
        let raw: Box<RawValue> = serde_json::from_str(&deep).expect("JSON");
        assert_eq!(
            check(&raw, 10_000, 3).map_err(|e| e.reason),
            Err(Reason::EventDataTooDeep)
        );
        assert_eq!(nesting(r#"{"a": "[[[{{", "b": [{}]}"#), 3);
        assert_eq!(nesting(r#"{"a": "\"[[["}"#), 1);
    }

    #[test]
    fn the_detail_points_at_the_failing_place() {
        let deep = checked(r#"{"a/b": {"c": [{"d": 1}]}}"#).expect_err("too deep");
        assert!(deep.detail.ends_with("at /event_data/a~1b/c/0"), "{}", deep.detail);
        let key = checked(r#"{"ok": {"bad\nkey": 1}}"#).expect_err("bad key");
        assert!(key.detail.contains("at /event_data/ok"), "{}", key.detail);
    }
}
