//! What CloudWatch accepts of a dashboard body and of an alarm, checked without AWS,
//! and the metrics each refers to.
//!
//! The dashboard rules are those of "Dashboard Body Structure and Syntax" (CloudWatch
//! API Reference): `metrics` is an array of arrays, each either
//! `[Namespace, MetricName, DimensionName, DimensionValue, …, {rendering options}]` or
//! `[{"expression": …}]`; in the first form `"."` repeats the value at the same
//! position of the previous metric and a leading `"..."` repeats the previous
//! metric's leading values, so that the values after it end the array. Alarm rules
//! are those of `PutMetricAlarm`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// One metric a dashboard graphs or an alarm watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricUse {
    pub namespace: String,
    pub name: String,
    /// Dimension name → value; `None` in a `SEARCH` schema, which matches any value.
    pub dimensions: BTreeMap<String, Option<String>>,
    /// Where it is used, for messages.
    pub place: String,
}

impl MetricUse {
    /// The dimension names, sorted.
    pub fn dimension_names(&self) -> Vec<&str> {
        self.dimensions.keys().map(String::as_str).collect()
    }
}

const MAX_DIMENSIONS: usize = 30;
const RENDERING_OPTIONS: &[&str] = &[
    "accountId",
    "color",
    "label",
    "id",
    "period",
    "region",
    "stat",
    "visible",
    "yAxis",
];
const EXPRESSION_OPTIONS: &[&str] = &[
    "expression",
    "accountId",
    "color",
    "label",
    "id",
    "period",
    "region",
    "visible",
    "yAxis",
];
const WIDGET_TYPES: &[&str] = &["metric", "text", "log", "alarm", "explorer"];
const VIEWS: &[&str] = &["timeSeries", "singleValue", "gauge", "bar", "pie", "table"];
const TREAT_MISSING_DATA: &[&str] = &["breaching", "notBreaching", "ignore", "missing"];
const COMPARISONS: &[&str] = &[
    "GreaterThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
];
/// Longest time an alarm may look back: `Period` × `EvaluationPeriods`.
const MAX_EVALUATION_SECONDS: u64 = 7 * 24 * 3600;

/// A statistic CloudWatch computes: the five basic ones, or a percentile and its kin
/// (`p99`, `p99.9`, `tm90`, `IQM`, …).
pub fn is_statistic(stat: &str) -> bool {
    if ["SampleCount", "Average", "Sum", "Minimum", "Maximum", "IQM"].contains(&stat) {
        return true;
    }
    let number = ["p", "tm", "wm", "tc", "ts"]
        .iter()
        .find_map(|prefix| stat.strip_prefix(prefix));
    number.is_some_and(|n| {
        let mut parts = n.splitn(2, '.');
        let whole = parts.next().unwrap_or_default();
        let fraction = parts.next();
        !whole.is_empty()
            && whole.chars().all(|c| c.is_ascii_digit())
            && fraction.is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()))
            && n.parse::<f64>().is_ok_and(|v| v <= 100.0)
    })
}

/// A period CloudWatch accepts: 1, 5, 10, 30 or a multiple of 60 seconds.
fn is_period(seconds: u64) -> bool {
    [1, 5, 10, 30].contains(&seconds) || (seconds > 0 && seconds.is_multiple_of(60))
}

