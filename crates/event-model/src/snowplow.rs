//! The Snowplow enriched event: 131 tab-separated fields, turned into the JSON shape
//! the Snowplow Analytics SDKs produce: typed values, ISO 8601 timestamps, empty
//! fields left out, each context and the self-describing event under
//! `contexts_<vendor>_<name>_<major>` / `unstruct_event_<vendor>_<name>_<major>` in
//! snake case (derived contexts under the same `contexts_` keys as the tracker's, after
//! them), and `geo_location` as the latitude and longitude text as it arrived,
//! `"lat,lon"`.

use serde_json::{Map, Number, Value};

use crate::rejection::{Reason, Rejection};

/// How a field's text becomes JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Double,
    Bool,
    Timestamp,
    Contexts,
    Unstruct,
}

use Kind::{Bool, Contexts, Double, Int, Text, Timestamp, Unstruct};

/// The fields of an enriched event, in TSV order.
const FIELDS: [(&str, Kind); 131] = [
    ("app_id", Text),
    ("platform", Text),
    ("etl_tstamp", Timestamp),
    ("collector_tstamp", Timestamp),
    ("dvce_created_tstamp", Timestamp),
    ("event", Text),
    ("event_id", Text),
    ("txn_id", Int),
    ("name_tracker", Text),
    ("v_tracker", Text),
    ("v_collector", Text),
    ("v_etl", Text),
    ("user_id", Text),
    ("user_ipaddress", Text),
    ("user_fingerprint", Text),
    ("domain_userid", Text),
    ("domain_sessionidx", Int),
    ("network_userid", Text),
    ("geo_country", Text),
    ("geo_region", Text),
    ("geo_city", Text),
    ("geo_zipcode", Text),
    ("geo_latitude", Double),
    ("geo_longitude", Double),
    ("geo_region_name", Text),
    ("ip_isp", Text),
    ("ip_organization", Text),
    ("ip_domain", Text),
    ("ip_netspeed", Text),
    ("page_url", Text),
    ("page_title", Text),
    ("page_referrer", Text),
    ("page_urlscheme", Text),
    ("page_urlhost", Text),
    ("page_urlport", Int),
    ("page_urlpath", Text),
    ("page_urlquery", Text),
    ("page_urlfragment", Text),
    ("refr_urlscheme", Text),
    ("refr_urlhost", Text),
    ("refr_urlport", Int),
    ("refr_urlpath", Text),
    ("refr_urlquery", Text),
    ("refr_urlfragment", Text),
    ("refr_medium", Text),
    ("refr_source", Text),
    ("refr_term", Text),
    ("mkt_medium", Text),
    ("mkt_source", Text),
    ("mkt_term", Text),
    ("mkt_content", Text),
    ("mkt_campaign", Text),
    ("contexts", Contexts),
    ("se_category", Text),
    ("se_action", Text),
    ("se_label", Text),
    ("se_property", Text),
    ("se_value", Double),
    ("unstruct_event", Unstruct),
    ("tr_orderid", Text),
    ("tr_affiliation", Text),
    ("tr_total", Double),
    ("tr_tax", Double),
    ("tr_shipping", Double),
    ("tr_city", Text),
    ("tr_state", Text),
    ("tr_country", Text),
    ("ti_orderid", Text),
    ("ti_sku", Text),
    ("ti_name", Text),
    ("ti_category", Text),
    ("ti_price", Double),
    ("ti_quantity", Int),
    ("pp_xoffset_min", Int),
    ("pp_xoffset_max", Int),
    ("pp_yoffset_min", Int),
    ("pp_yoffset_max", Int),
    ("useragent", Text),
    ("br_name", Text),
    ("br_family", Text),
    ("br_version", Text),
    ("br_type", Text),
    ("br_renderengine", Text),
    ("br_lang", Text),
    ("br_features_pdf", Bool),
    ("br_features_flash", Bool),
    ("br_features_java", Bool),
    ("br_features_director", Bool),
    ("br_features_quicktime", Bool),
    ("br_features_realplayer", Bool),
    ("br_features_windowsmedia", Bool),
    ("br_features_gears", Bool),
    ("br_features_silverlight", Bool),
    ("br_cookies", Bool),
    ("br_colordepth", Text),
    ("br_viewwidth", Int),
    ("br_viewheight", Int),
    ("os_name", Text),
    ("os_family", Text),
    ("os_manufacturer", Text),
    ("os_timezone", Text),
    ("dvce_type", Text),
    ("dvce_ismobile", Bool),
    ("dvce_screenwidth", Int),
    ("dvce_screenheight", Int),
    ("doc_charset", Text),
    ("doc_width", Int),
    ("doc_height", Int),
    ("tr_currency", Text),
    ("tr_total_base", Double),
    ("tr_tax_base", Double),
    ("tr_shipping_base", Double),
    ("ti_currency", Text),
    ("ti_price_base", Double),
    ("base_currency", Text),
    ("geo_timezone", Text),
    ("mkt_clickid", Text),
    ("mkt_network", Text),
    ("etl_tags", Text),
    ("dvce_sent_tstamp", Timestamp),
    ("refr_domain_userid", Text),
    ("refr_device_tstamp", Timestamp),
    ("derived_contexts", Contexts),
    ("domain_sessionid", Text),
    ("derived_tstamp", Timestamp),
    ("event_vendor", Text),
    ("event_name", Text),
    ("event_format", Text),
    ("event_version", Text),
    ("event_fingerprint", Text),
    ("true_tstamp", Timestamp),
];

