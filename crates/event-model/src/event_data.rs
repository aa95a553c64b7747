//! `event_data`: a game's own attributes of an event (a purchase's SKU and price, a
//! death's cause), an optional JSON object. It is kept exactly as sent (the lake line
//! holds its bytes verbatim), so it is only checked, never rewritten: an object, at most
//! `max_bytes` of JSON and `max_depth` levels of nesting, numbers a 64-bit float holds,
//! keys without control characters. `null` means none.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::Key;
use crate::rejection::{Reason, Rejection};

/// The field's name.
pub const FIELD: &str = "event_data";
/// Default bound on its JSON text.
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024;
/// Default bound on its nesting (the object itself is level 1).
pub const DEFAULT_MAX_DEPTH: usize = 16;
/// Keys of one object compared one by one for duplicates; more go into a set.
const LINEAR_KEYS: usize = 32;

/// Checks `raw`, the value of `event_data` as sent, in one pass over its text that
/// allocates one buffer of borrowed keys for a valid one (values are skipped).
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
    let mut walk = Walk {
        max_depth,
        path: Vec::new(),
        keys: Vec::new(),
        problem: None,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    match Node(&mut walk).deserialize(&mut deserializer) {
        Ok(()) => Ok(()),
        Err(error) => Err(walk.problem.take().unwrap_or_else(|| {
            // The record parsed as JSON and the walk stops nesting at `max_depth`
            // (far below the parser's own bound), so the parser refused a number: one
            // too large for a float (1e999).
            Rejection::field(
                Reason::EventDataInvalidNumber,
                FIELD,
                format!("not a finite number: {error}"),
            )
        })),
    }
}

/// One step of the path from `event_data` to a value.
enum Step<'de> {
    Key(Cow<'de, str>),
    Index(usize),
}

/// The walk's state: where it is, and the first problem it found.
struct Walk<'de> {
    max_depth: usize,
    path: Vec<Step<'de>>,
    /// The keys of every object open on the path, each object's after its parent's:
    /// one buffer for the whole walk.
    keys: Vec<Cow<'de, str>>,
    problem: Option<Rejection>,
}

impl Walk<'_> {
    /// The JSON Pointer of the current place.
    fn pointer(&self) -> String {
        let mut pointer = format!("/{FIELD}");
        for step in &self.path {
            match step {
                Step::Key(key) => {
                    pointer.push('/');
                    pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                }
                Step::Index(index) => pointer.push_str(&format!("/{index}")),
            }
        }
        pointer
    }

    /// Records `problem` and stops the parse (its error is replaced by `problem`).
    fn stop<E: de::Error>(&mut self, reason: Reason, detail: String) -> E {
        self.problem = Some(Rejection::field(reason, FIELD, detail));
        E::custom("event_data check")
    }

    /// Enters an object or array at the current place: too deep stops the walk. The
    /// object itself is level 1, so the path is one step shorter than the level.
    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        if self.path.len() + 1 > self.max_depth {
            let detail = format!("more than {} levels at {}", self.max_depth, self.pointer());
            return Err(self.stop(Reason::EventDataTooDeep, detail));
        }
        Ok(())
    }
}

/// A value at the walk's current place.
struct Node<'w, 'de>(&'w mut Walk<'de>);