/// An id of a metric or expression: a lowercase letter, then letters, digits and `_`.
fn is_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        // CloudFormation passes numeric strings through (a Ref to a Number parameter).
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Checks a dashboard body and returns the metrics it graphs.
pub fn dashboard_metrics(body: &str) -> Result<Vec<MetricUse>, Vec<String>> {
    let mut problems = Vec::new();
    let mut uses = Vec::new();
    let parsed: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Err(vec![format!("the body is not JSON: {e}")]),
    };
    let Some(widgets) = parsed.get("widgets").and_then(Value::as_array) else {
        return Err(vec!["the body has no widgets array".to_string()]);
    };
    if widgets.len() > 500 {
        problems.push(format!("{} widgets; at most 500", widgets.len()));
    }
    for (w, widget) in widgets.iter().enumerate() {
        let place = format!("widget {w}");
        let Some(kind) = widget.get("type").and_then(Value::as_str) else {
            problems.push(format!("{place}: no type"));
            continue;
        };
        if !WIDGET_TYPES.contains(&kind) {
            problems.push(format!("{place}: unknown type {kind}"));
        }
        for (field, range) in [("x", 0..=23), ("y", 0..=1000), ("width", 1..=24), ("height", 1..=1000)] {
            if let Some(value) = widget.get(field)
                && !value.as_u64().is_some_and(|v| range.contains(&v))
            {
                problems.push(format!("{place}: {field} {value} outside {range:?}"));
            }
        }
        let Some(properties) = widget.get("properties").and_then(Value::as_object) else {
            problems.push(format!("{place}: no properties object"));
            continue;
        };
        if kind == "metric" {
            check_metric_widget(properties, &place, &mut uses, &mut problems);
        }
    }
    if problems.is_empty() { Ok(uses) } else { Err(problems) }
}

fn check_metric_widget(
    properties: &Map<String, Value>,
    place: &str,
    uses: &mut Vec<MetricUse>,
    problems: &mut Vec<String>,
) {
    if !properties.get("region").is_some_and(Value::is_string) {
        problems.push(format!("{place}: a metric widget needs a region"));
    }
    if let Some(view) = properties.get("view")
        && !view.as_str().is_some_and(|v| VIEWS.contains(&v))
    {
        problems.push(format!("{place}: unknown view {view}"));
    }
    check_stat_and_period(properties, place, problems);
    let Some(metrics) = properties.get("metrics").and_then(Value::as_array) else {
        problems.push(format!("{place}: no metrics array"));
        return;
    };
    if metrics.len() > 500 {
        problems.push(format!("{place}: {} metrics; at most 500", metrics.len()));
    }
    let mut previous: Option<Vec<String>> = None;
    let mut ids = BTreeSet::new();
    for (m, entry) in metrics.iter().enumerate() {
        let place = format!("{place}, metric {m}");
        let Some(items) = entry.as_array().filter(|items| !items.is_empty()) else {
            problems.push(format!("{place}: {entry} is not a non-empty array"));
            previous = None;
            continue;
        };
        let (values, options) = match items.split_last() {
            Some((Value::Object(options), values)) => (values, Some(options)),
            _ => (&items[..], None),
        };
        if let Some(options) = options {
            let expression = options.contains_key("expression");
            if expression {
                if !values.is_empty() {
                    problems.push(format!("{place}: an expression is alone in its array"));
                }
                match options.get("expression").and_then(Value::as_str) {
                    Some(text) if !text.trim().is_empty() => match search_metrics(text, &place) {
                        Ok(found) => uses.extend(found),
                        Err(problem) => problems.push(problem),
                    },
                    _ => problems.push(format!("{place}: the expression is not a non-empty string")),
                }
                previous = None;
            }
            let allowed = if expression {
                EXPRESSION_OPTIONS
            } else {
                RENDERING_OPTIONS
            };
            check_options(options, allowed, &place, &mut ids, problems);
            if expression {
                continue;
            }
        }
        match expand(values, previous.as_deref()) {
            Ok(expanded) => {
                match metric_use(&expanded, &place) {
                    Ok(found) => uses.push(found),
                    Err(problem) => problems.push(problem),
                }
                previous = Some(expanded);
            }
            Err(problem) => {
                problems.push(format!("{place}: {problem}"));
                previous = None;
            }
        }
    }
}