/// Fields in an enriched event.
pub const FIELD_COUNT: usize = FIELDS.len();
const LATITUDE: usize = 22;
const LONGITUDE: usize = 23;

/// The TSV position of a field (for writing enriched events).
pub fn field_index(name: &str) -> Option<usize> {
    FIELDS.iter().position(|(n, _)| *n == name)
}

/// Why an enriched event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnowplowError {
    #[error("expected 131 tab-separated fields, found {0}")]
    FieldCount(usize),
    #[error("field {field}: {detail}")]
    Field { field: &'static str, detail: String },
}

impl SnowplowError {
    /// A machine-readable reason, for metrics.
    pub fn reason(&self) -> &'static str {
        self.rejection_reason().as_str()
    }

    fn rejection_reason(&self) -> Reason {
        match self {
            SnowplowError::FieldCount(_) => Reason::SnowplowFieldCount,
            SnowplowError::Field { .. } => Reason::SnowplowBadField,
        }
    }
}

impl From<SnowplowError> for Rejection {
    fn from(error: SnowplowError) -> Self {
        let reason = error.rejection_reason();
        match &error {
            SnowplowError::FieldCount(_) => Rejection::new(reason, error.to_string()),
            SnowplowError::Field { field, detail } => Rejection::field(reason, field, detail.clone()),
        }
    }
}

fn bad(field: &'static str, detail: impl Into<String>) -> SnowplowError {
    SnowplowError::Field {
        field,
        detail: detail.into(),
    }
}

/// Turns one enriched event line into the Analytics SDK's JSON object.
pub fn to_json(line: &str) -> Result<Map<String, Value>, SnowplowError> {
    let values: Vec<&str> = line.trim_end_matches(['\n', '\r']).split('\t').collect();
    if values.len() != FIELDS.len() {
        return Err(SnowplowError::FieldCount(values.len()));
    }
    let mut out = Map::new();
    // The SDKs join the text as it arrived: "37.50" stays "37.50", not 37.5.
    if let (Some(lat), Some(lon)) = (values.get(LATITUDE), values.get(LONGITUDE))
        && !lat.is_empty()
        && !lon.is_empty()
    {
        out.insert("geo_location".into(), Value::String(format!("{lat},{lon}")));
    }
    for ((name, kind), text) in FIELDS.iter().zip(values) {
        if text.is_empty() {
            continue;
        }
        match kind {
            Text => {
                out.insert((*name).to_string(), Value::String(text.to_string()));
            }
            Int => {
                let n: i64 = text
                    .parse()
                    .map_err(|_| bad(name, format!("{text:?} is not an integer")))?;
                out.insert((*name).to_string(), Value::from(n));
            }
            Double => {
                let n = text
                    .parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .ok_or_else(|| bad(name, format!("{text:?} is not a finite number")))?;
                out.insert((*name).to_string(), Value::Number(n));
            }
            Bool => {
                let b = match text {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(bad(name, format!("{text:?} is not a boolean"))),
                };
                out.insert((*name).to_string(), Value::Bool(b));
            }
            Timestamp => {
                out.insert((*name).to_string(), Value::String(iso_timestamp(name, text)?));
            }
            Contexts => {
                for (key, data) in contexts(name, text)? {
                    match out.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                        Value::Array(items) => items.push(data),
                        _ => return Err(bad(name, "a context shares its name with a field")),
                    }
                }
            }
            Unstruct => {
                let (key, data) = unstruct(text)?;
                out.insert(key, data);
            }
        }
    }
    Ok(out)
}

