//! A game's own JSON Schema per event type (`EVENT_SCHEMAS`, `SCHEMA_MODE`): an event
//! whose type has a schema must match it, or it is rejected as `schema_violation` with
//! the JSON Pointer of the first field that fails. Schemas are compiled once, at start;
//! an event is parsed a second time (into a `serde_json::Value`) only when a schema
//! applies to it. Where the documents come from (a directory, an S3 prefix) is the
//! services' business: here they are text and the path that names what they are for.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use crate::rejection::{Reason, Rejection};

/// What happens to an event, by whether its type has a schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchemaMode {
    /// No schema is applied.
    #[default]
    Off,
    /// Event types with a schema are validated; the others pass.
    Known,
    /// Event types with a schema are validated; the others are rejected (`no_schema`).
    Strict,
}

impl FromStr for SchemaMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "off" => Ok(Self::Off),
            "known" => Ok(Self::Known),
            "strict" => Ok(Self::Strict),
            other => Err(format!("'{other}' is not one of off, known, strict")),
        }
    }
}

impl fmt::Display for SchemaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Known => "known",
            Self::Strict => "strict",
        })
    }
}

/// What one schema document is for: `<app_name>/<event_type>.json` applies to every
/// version of the type, `<app_name>/<event_type>/<event_version>.json` to one version
/// (and wins over the first for it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaKey {
    pub app_name: String,
    pub event_type: String,
    pub event_version: Option<String>,
}

impl SchemaKey {
    /// The key of a document at `path` (relative to the directory or prefix, `/`
    /// separated); `None` for a file that is not a schema (not `.json`, or hidden).
    pub fn from_path(path: &str) -> Result<Option<SchemaKey>, SchemaError> {
        let Some(stem) = path.strip_suffix(".json") else {
            return Ok(None);
        };
        if path.split('/').any(|part| part.starts_with('.')) {
            return Ok(None);
        }
        let parts: Vec<&str> = stem.split('/').collect();
        let key = match parts.as_slice() {
            [app, event_type] => SchemaKey {
                app_name: (*app).to_string(),
                event_type: (*event_type).to_string(),
                event_version: None,
            },
            [app, event_type, version] => SchemaKey {
                app_name: (*app).to_string(),
                event_type: (*event_type).to_string(),
                event_version: Some((*version).to_string()),
            },
            _ => return Err(SchemaError::Layout(path.to_string())),
        };
        let parts = [Some(&key.app_name), Some(&key.event_type), key.event_version.as_ref()];
        if parts.into_iter().flatten().any(|part| part.is_empty()) {
            return Err(SchemaError::Layout(path.to_string()));
        }
        Ok(Some(key))
    }
}

impl fmt::Display for SchemaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app_name, self.event_type)?;
        match &self.event_version {
            Some(version) => write!(f, "/{version}.json"),
            None => f.write_str(".json"),
        }
    }
}

/// A schema document that cannot be used; the service does not start.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{0}: a schema's path is <app_name>/<event_type>.json or <app_name>/<event_type>/<event_version>.json")]
    Layout(String),
    #[error("{key}: not JSON: {error}")]
    NotJson { key: SchemaKey, error: serde_json::Error },
    #[error("{key}: not a valid JSON Schema: {error}")]
    Invalid { key: SchemaKey, error: String },
    #[error("{0}: given twice")]
    Duplicate(SchemaKey),
}

/// The schemas of one event type: for any version, and per version.
#[derive(Default)]
struct TypeSchemas {
    any_version: Option<jsonschema::Validator>,
    by_version: HashMap<String, jsonschema::Validator>,
}

/// Every schema, compiled, and the mode that says how they apply.
#[derive(Default)]
pub struct EventSchemas {
    mode: SchemaMode,
    /// By app name, then event type (looked up by `&str`, without allocating).
    apps: HashMap<String, HashMap<String, TypeSchemas>>,
}