/// A widget's or a metric's `stat` and `period`, where given.
fn check_stat_and_period(values: &Map<String, Value>, place: &str, problems: &mut Vec<String>) {
    if let Some(stat) = values.get("stat")
        && !stat.as_str().is_some_and(is_statistic)
    {
        problems.push(format!("{place}: unknown stat {stat}"));
    }
    if let Some(period) = values.get("period")
        && !period.as_u64().is_some_and(is_period)
    {
        problems.push(format!(
            "{place}: period {period} is not 1, 5, 10, 30 or a multiple of 60"
        ));
    }
}

fn check_options(
    options: &Map<String, Value>,
    allowed: &[&str],
    place: &str,
    ids: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    for key in options.keys().filter(|k| !allowed.contains(&k.as_str())) {
        problems.push(format!("{place}: unknown option {key}"));
    }
    check_stat_and_period(options, place, problems);
    if let Some(axis) = options.get("yAxis")
        && !axis.as_str().is_some_and(|a| a == "left" || a == "right")
    {
        problems.push(format!("{place}: yAxis {axis} is not left or right"));
    }
    if let Some(visible) = options.get("visible")
        && !visible.is_boolean()
    {
        problems.push(format!("{place}: visible {visible} is not a boolean"));
    }
    if let Some(id) = options.get("id") {
        match id.as_str() {
            Some(id) if is_id(id) => {
                if !ids.insert(id.to_string()) {
                    problems.push(format!("{place}: id {id} used twice in the widget"));
                }
            }
            _ => problems.push(format!("{place}: id {id} must start with a lowercase letter")),
        }
    }
}

/// The values of a metric array with `"."` and `"..."` replaced from `previous`.
pub fn expand(values: &[Value], previous: Option<&[String]>) -> Result<Vec<String>, String> {
    let mut strings = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        match value {
            Value::String(s) => strings.push(s.clone()),
            other => {
                let what = match i {
                    0 => "the namespace",
                    1 => "the metric name",
                    i if i % 2 == 0 => "a dimension name",
                    _ => "a dimension value",
                };
                return Err(format!("{what} (item {i}) is {other}, not a string"));
            }
        }
    }
    if strings.first().is_some_and(|s| s == "...") {
        let previous = previous.ok_or("\"...\" with no metric before it")?;
        let tail = &strings[1..];
        if tail.len() > previous.len() {
            return Err(format!(
                "\"...\" then {} values, after a metric of {}",
                tail.len(),
                previous.len()
            ));
        }
        let mut expanded: Vec<String> = previous[..previous.len() - tail.len()].to_vec();
        expanded.extend(tail.iter().cloned());
        strings = expanded;
    }
    for (i, value) in strings.iter_mut().enumerate() {
        if value == "..." {
            return Err("\"...\" anywhere but first".to_string());
        }
        if value == "." {
            *value = previous
                .and_then(|p| p.get(i))
                .cloned()
                .ok_or_else(|| format!("\".\" at item {i} with no value there in the metric before"))?;
        }
    }
    Ok(strings)
}

fn metric_use(values: &[String], place: &str) -> Result<MetricUse, String> {
    if values.len() < 2 || !values.len().is_multiple_of(2) {
        return Err(format!(
            "{place}: {values:?} is not [Namespace, MetricName, then dimension name and value pairs]"
        ));
    }
    if values.iter().any(String::is_empty) {
        return Err(format!("{place}: an empty string in {values:?}"));
    }
    let pairs: Vec<(String, Option<String>)> = values[2..]
        .chunks(2)
        .map(|pair| (pair[0].clone(), Some(pair[1].clone())))
        .collect();
    let dimensions: BTreeMap<String, Option<String>> = pairs.iter().cloned().collect();
    if dimensions.len() != pairs.len() {
        return Err(format!("{place}: a dimension named twice in {values:?}"));
    }
    if dimensions.len() > MAX_DIMENSIONS {
        return Err(format!("{place}: more than {MAX_DIMENSIONS} dimensions"));
    }
    Ok(MetricUse {
        namespace: values[0].clone(),
        name: values[1].clone(),
        dimensions,
        place: place.to_string(),
    })
}