/// `2013-11-26 00:03:57.885` → `2013-11-26T00:03:57.885Z`.
fn iso_timestamp(field: &'static str, text: &str) -> Result<String, SnowplowError> {
    let civil: jiff::civil::DateTime = text
        .parse()
        .map_err(|e| bad(field, format!("{text:?} is not a timestamp: {e}")))?;
    let instant = civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|e| bad(field, e.to_string()))?
        .timestamp();
    Ok(instant.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// Milliseconds since the epoch of an ISO timestamp made by [`to_json`].
pub fn timestamp_ms(iso: &str) -> Option<i64> {
    iso.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// `iglu:com.acme/level_context/jsonschema/1-0-0` → `com_acme_level_context_1`.
pub fn schema_key(schema: &str) -> Option<String> {
    let rest = schema.strip_prefix("iglu:")?;
    let mut parts = rest.split('/');
    let (vendor, name, _format, version) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let major = version.split('-').next()?;
    Some(format!("{}_{}_{}", snake(vendor), snake(name), major))
}

fn snake(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    let mut previous_lower = false;
    for c in text.chars() {
        if c == '.' || c == '-' {
            out.push('_');
            previous_lower = false;
        } else if c.is_ascii_uppercase() {
            if previous_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            previous_lower = false;
        } else {
            out.push(c);
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    out
}

fn self_describing(field: &'static str, value: &Value) -> Result<(String, Value), SnowplowError> {
    let schema = value
        .get("schema")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(field, "a self-describing JSON without a schema"))?;
    let key = schema_key(schema).ok_or_else(|| bad(field, format!("{schema:?} is not an Iglu URI")))?;
    let data = value.get("data").cloned().unwrap_or(Value::Null);
    Ok((key, data))
}

fn contexts(field: &'static str, text: &str) -> Result<Vec<(String, Value)>, SnowplowError> {
    let envelope: Value = serde_json::from_str(text).map_err(|e| bad(field, format!("invalid JSON: {e}")))?;
    let items = envelope
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(field, "no array of contexts in data"))?;
    items
        .iter()
        // The tracker's contexts and the enrichments' derived ones share the `contexts_` keys.
        .map(|item| self_describing(field, item).map(|(key, data)| (format!("contexts_{key}"), data)))
        .collect()
}

fn unstruct(text: &str) -> Result<(String, Value), SnowplowError> {
    let field = "unstruct_event";
    let envelope: Value = serde_json::from_str(text).map_err(|e| bad(field, format!("invalid JSON: {e}")))?;
    let inner = envelope.get("data").ok_or_else(|| bad(field, "no data"))?;
    let (key, data) = self_describing(field, inner)?;
    Ok((format!("unstruct_event_{key}"), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An enriched event shaped like the tracker's: page view with a level context.
    fn enriched(contexts: &str, derived: &str) -> String {
        let mut fields = vec![""; 131];
        fields[0] = "codecombat";
        fields[1] = "web";
        fields[2] = "2017-03-01 12:00:01.250";
        fields[3] = "2017-03-01 12:00:00.123";
        fields[5] = "page_view";
        fields[6] = "c6ef3124-b53a-4b13-a233-0088f79dcbcb";
        fields[9] = "js-2.7.0";
        fields[10] = "ssc-0.9.0-kinesis";
        fields[11] = "kinesis-0.10.0-common-0.24.0";
        fields[12] = "player-42";
        fields[16] = "3";
        fields[22] = "37.443604";
        fields[23] = "-122.4124";
        fields[34] = "443";
        fields[52] = contexts;
        fields[84] = "1";
        fields[85] = "0";
        fields[122] = derived;
        fields.join("\t")
    }

    const LEVEL: &str = r#"{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0","data":[{"schema":"iglu:com.codecombat/level_context/jsonschema/1-0-0","data":{"user_id":"player-42","level_slug":"dungeons-of-kithgard"}},{"schema":"iglu:org.w3/PerformanceTiming/jsonschema/1-0-0","data":{"loadEventEnd":5}}]}"#;

    #[test]
    fn shapes_an_event_like_the_analytics_sdks() {
        let json = to_json(&enriched(LEVEL, "")).expect("valid");
        assert_eq!(json["app_id"], "codecombat");
        assert_eq!(json["collector_tstamp"], "2017-03-01T12:00:00.123Z");
        assert_eq!(json["etl_tstamp"], "2017-03-01T12:00:01.250Z");
        assert_eq!(json["domain_sessionidx"], 3);
        assert_eq!(json["page_urlport"], 443);
        assert_eq!(json["br_features_pdf"], true);
        assert_eq!(json["br_features_flash"], false);
        assert_eq!(json["geo_location"], "37.443604,-122.4124");
        assert_eq!(
            json["contexts_com_codecombat_level_context_1"][0]["level_slug"],
            "dungeons-of-kithgard"
        );
        assert_eq!(json["contexts_org_w3_performance_timing_1"][0]["loadEventEnd"], 5);
        assert!(json.get("txn_id").is_none(), "empty fields are left out");
        assert!(json.get("contexts").is_none());
        assert_eq!(timestamp_ms("2017-03-01T12:00:00.123Z"), Some(1_488_369_600_123));
    }

    #[test]
    fn derived_contexts_and_unstructured_events() {
        let mut line = enriched("", LEVEL);
        let fields: Vec<&str> = line.split('\t').collect();
        let mut fields: Vec<String> = fields.into_iter().map(str::to_string).collect();
        fields[58] = r#"{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0","data":{"schema":"iglu:com.acme/LevelComplete/jsonschema/2-1-0","data":{"stars":3}}}"#.into();
        line = fields.join("\t");
        let json = to_json(&line).expect("valid");
        assert_eq!(
            json["contexts_com_codecombat_level_context_1"][0]["user_id"], "player-42",
            "derived contexts go under contexts_ like the tracker's"
        );
        assert!(json.get("derived_contexts_com_codecombat_level_context_1").is_none());
        assert_eq!(json["unstruct_event_com_acme_level_complete_2"]["stars"], 3);
    }

    #[test]
    fn derived_contexts_merge_after_the_trackers_and_coordinates_keep_their_text() {
        let derived = r#"{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0","data":[{"schema":"iglu:com.codecombat/level_context/jsonschema/1-0-0","data":{"user_id":"player-42","level_slug":"from-enrichment"}}]}"#;
        let mut fields: Vec<String> = enriched(LEVEL, derived).split('\t').map(str::to_string).collect();
        fields[22] = "37.50".into();
        fields[23] = "-122.40".into();
        let json = to_json(&fields.join("\t")).expect("valid");
        let levels: Vec<&str> = json["contexts_com_codecombat_level_context_1"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|item| item["level_slug"].as_str())
            .collect();
        assert_eq!(levels, ["dungeons-of-kithgard", "from-enrichment"]);
        assert_eq!(json["geo_location"], "37.50,-122.40");
        assert_eq!(json["geo_latitude"], 37.5, "the number itself is typed");
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_eq!(to_json("a\tb"), Err(SnowplowError::FieldCount(2)));
        let with_extra = format!("{}\tx", enriched("", ""));
        assert_eq!(to_json(&with_extra), Err(SnowplowError::FieldCount(132)));
        let bad_json = to_json(&enriched("{not json", ""));
        assert!(
            matches!(bad_json, Err(SnowplowError::Field { field: "contexts", .. })),
            "{bad_json:?}"
        );
        let no_schema = to_json(&enriched(r#"{"data":[{"data":{}}]}"#, ""));
        assert!(matches!(no_schema, Err(SnowplowError::Field { .. })));
        let mut fields: Vec<String> = enriched("", "").split('\t').map(str::to_string).collect();
        fields[3] = "yesterday".into();
        assert!(matches!(
            to_json(&fields.join("\t")),
            Err(SnowplowError::Field {
                field: "collector_tstamp",
                ..
            })
        ));
        fields[3] = "2017-03-01 12:00:00.123".into();
        fields[16] = "three".into();
        assert!(to_json(&fields.join("\t")).is_err());
    }

    #[test]
    fn schema_keys_are_snake_case() {
        assert_eq!(
            schema_key("iglu:com.codecombat/level_context/jsonschema/1-0-0").as_deref(),
            Some("com_codecombat_level_context_1")
        );
        assert_eq!(
            schema_key("iglu:org.w3/PerformanceTiming/jsonschema/1-0-0").as_deref(),
            Some("org_w3_performance_timing_1")
        );
        assert_eq!(
            schema_key("iglu:com.my-co/linkClick/jsonschema/10-0-2").as_deref(),
            Some("com_my_co_link_click_10")
        );
        assert_eq!(schema_key("http://x"), None);
    }
}