impl fmt::Debug for EventSchemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSchemas")
            .field("mode", &self.mode)
            .field("schemas", &self.len())
            .finish()
    }
}

impl EventSchemas {
    pub fn new(mode: SchemaMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// How many schemas are loaded.
    pub fn len(&self) -> usize {
        let of_type = |t: &TypeSchemas| usize::from(t.any_version.is_some()) + t.by_version.len();
        self.apps.values().flat_map(HashMap::values).map(of_type).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Compiles `document` (JSON Schema text; its `$schema` picks the draft, 2020-12
    /// when it has none) for the event type `key` names.
    pub fn add(&mut self, key: SchemaKey, document: &str) -> Result<(), SchemaError> {
        let schema: Value = match serde_json::from_str(document) {
            Ok(schema) => schema,
            Err(error) => return Err(SchemaError::NotJson { key, error }),
        };
        let validator = match jsonschema::validator_for(&schema) {
            Ok(validator) => validator,
            Err(error) => {
                let error = error.to_string();
                return Err(SchemaError::Invalid { key, error });
            }
        };
        let types = self.apps.entry(key.app_name.clone()).or_default();
        let schemas = types.entry(key.event_type.clone()).or_default();
        let taken = match &key.event_version {
            None => schemas.any_version.is_some(),
            Some(version) => schemas.by_version.contains_key(version),
        };
        if taken {
            return Err(SchemaError::Duplicate(key));
        }
        match key.event_version {
            None => schemas.any_version = Some(validator),
            Some(version) => {
                schemas.by_version.insert(version, validator);
            }
        }
        Ok(())
    }

    fn schema_for(&self, app_name: &str, event_type: &str, event_version: &str) -> Option<&jsonschema::Validator> {
        let schemas = self.apps.get(app_name)?.get(event_type)?;
        schemas.by_version.get(event_version).or(schemas.any_version.as_ref())
    }

    /// Checks the event of `app_name`, `event_type` and `event_version` against its
    /// schema; `instance` makes the event as JSON, called only when a schema applies.
    pub fn check(
        &self,
        app_name: &str,
        event_type: &str,
        event_version: &str,
        instance: impl FnOnce() -> Result<Value, serde_json::Error>,
    ) -> Result<(), Rejection> {
        if self.mode == SchemaMode::Off {
            return Ok(());
        }
        let Some(validator) = self.schema_for(app_name, event_type, event_version) else {
            return match self.mode {
                SchemaMode::Strict => Err(Rejection::field(
                    Reason::NoSchema,
                    "event_type",
                    format!("no schema for app {app_name:?}, event type {event_type:?}, version {event_version:?}"),
                )),
                SchemaMode::Off | SchemaMode::Known => Ok(()),
            };
        };
        // A field outside the event's own could hold a number no float holds (1e999),
        // which the lake keeps verbatim; its schema cannot vouch for such an event.
        let instance =
            instance().map_err(|e| Rejection::new(Reason::SchemaViolation, format!("cannot be checked: {e}")))?;
        let Err(error) = validator.validate(&instance) else {
            return Ok(());
        };
        let mut pointer = error.instance_path().as_str().to_string();
        // A missing or an unexpected property fails at its object; the field to name is
        // the property.
        let property = match error.kind() {
            ValidationErrorKind::Required { property } => {
                Some(property.as_str().map_or_else(|| property.to_string(), str::to_string))
            }
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => unexpected.first().cloned(),
            _ => None,
        };
        if let Some(name) = property {
            pointer.push('/');
            pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
        }
        let message = bounded(&error.to_string(), MAX_MESSAGE_CHARS);
        let at = if pointer.is_empty() {
            "the event"
        } else {
            pointer.as_str()
        };
        let detail = format!("at {at}: {message}");
        Err(match top_level_field(&pointer) {
            Some(field) => Rejection::field(Reason::SchemaViolation, &field, detail),
            None => Rejection::new(Reason::SchemaViolation, detail),
        })
    }
}

/// A schema's message quotes the failing value, which can be as large as the event.
const MAX_MESSAGE_CHARS: usize = 300;

fn bounded(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The event's field a JSON Pointer starts in (`/event_data/sku` → `event_data`).
fn top_level_field(pointer: &str) -> Option<String> {
    let first = pointer.strip_prefix('/')?.split('/').next()?;
    Some(first.replace("~1", "/").replace("~0", "~"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PURCHASE: &str = r#"{
        "type": "object",
        "required": ["event_data"],
        "properties": {
            "event_data": {
                "type": "object",
                "required": ["sku", "price", "currency"],
                "properties": {
                    "sku": {"type": "string"},
                    "price": {"type": "number", "minimum": 0},
                    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
                }
            }
        }
    }"#;

    fn key(path: &str) -> SchemaKey {
        SchemaKey::from_path(path)
            .expect("a valid layout")
            .expect("a schema file")
    }

    fn schemas(mode: SchemaMode) -> EventSchemas {
        let mut schemas = EventSchemas::new(mode);
        schemas
            .add(key("game/purchase.json"), PURCHASE)
            .expect("a valid schema");
        schemas
            .add(
                key("game/purchase/2.json"),
                r#"{"required": ["event_data"], "properties": {"event_data": {"required": ["receipt"]}}}"#,
            )
            .expect("a valid schema");
        schemas
    }

    fn purchase(event_data: &str) -> String {
        format!(r#"{{"event_type": "purchase", "event_data": {event_data}}}"#)
    }

    /// `schemas.check` of the event `record` (JSON text).
    fn check(
        schemas: &EventSchemas,
        app: &str,
        event_type: &str,
        version: &str,
        record: &str,
    ) -> Result<(), Rejection> {
        schemas.check(app, event_type, version, || serde_json::from_str(record))
    }

    #[test]
    fn schema_paths_name_app_type_and_optionally_version() {
        assert_eq!(
            key("game/purchase.json"),
            SchemaKey {
                app_name: "game".into(),
                event_type: "purchase".into(),
                event_version: None
            }
        );
        assert_eq!(key("game/purchase/1.0.0.json").event_version.as_deref(), Some("1.0.0"));
        assert_eq!(SchemaKey::from_path("README.md").expect("not a schema"), None);
        assert_eq!(SchemaKey::from_path("game/.purchase.json").expect("hidden"), None);
        for bad in ["purchase.json", "a/b/c/d.json", "game//purchase.json", "/purchase.json"] {
            assert!(
                matches!(SchemaKey::from_path(bad), Err(SchemaError::Layout(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_schema_violation_names_the_pointer_of_the_first_failing_field() {
        let schemas = schemas(SchemaMode::Known);
        let ok = purchase(r#"{"sku": "gem-pack", "price": 4.99, "currency": "EUR"}"#);
        assert_eq!(check(&schemas, "game", "purchase", "1", &ok), Ok(()));

        let wrong_type = purchase(r#"{"sku": "gem-pack", "price": "4.99", "currency": "EUR"}"#);
        let rejection = check(&schemas, "game", "purchase", "1", &wrong_type).expect_err("a string price");
        assert_eq!(rejection.reason, Reason::SchemaViolation);
        assert_eq!(rejection.field.as_deref(), Some("event_data"));
        assert!(
            rejection.detail.starts_with("at /event_data/price: "),
            "{}",
            rejection.detail
        );

        let missing = purchase(r#"{"sku": "gem-pack", "price": 4.99}"#);
        let rejection = check(&schemas, "game", "purchase", "1", &missing).expect_err("no currency");
        assert!(
            rejection.detail.starts_with("at /event_data/currency: "),
            "{}",
            rejection.detail
        );

        let extra = purchase(r#"{"sku": "gem-pack", "price": 4.99, "currency": "EUR", "a/b": 1}"#);
        let strict = r#"{"properties": {"event_data": {"additionalProperties": false, "properties": {"sku": {}}}}}"#;
        let mut closed = EventSchemas::new(SchemaMode::Known);
        closed.add(key("game/purchase.json"), strict).expect("a valid schema");
        let rejection = check(&closed, "game", "purchase", "1", &extra).expect_err("unexpected fields");
        // The first unexpected key in the object's order (serde_json's maps are sorted).
        assert!(
            rejection.detail.starts_with("at /event_data/a~1b: "),
            "{}",
            rejection.detail
        );

        let no_data = r#"{"event_type": "purchase"}"#;
        let rejection = check(&schemas, "game", "purchase", "1", no_data).expect_err("no event_data");
        assert!(rejection.detail.starts_with("at /event_data: "), "{}", rejection.detail);
    }

    #[test]
    fn a_version_schema_wins_over_the_types_schema() {
        let schemas = schemas(SchemaMode::Known);
        let old_shape = purchase(r#"{"sku": "gem-pack", "price": 4.99, "currency": "EUR"}"#);
        let rejection = check(&schemas, "game", "purchase", "2", &old_shape).expect_err("version 2 needs a receipt");
        assert!(
            rejection.detail.starts_with("at /event_data/receipt: "),
            "{}",
            rejection.detail
        );
        assert_eq!(
            check(&schemas, "game", "purchase", "2", &purchase(r#"{"receipt": "r-1"}"#)),
            Ok(())
        );
    }

    #[test]
    fn the_mode_decides_what_happens_to_types_without_a_schema() {
        let death = r#"{"event_type": "death"}"#;
        assert_eq!(check(&schemas(SchemaMode::Known), "game", "death", "1", death), Ok(()));
        assert_eq!(
            check(&schemas(SchemaMode::Known), "other", "purchase", "1", death),
            Ok(())
        );
        let rejection = check(&schemas(SchemaMode::Strict), "game", "death", "1", death).expect_err("strict");
        assert_eq!(rejection.reason, Reason::NoSchema);
        assert_eq!(rejection.field.as_deref(), Some("event_type"));
        let invalid = purchase("{}");
        assert_eq!(
            check(&schemas(SchemaMode::Off), "game", "purchase", "1", &invalid),
            Ok(())
        );
        assert!(SchemaMode::from_str("lenient").is_err());
        for name in ["off", "known", "strict"] {
            assert_eq!(SchemaMode::from_str(name).map(|m| m.to_string()), Ok(name.to_string()));
        }
    }

    #[test]
    fn documents_that_are_not_schemas_are_refused_with_their_name() {
        let mut schemas = EventSchemas::new(SchemaMode::Known);
        let error = schemas.add(key("game/a.json"), "{not json").expect_err("not JSON");
        assert!(error.to_string().starts_with("game/a.json: not JSON"), "{error}");
        let error = schemas
            .add(key("game/b.json"), r#"{"type": 12}"#)
            .expect_err("not a schema");
        assert!(
            error.to_string().starts_with("game/b.json: not a valid JSON Schema"),
            "{error}"
        );
        schemas.add(key("game/c.json"), "{}").expect("the empty schema");
        let error = schemas.add(key("game/c.json"), "{}").expect_err("twice");
        assert!(matches!(error, SchemaError::Duplicate(_)));
        assert_eq!(schemas.len(), 1);
    }

    #[test]
    fn a_long_failing_value_is_cut_in_the_detail() {
        let schemas = schemas(SchemaMode::Known);
        let long = "x".repeat(5_000);
        let record = purchase(&format!(r#"{{"sku": "s", "price": "{long}", "currency": "EUR"}}"#));
        let rejection = check(&schemas, "game", "purchase", "1", &record).expect_err("a string price");
        assert!(rejection.detail.chars().count() < 400, "{}", rejection.detail.len());
    }
}