/// The metrics a `SEARCH('{Namespace,Dimension,…} MetricName="…" OR …', …)` finds:
/// each `MetricName` with exactly the schema's dimensions. Other expressions (metric
/// math over ids) name no metric.
pub fn search_metrics(expression: &str, place: &str) -> Result<Vec<MetricUse>, String> {
    let Some(start) = expression.find("SEARCH(") else {
        return Ok(Vec::new());
    };
    let rest = &expression[start + "SEARCH(".len()..];
    let term = rest
        .trim_start()
        .strip_prefix('\'')
        .and_then(|t| t.split_once('\''))
        .map(|(term, _)| term)
        .ok_or_else(|| format!("{place}: SEARCH without a quoted search term"))?;
    let schema = term
        .trim_start()
        .strip_prefix('{')
        .and_then(|s| s.split_once('}'))
        .map(|(schema, _)| schema)
        .ok_or_else(|| format!("{place}: SEARCH term {term:?} has no {{Namespace,Dimension,…}} schema"))?;
    let mut parts = schema.split(',').map(|p| p.trim().trim_matches('"').to_string());
    let namespace = parts
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{place}: empty schema"))?;
    let dimensions: BTreeMap<String, Option<String>> = parts.map(|d| (d, None)).collect();
    let mut uses = Vec::new();
    let mut text = term;
    while let Some(at) = text.find("MetricName=\"") {
        let after = &text[at + "MetricName=\"".len()..];
        let (name, rest) = after
            .split_once('"')
            .ok_or_else(|| format!("{place}: unclosed MetricName in {term:?}"))?;
        uses.push(MetricUse {
            namespace: namespace.clone(),
            name: name.to_string(),
            dimensions: dimensions.clone(),
            place: format!("{place} (SEARCH)"),
        });
        text = rest;
    }
    if uses.is_empty() {
        return Err(format!(
            "{place}: SEARCH {term:?} names no MetricName, so nothing says what it finds"
        ));
    }
    Ok(uses)
}