impl<'de> DeserializeSeed<'de> for Node<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let walk = self.0;
        walk.enter()?;
        let first = walk.keys.len();
        // Past a few dozen keys, a set: a 16 KiB object can hold thousands.
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if key.chars().any(char::is_control) {
                let detail = format!("a key with a control character at {}: {key:?}", walk.pointer());
                return Err(walk.stop(Reason::EventDataInvalidKey, detail));
            }
            let seen = match &mut many {
                Some(set) => !set.insert(key.clone()),
                None => {
                    let seen = walk.keys[first..].contains(&key);
                    walk.keys.push(key.clone());
                    if walk.keys.len() - first > LINEAR_KEYS {
                        many = Some(walk.keys.drain(first..).collect());
                    }
                    seen
                }
            };
            if seen {
                // Readers disagree on which copy wins (JSONB and serde_json keep the
                // last, others the first), and the lake keeps both.
                let detail = format!("the key {key:?} appears twice at {}", walk.pointer());
                return Err(walk.stop(Reason::EventDataDuplicateKey, detail));
            }
            walk.path.push(Step::Key(key));
            map.next_value_seed(Node(&mut *walk))?;
            walk.path.pop();
        }
        walk.keys.truncate(first);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let walk = self.0;
        walk.enter()?;
        let mut index = 0;
        loop {
            walk.path.push(Step::Index(index));
            let more = seq.next_element_seed(Node(&mut *walk))?.is_some();
            walk.path.pop();
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }
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
        assert_eq!(reason(r#"{"price": 1, "price": 2}"#), Reason::EventDataDuplicateKey);
    }

    #[test]
    fn a_key_twice_in_one_object_is_refused_the_same_key_in_two_is_not() {
        let fine = r#"{"a": {"id": 1}, "b": {"id": 2}, "id": [{"id": 3}, {"id": 4}]}"#;
        assert_eq!(checked(fine), Ok(()));
        let twice = checked(r#"{"a": {"id": 1, "x": 0, "id": 2}}"#).expect_err("twice");
        assert_eq!(twice.reason, Reason::EventDataDuplicateKey);
        assert!(
            twice.detail.ends_with("appears twice at /event_data/a"),
            "{}",
            twice.detail
        );
        // An escaped key is the same key.
        assert_eq!(
            checked(r#"{"ab": 1, "a\u0062": 2}"#).map_err(|e| e.reason),
            Err(Reason::EventDataDuplicateKey)
        );
        // Past the keys compared one by one, in the set.
        let keys: Vec<String> = (0..100).map(|i| format!(r#""k{i}": {i}"#)).collect();
        let big = |extra: &str| {
            let raw: Box<RawValue> = serde_json::from_str(&format!("{{{}{extra}}}", keys.join(","))).expect("JSON");
            check(&raw, 10_000, 3).map_err(|e| e.reason)
        };
        assert_eq!(big(""), Ok(()));
        assert_eq!(big(r#","k3": 0"#), Err(Reason::EventDataDuplicateKey));
        assert_eq!(big(r#","k99": 0"#), Err(Reason::EventDataDuplicateKey));
    }

    #[test]
    fn nesting_far_beyond_the_bound_is_refused_and_brackets_in_strings_do_not_nest() {
        let deep = format!("{{\"a\": {}1{}}}", "[".repeat(500), "]".repeat(500));
        let raw: Box<RawValue> = serde_json::from_str(&deep).expect("JSON");
        assert_eq!(
            check(&raw, 10_000, 3).map_err(|e| e.reason),
            Err(Reason::EventDataTooDeep)
        );
        let depth = |json: &str, max_depth: usize| {
            let raw: Box<RawValue> = serde_json::from_str(json).expect("JSON");
            check(&raw, 10_000, max_depth).map_err(|e| e.reason)
        };
        // Three levels: the object, `b`'s array, the object in it.
        let three = r#"{"a": "[[[{{", "b": [{}]}"#;
        assert_eq!(depth(three, 3), Ok(()));
        assert_eq!(depth(three, 2), Err(Reason::EventDataTooDeep));
        assert_eq!(depth(r#"{"a": "\"[[["}"#, 1), Ok(()));
    }

    #[test]
    fn the_detail_points_at_the_failing_place() {
        let deep = checked(r#"{"a/b": {"c": [{"d": 1}]}}"#).expect_err("too deep");
        assert!(deep.detail.ends_with("at /event_data/a~1b/c/0"), "{}", deep.detail);
        let key = checked(r#"{"ok": {"bad\nkey": 1}}"#).expect_err("bad key");
        assert!(key.detail.contains("at /event_data/ok"), "{}", key.detail);
    }
}