/// Checks an alarm's (rendered) properties and returns the metrics it watches.
pub fn alarm_metrics(name: &str, properties: &Value) -> Result<Vec<MetricUse>, Vec<String>> {
    let mut problems = Vec::new();
    let mut uses = Vec::new();
    let get = |key: &str| properties.get(key);
    let single = get("MetricName").is_some();
    let math = get("Metrics").is_some();
    if single == math {
        problems.push(format!("{name}: needs MetricName or Metrics, not both or neither"));
    }
    if single {
        for key in ["Namespace", "Period"] {
            if get(key).is_none() {
                problems.push(format!("{name}: MetricName without {key}"));
            }
        }
        if get("Statistic").is_some() == get("ExtendedStatistic").is_some() {
            problems.push(format!("{name}: needs Statistic or ExtendedStatistic"));
        }
        if let Some(stat) = get("Statistic")
            && !stat
                .as_str()
                .is_some_and(|s| ["SampleCount", "Average", "Sum", "Minimum", "Maximum"].contains(&s))
        {
            problems.push(format!("{name}: Statistic {stat}"));
        }
        check_alarm_period(get("Period"), name, &mut problems);
        match stat_metric(properties, name) {
            Ok(found) => uses.push(found),
            Err(problem) => problems.push(problem),
        }
    }
    if let Some(metrics) = get("Metrics") {
        check_math(metrics, name, &mut uses, &mut problems);
    }
    let evaluation = get("EvaluationPeriods").and_then(number);
    match evaluation {
        Some(periods) if periods >= 1.0 => {
            if let Some(datapoints) = get("DatapointsToAlarm").and_then(number)
                && !(1.0..=periods).contains(&datapoints)
            {
                problems.push(format!(
                    "{name}: DatapointsToAlarm {datapoints} outside 1..=EvaluationPeriods"
                ));
            }
            let period = get("Period").and_then(number).unwrap_or_else(|| {
                get("Metrics")
                    .and_then(Value::as_array)
                    .and_then(|m| m.iter().find_map(|q| q["MetricStat"].get("Period").and_then(number)))
                    .unwrap_or(0.0)
            });
            if period * periods > MAX_EVALUATION_SECONDS as f64 {
                problems.push(format!("{name}: evaluates more than 7 days"));
            }
        }
        _ => problems.push(format!("{name}: EvaluationPeriods must be at least 1")),
    }
    match get("ComparisonOperator").and_then(Value::as_str) {
        Some(op) if COMPARISONS.contains(&op) => {
            if get("Threshold").and_then(number).is_none() {
                problems.push(format!("{name}: no numeric Threshold"));
            }
        }
        other => problems.push(format!("{name}: ComparisonOperator {other:?}")),
    }
    if let Some(missing) = get("TreatMissingData")
        && !missing.as_str().is_some_and(|m| TREAT_MISSING_DATA.contains(&m))
    {
        problems.push(format!("{name}: TreatMissingData {missing}"));
    }
    for (key, required) in [
        ("AlarmActions", true),
        ("OKActions", false),
        ("InsufficientDataActions", false),
    ] {
        match get(key) {
            None if required => problems.push(format!("{name}: no {key}: it changes state and nobody hears")),
            None => {}
            Some(Value::Array(actions)) => {
                if required && actions.is_empty() {
                    problems.push(format!("{name}: {key} is empty"));
                }
                if actions.len() > 5 {
                    problems.push(format!("{name}: more than 5 {key}"));
                }
                for action in actions {
                    if !action.as_str().is_some_and(|a| a.starts_with("arn:")) {
                        problems.push(format!("{name}: {key} holds {action}, not an ARN"));
                    }
                }
            }
            Some(other) => problems.push(format!("{name}: {key} is {other}, not a list")),
        }
    }
    if problems.is_empty() { Ok(uses) } else { Err(problems) }
}

fn check_alarm_period(period: Option<&Value>, place: &str, problems: &mut Vec<String>) {
    let seconds = period.and_then(number).unwrap_or(0.0);
    if seconds.fract() != 0.0 || !(seconds >= 10.0 && is_period(seconds as u64)) {
        problems.push(format!("{place}: Period {period:?} is not 10, 30 or a multiple of 60"));
    }
}

/// The metric of a single-metric alarm, or of a `MetricStat.Metric`.
fn stat_metric(metric: &Value, place: &str) -> Result<MetricUse, String> {
    let namespace = metric["Namespace"]
        .as_str()
        .ok_or_else(|| format!("{place}: Namespace is not a string"))?;
    let name = metric["MetricName"]
        .as_str()
        .ok_or_else(|| format!("{place}: MetricName is not a string"))?;
    let mut dimensions = BTreeMap::new();
    if let Some(list) = metric.get("Dimensions") {
        let list = list
            .as_array()
            .ok_or_else(|| format!("{place}: Dimensions is not a list"))?;
        if list.len() > MAX_DIMENSIONS {
            return Err(format!("{place}: more than {MAX_DIMENSIONS} dimensions"));
        }
        for dimension in list {
            let (Some(key), Some(value)) = (dimension["Name"].as_str(), dimension["Value"].as_str()) else {
                return Err(format!("{place}: dimension {dimension} needs a string Name and Value"));
            };
            if value.is_empty() || dimensions.insert(key.to_string(), Some(value.to_string())).is_some() {
                return Err(format!("{place}: dimension {key} empty or named twice"));
            }
        }
    }
    Ok(MetricUse {
        namespace: namespace.to_string(),
        name: name.to_string(),
        dimensions,
        place: place.to_string(),
    })
}

fn check_math(metrics: &Value, name: &str, uses: &mut Vec<MetricUse>, problems: &mut Vec<String>) {
    let Some(queries) = metrics.as_array().filter(|q| !q.is_empty()) else {
        problems.push(format!("{name}: Metrics is not a non-empty list"));
        return;
    };
    let ids: BTreeSet<&str> = queries.iter().filter_map(|q| q["Id"].as_str()).collect();
    if ids.len() != queries.len() {
        problems.push(format!("{name}: every query needs its own Id"));
    }
    let mut returned = 0;
    for query in queries {
        let id = query["Id"].as_str().unwrap_or_default();
        let place = format!("{name}.{id}");
        if !is_id(id) {
            problems.push(format!("{place}: Id must start with a lowercase letter"));
        }
        if query.get("ReturnData").is_none_or(|r| r == true) {
            returned += 1;
        }
        match (query.get("MetricStat"), query.get("Expression").and_then(Value::as_str)) {
            (Some(stat), None) => {
                check_alarm_period(stat.get("Period"), &place, problems);
                if !stat["Stat"].as_str().is_some_and(is_statistic) {
                    problems.push(format!("{place}: Stat {}", stat["Stat"]));
                }
                match stat_metric(&stat["Metric"], &place) {
                    Ok(found) => uses.push(found),
                    Err(problem) => problems.push(problem),
                }
            }
            (None, Some(expression)) => {
                for token in identifiers(expression) {
                    if !ids.contains(token) {
                        problems.push(format!("{place}: the expression uses {token}, which no query is"));
                    }
                }
            }
            _ => problems.push(format!("{place}: needs MetricStat or Expression")),
        }
    }
    if returned != 1 {
        problems.push(format!(
            "{name}: {returned} queries return data; exactly one must (ReturnData false on the others)"
        ));
    }
}

/// The ids an expression refers to: words starting with a lowercase letter outside
/// quotes (functions such as `SUM` and `METRICS` are upper case).
fn identifiers(expression: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut quoted = None;
    let mut start = None;
    for (i, c) in expression
        .char_indices()
        .chain(std::iter::once((expression.len(), ' ')))
    {
        if let Some(q) = quoted {
            if c == q {
                quoted = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            let word = &expression[s..i];
            if word.starts_with(|c: char| c.is_ascii_lowercase()) {
                found.push(word);
            }
        }
        if c == '\'' || c == '"' {
            quoted = Some(c);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget(metrics: Value) -> String {
        json!({ "widgets": [ { "type": "metric", "x": 0, "y": 0, "width": 12, "height": 6,
            "properties": { "region": "eu-west-1", "stat": "Sum", "period": 60, "metrics": metrics } } ] })
        .to_string()
    }

    #[test]
    fn metric_arrays_with_options_and_dimensions() {
        let uses = dashboard_metrics(&widget(json!([
            ["GamingAnalytics", "RecordsIn", "Service", "s3-connector", { "stat": "p99", "label": "in" }],
            ["AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", "StreamName", "gaming-telemetry"],
        ])))
        .expect("valid");
        assert_eq!(uses.len(), 2);
        assert_eq!(uses[0].name, "RecordsIn");
        assert_eq!(uses[0].dimensions["Service"], Some("s3-connector".to_string()));
        assert_eq!(uses[1].namespace, "AWS/Kinesis");
    }

    #[test]
    fn an_object_where_a_dimension_value_belongs_is_refused() {
        // What infra/observability.json held: a literal {"Fn::Sub": …} in the body.
        let problems = dashboard_metrics(&widget(json!([
            ["AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", "StreamName", { "Fn::Sub": "gaming-files" }, { "stat": "Maximum" }],
        ])))
        .expect_err("an object dimension value");
        assert!(
            problems.iter().any(|p| p.contains("a dimension value (item 3)")),
            "{problems:?}"
        );
    }

    #[test]
    fn shorthand_repeats_the_previous_metric() {
        let previous: Vec<String> = ["AWS/EC2", "CPUUtilization", "InstanceId", "i-1"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            expand(
                &[json!("."), json!("NetworkIn"), json!("."), json!(".")],
                Some(&previous)
            )
            .expect("dots"),
            vec!["AWS/EC2", "NetworkIn", "InstanceId", "i-1"]
        );
        assert_eq!(
            expand(&[json!("..."), json!("i-2")], Some(&previous)).expect("ellipsis"),
            vec!["AWS/EC2", "CPUUtilization", "InstanceId", "i-2"]
        );
        assert_eq!(expand(&[json!("...")], Some(&previous)).expect("all"), previous);
        assert!(expand(&[json!("..."), json!("x")], None).is_err());
        assert!(expand(&[json!("a"), json!("...")], Some(&previous)).is_err());
        assert!(
            expand(
                &[json!("."), json!("."), json!("."), json!("."), json!("."), json!(".")],
                Some(&previous)
            )
            .is_err()
        );

        let uses = dashboard_metrics(&widget(json!([
            ["GamingAnalytics", "LoadLatency", "Service", "redshift-connector", { "stat": "p50" }],
            ["...", { "stat": "p99" }],
            [".", "RowsInserted", ".", "."],
        ])))
        .expect("valid");
        assert_eq!(
            uses.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["LoadLatency", "LoadLatency", "RowsInserted"]
        );
        assert!(
            uses.iter()
                .all(|u| u.dimensions["Service"].as_deref() == Some("redshift-connector"))
        );
    }

    #[test]
    fn expressions_sit_alone_in_an_array_and_searches_name_their_metrics() {
        let uses = dashboard_metrics(&widget(json!([
            [{ "expression": "SEARCH('{GamingAnalytics,Service,Application} MetricName=\"LeasesTaken\" OR MetricName=\"LeasesLost\"', 'Sum', 60)", "id": "e1", "label": "Leases" }],
            [{ "expression": "SUM(METRICS())", "id": "e2" }],
        ])))
        .expect("valid");
        assert_eq!(uses.len(), 2);
        assert_eq!(uses[1].name, "LeasesLost");
        assert_eq!(uses[1].dimension_names(), ["Application", "Service"]);
        assert_eq!(uses[1].dimensions["Service"], None);

        // A bare object is not an array of one object.
        let problems =
            dashboard_metrics(&widget(json!([{ "expression": "SUM(METRICS())", "id": "e1" }]))).expect_err("bare");
        assert!(problems[0].contains("not a non-empty array"), "{problems:?}");
        let problems = dashboard_metrics(&widget(json!([
            ["GamingAnalytics", "Up", { "expression": "x" }],
            [{ "expression": "SEARCH('{GamingAnalytics,Service}', 'Sum', 60)" }],
        ])))
        .expect_err("mixed, unnamed");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn widget_and_option_mistakes_are_named() {
        let problems = dashboard_metrics(&widget(json!([
            ["GamingAnalytics", "Up", "Service"],
            ["GamingAnalytics", "Up", { "stat": "Median" }],
            ["GamingAnalytics", "Up", { "colour": "#fff" }],
            ["GamingAnalytics", "Up", { "id": "E1" }],
        ])))
        .expect_err("mistakes");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(dashboard_metrics("{\"widgets\": 3}").is_err());
        assert!(dashboard_metrics("not json").is_err());
        assert!(dashboard_metrics(&json!({ "widgets": [ { "type": "metric", "width": 30, "properties": { "region": "r", "metrics": [] } } ] }).to_string()).is_err());
    }

    #[test]
    fn statistics() {
        for good in ["Sum", "Maximum", "SampleCount", "p50", "p99.9", "tm90", "IQM"] {
            assert!(is_statistic(good), "{good}");
        }
        for bad in ["sum", "Median", "p", "p101", "p9.", "x50"] {
            assert!(!is_statistic(bad), "{bad}");
        }
    }

    fn alarm() -> Value {
        json!({
            "Namespace": "GamingAnalytics", "MetricName": "Up",
            "Dimensions": [ { "Name": "Service", "Value": "s3-connector" } ],
            "Statistic": "Maximum", "Period": 60, "EvaluationPeriods": 3, "DatapointsToAlarm": 3,
            "ComparisonOperator": "LessThanThreshold", "Threshold": 1, "TreatMissingData": "breaching",
            "AlarmActions": [ "arn:aws:sns:eu-west-1:123456789012:alarms" ],
            "OKActions": [ "arn:aws:sns:eu-west-1:123456789012:alarms" ]
        })
    }

    #[test]
    fn a_single_metric_alarm() {
        let uses = alarm_metrics("Up", &alarm()).expect("valid");
        assert_eq!(uses.len(), 1);
        assert_eq!(uses[0].dimensions["Service"], Some("s3-connector".to_string()));
        for (key, value, expected) in [
            ("AlarmActions", json!([]), "empty"),
            ("AlarmActions", Value::Null, "nobody hears"),
            ("TreatMissingData", json!("breach"), "TreatMissingData"),
            ("Period", json!(45), "Period"),
            ("DatapointsToAlarm", json!(4), "DatapointsToAlarm"),
            ("Statistic", json!("p99"), "Statistic"),
            (
                "Dimensions",
                json!([ { "Name": "Service", "Value": { "Ref": "X" } } ]),
                "string Name and Value",
            ),
            ("Threshold", json!("high"), "Threshold"),
        ] {
            let mut broken = alarm();
            if value.is_null() {
                broken.as_object_mut().expect("object").remove(key);
            } else {
                broken[key] = value;
            }
            let problems = alarm_metrics("Up", &broken).expect_err(key);
            assert!(problems.iter().any(|p| p.contains(expected)), "{key}: {problems:?}");
        }
    }

    #[test]
    fn a_metric_math_alarm() {
        let stat = |id: &str, table: &str| {
            json!({ "Id": id, "ReturnData": false, "MetricStat": { "Period": 300, "Stat": "Sum",
                "Metric": { "Namespace": "AWS/DynamoDB", "MetricName": "WriteThrottleEvents",
                    "Dimensions": [ { "Name": "TableName", "Value": table } ] } } })
        };
        let good = json!({
            "Metrics": [ stat("w1", "a"), stat("w2", "b"), { "Id": "total", "Expression": "SUM(METRICS()) + w1 * 0", "Label": "throttles" } ],
            "EvaluationPeriods": 3, "ComparisonOperator": "GreaterThanThreshold", "Threshold": "0",
            "AlarmActions": [ "arn:aws:sns:eu-west-1:123456789012:alarms" ]
        });
        let uses = alarm_metrics("Throttles", &good).expect("valid");
        assert_eq!(uses.len(), 2);

        let mut two_return = good.clone();
        two_return["Metrics"][0]["ReturnData"] = json!(true);
        assert!(
            alarm_metrics("x", &two_return)
                .expect_err("two")
                .iter()
                .any(|p| p.contains("2 queries return data"))
        );
        let mut unknown = good.clone();
        unknown["Metrics"][2]["Expression"] = json!("w1 + w3");
        assert!(
            alarm_metrics("x", &unknown)
                .expect_err("w3")
                .iter()
                .any(|p| p.contains("uses w3"))
        );
        let mut both = good;
        both["MetricName"] = json!("Up");
        assert!(
            alarm_metrics("x", &both)
                .expect_err("both")
                .iter()
                .any(|p| p.contains("not both"))
        );
    }

    #[test]
    fn identifiers_skip_functions_and_quotes() {
        assert_eq!(identifiers("desired - running"), ["desired", "running"]);
        assert_eq!(identifiers("SUM(METRICS()) / m_1"), ["m_1"]);
        assert_eq!(identifiers("IF(a > 0, 1, 0) + FILL(b, 'x y')"), ["a", "b"]);
    }
}
