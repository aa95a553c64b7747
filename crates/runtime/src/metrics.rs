//! Metrics in CloudWatch Embedded Metric Format (EMF), written to stdout.
//!
//! CloudWatch Logs turns each EMF line into metrics, so a service needs no
//! `PutMetricData` permission and pays no API call per flush. Values are
//! aggregated in memory and written every flush interval, one JSON document per
//! set of dimension values:
//!
//! - counters are summed over the interval; once seen, a counter is written every
//!   interval (0 when idle) so alarms on rates see a continuous series;
//! - gauges keep their last value and are re-emitted every interval;
//! - samples (timings, sizes) are written as value arrays, at most 100 values per
//!   document as the specification allows, in further documents past that.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

pub mod names;

/// Most metric definitions in one directive, and most values in one metric array.
pub const MAX_METRICS_PER_DOCUMENT: usize = 100;
pub const MAX_VALUES_PER_METRIC: usize = 100;
/// Most dimensions in one dimension set.
pub const MAX_DIMENSIONS: usize = 30;
const MAX_DIMENSION_VALUE_CHARS: usize = 1024;

/// CloudWatch units we emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Milliseconds,
    Seconds,
    Percent,
    CountPerSecond,
    None,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::Percent => "Percent",
            Unit::CountPerSecond => "Count/Second",
            Unit::None => "None",
        }
    }
}

/// Checks a CloudWatch namespace: 1 to 255 characters of `[A-Za-z0-9.\-_/#: ]`, not `AWS/…`.
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    if namespace.is_empty() || namespace.chars().count() > 255 {
        return Err("must be 1 to 255 characters".into());
    }
    if namespace.starts_with("AWS/") {
        return Err("the AWS/ prefix is reserved for AWS services".into());
    }
    if let Some(c) = namespace
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".-_/#: ".contains(*c)))
    {
        return Err(format!("character {c:?} is not allowed"));
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Series {
    Counter(f64),
    Gauge(f64),
    Samples(Vec<f64>),
}

#[derive(Debug, Clone)]
struct Entry {
    unit: Unit,
    series: Series,
}

/// Dimension name → value, sorted so equal sets share one group.
type DimensionValues = BTreeMap<String, String>;

#[derive(Default)]
struct Registry {
    groups: BTreeMap<DimensionValues, BTreeMap<String, Entry>>,
}

struct Inner {
    namespace: String,
    service: String,
    /// Debug builds refuse what [`names::CATALOGUE`] does not list.
    catalogued: bool,
    base: DimensionValues,
    registry: Mutex<Registry>,
    sink: Mutex<Box<dyn Write + Send>>,
}

/// A cheap-to-clone handle to the metrics of one process.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

impl Metrics {
    /// Metrics of `service` (the `Service` dimension of every metric), written to
    /// stdout. In debug builds a metric or dimension set that [`names::CATALOGUE`] does
    /// not list for `service` panics, so every test that runs a service checks it.
    pub fn new(namespace: &str, service: &str) -> Self {
        Self::build(namespace, service, Box::new(std::io::stdout()), true)
    }

    /// Like [`Metrics::new`], written to `sink` (tests and simulations use a buffer).
    pub fn with_sink(namespace: &str, service: &str, sink: Box<dyn Write + Send>) -> Self {
        Self::build(namespace, service, sink, true)
    }

    fn build(namespace: &str, service: &str, sink: Box<dyn Write + Send>, catalogued: bool) -> Self {
        let mut base = DimensionValues::new();
        base.insert(names::dimension::SERVICE.to_string(), dimension_value(service));
        Self {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                service: service.to_string(),
                catalogued,
                base,
                registry: Mutex::new(Registry::default()),
                sink: Mutex::new(sink),
            }),
        }
    }

    /// Adds `value` to a counter (unit Count).
    pub fn count(&self, name: &str, value: u64, dimensions: &[(&str, &str)]) {
        self.record(name, Unit::Count, dimensions, |series| match series {
            Some(Series::Counter(sum)) => Series::Counter(sum + value as f64),
            _ => Series::Counter(value as f64),
        });
    }

    /// Adds `bytes` to a byte counter (unit Bytes).
    pub fn count_bytes(&self, name: &str, bytes: u64, dimensions: &[(&str, &str)]) {
        self.record(name, Unit::Bytes, dimensions, |series| match series {
            Some(Series::Counter(sum)) => Series::Counter(sum + bytes as f64),
            _ => Series::Counter(bytes as f64),
        });
    }

    /// Sets a gauge; its last value is written at every flush until it is set again.
    pub fn gauge(&self, name: &str, value: f64, unit: Unit, dimensions: &[(&str, &str)]) {
        if value.is_finite() {
            self.record(name, unit, dimensions, |_| Series::Gauge(value));
        }
    }

    /// Records one duration, in milliseconds.
    pub fn timing(&self, name: &str, elapsed: Duration, dimensions: &[(&str, &str)]) {
        self.sample(name, elapsed.as_secs_f64() * 1000.0, Unit::Milliseconds, dimensions);
    }

    /// Records one observation of a distribution (CloudWatch computes the statistics).
    pub fn sample(&self, name: &str, value: f64, unit: Unit, dimensions: &[(&str, &str)]) {
        if value.is_finite() {
            self.record(name, unit, dimensions, |series| match series {
                Some(Series::Samples(mut values)) => {
                    values.push(value);
                    Series::Samples(values)
                }
                _ => Series::Samples(vec![value]),
            });
        }
    }

    fn record(
        &self,
        name: &str,
        unit: Unit,
        dimensions: &[(&str, &str)],
        update: impl FnOnce(Option<Series>) -> Series,
    ) {
        debug_assert!(
            self.is_catalogued(name, dimensions),
            "metric {name} with dimensions {dimensions:?} of {} is not in metrics::names::CATALOGUE",
            self.inner.service
        );
        let mut key = self.inner.base.clone();
        for (dimension, value) in dimensions.iter().take(MAX_DIMENSIONS - key.len()) {
            key.insert((*dimension).to_string(), dimension_value(value));
        }
        let mut registry = self.inner.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let group = registry.groups.entry(key).or_default();
        match group.get_mut(name) {
            Some(entry) => {
                let previous = std::mem::replace(&mut entry.series, Series::Counter(0.0));
                entry.series = update(Some(previous));
            }
            None => {
                group.insert(
                    name.to_string(),
                    Entry {
                        unit,
                        series: update(None),
                    },
                );
            }
        }
    }

    fn is_catalogued(&self, name: &str, dimensions: &[(&str, &str)]) -> bool {
        let names: Vec<&str> = dimensions.iter().map(|(dimension, _)| *dimension).collect();
        !self.inner.catalogued || names::is_catalogued(&self.inner.service, name, &names)
    }

    /// Renders what was recorded since the last call as EMF documents, and resets
    /// counters and samples.
    pub fn take_documents(&self, timestamp_ms: u64) -> Vec<Value> {
        let mut registry = self.inner.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut documents = Vec::new();
        for (dimensions, metrics) in &mut registry.groups {
            let mut values: Vec<(String, Unit, Vec<f64>)> = Vec::new();
            for (name, entry) in metrics.iter_mut() {
                if dimensions.contains_key(name) {
                    // A root member cannot be both a dimension and a metric.
                    continue;
                }
                match &mut entry.series {
                    Series::Counter(sum) => {
                        values.push((name.clone(), entry.unit, vec![*sum]));
                        *sum = 0.0;
                    }
                    Series::Gauge(last) => values.push((name.clone(), entry.unit, vec![*last])),
                    Series::Samples(samples) if !samples.is_empty() => {
                        values.push((name.clone(), entry.unit, std::mem::take(samples)));
                    }
                    Series::Samples(_) => {}
                }
            }
            documents.extend(documents_for_group(
                &self.inner.namespace,
                dimensions,
                values,
                timestamp_ms,
            ));
        }
        documents
    }

    /// Writes everything recorded since the last flush to the sink, one line per document.
    pub fn flush(&self) -> std::io::Result<()> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let documents = self.take_documents(now_ms);
        if documents.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for document in &documents {
            text.push_str(&document.to_string());
            text.push('\n');
        }
        let mut sink = self.inner.sink.lock().unwrap_or_else(PoisonError::into_inner);
        // One write per flush so lines never interleave with log lines.
        sink.write_all(text.as_bytes())?;
        sink.flush()
    }

    /// Flushes every `interval` until `shutdown`, then once more.
    pub fn spawn_flusher(&self, interval: Duration, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let metrics = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = shutdown.cancelled() => break,
                }
                if let Err(error) = metrics.flush() {
                    tracing::warn!(%error, "metrics flush failed");
                }
            }
            if let Err(error) = metrics.flush() {
                tracing::warn!(%error, "final metrics flush failed");
            }
        })
    }
}

fn dimension_value(value: &str) -> String {
    if value.is_empty() {
        return "(empty)".to_string();
    }
    value.chars().take(MAX_DIMENSION_VALUE_CHARS).collect()
}

/// Lays out one group's metrics into documents: at most 100 metrics each, and sample
/// arrays cut into chunks of 100 values, each chunk in its own document.
fn documents_for_group(
    namespace: &str,
    dimensions: &DimensionValues,
    metrics: Vec<(String, Unit, Vec<f64>)>,
    timestamp_ms: u64,
) -> Vec<Value> {
    // Round r holds the r-th chunk of every metric that has one.
    let mut rounds: Vec<Vec<(String, Unit, Value)>> = Vec::new();
    for (name, unit, values) in metrics {
        for (round, chunk) in values.chunks(MAX_VALUES_PER_METRIC).enumerate() {
            if rounds.len() <= round {
                rounds.push(Vec::new());
            }
            let value = if chunk.len() == 1 {
                json!(chunk[0])
            } else {
                json!(chunk)
            };
            rounds[round].push((name.clone(), unit, value));
        }
    }
    let mut documents = Vec::new();
    for round in rounds {
        for page in round.chunks(MAX_METRICS_PER_DOCUMENT) {
            let mut root = Map::new();
            for (dimension, value) in dimensions {
                root.insert(dimension.clone(), Value::String(value.clone()));
            }
            let definitions: Vec<Value> = page
                .iter()
                .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
                .collect();
            for (name, _, value) in page {
                root.insert(name.clone(), value.clone());
            }
            root.insert(
                "_aws".to_string(),
                json!({
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": namespace,
                        "Dimensions": [dimensions.keys().collect::<Vec<_>>()],
                        "Metrics": definitions,
                    }],
                }),
            );
            documents.push(Value::Object(root));
        }
    }
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];

    /// Checks a document against the rules of the EMF specification (CloudWatch User
    /// Guide, "Specification: Embedded metric format"): the `_aws` metadata object with
    /// an integer millisecond `Timestamp` and `CloudWatchMetrics` directives; each
    /// directive's Namespace, Dimensions (arrays of at most 30 names that are string
    /// members of the root) and Metrics (at most 100 definitions with Name and a valid
    /// Unit, each a root member holding a number or an array of at most 100 numbers).
    fn check_emf(document: &Value) -> Result<(), String> {
        let root = document.as_object().ok_or("root is not an object")?;
        let aws = root.get("_aws").and_then(Value::as_object).ok_or("no _aws object")?;
        for key in aws.keys() {
            if !["Timestamp", "CloudWatchMetrics", "LogGroupName", "LogStreamName"].contains(&key.as_str()) {
                return Err(format!("unknown _aws member {key}"));
            }
        }
        aws.get("Timestamp")
            .and_then(Value::as_u64)
            .ok_or("Timestamp is not a non-negative integer")?;
        let directives = aws
            .get("CloudWatchMetrics")
            .and_then(Value::as_array)
            .ok_or("CloudWatchMetrics is not an array")?;
        for directive in directives {
            let directive = directive.as_object().ok_or("directive is not an object")?;
            for key in directive.keys() {
                if !["Namespace", "Dimensions", "Metrics"].contains(&key.as_str()) {
                    return Err(format!("unknown directive member {key}"));
                }
            }
            let namespace = directive
                .get("Namespace")
                .and_then(Value::as_str)
                .ok_or("no Namespace")?;
            if namespace.is_empty() || namespace.len() > 1024 {
                return Err("Namespace length".into());
            }
            let sets = directive
                .get("Dimensions")
                .and_then(Value::as_array)
                .ok_or("no Dimensions")?;
            for set in sets {
                let set = set.as_array().ok_or("dimension set is not an array")?;
                if set.len() > MAX_DIMENSIONS {
                    return Err("more than 30 dimensions".into());
                }
                for name in set {
                    let name = name.as_str().ok_or("dimension name is not a string")?;
                    if name.is_empty() || name.len() > 250 {
                        return Err(format!("dimension name length: {name}"));
                    }
                    let value = root
                        .get(name)
                        .and_then(Value::as_str)
                        .ok_or(format!("dimension {name} not a root string"))?;
                    if value.is_empty() || value.chars().count() > 1024 {
                        return Err(format!("dimension value length: {name}"));
                    }
                }
            }
            let metrics = directive.get("Metrics").and_then(Value::as_array).ok_or("no Metrics")?;
            if metrics.len() > MAX_METRICS_PER_DOCUMENT {
                return Err("more than 100 metrics".into());
            }
            for metric in metrics {
                let metric = metric.as_object().ok_or("metric definition is not an object")?;
                let name = metric
                    .get("Name")
                    .and_then(Value::as_str)
                    .ok_or("metric without Name")?;
                if name.is_empty() || name.len() > 1024 {
                    return Err("metric name length".into());
                }
                if let Some(unit) = metric.get("Unit") {
                    let unit = unit.as_str().ok_or("Unit is not a string")?;
                    if !UNITS.contains(&unit) {
                        return Err(format!("unknown unit {unit}"));
                    }
                }
                match root.get(name) {
                    Some(Value::Number(_)) => {}
                    Some(Value::Array(values)) => {
                        if values.len() > MAX_VALUES_PER_METRIC || values.iter().any(|v| !v.is_number()) {
                            return Err(format!("metric {name}: bad value array"));
                        }
                    }
                    _ => return Err(format!("metric {name} has no numeric root member")),
                }
            }
        }
        Ok(())
    }

    /// Unchecked: these tests use names of their own, to test the layout.
    fn metrics() -> Metrics {
        Metrics::build("GamingAnalytics", "s3-connector", Box::new(std::io::sink()), false)
    }

    #[test]
    fn counters_gauges_and_timings_render_as_valid_emf() {
        let metrics = metrics();
        metrics.count("RecordsIn", 3, &[("Shard", "shardId-000000000000")]);
        metrics.count("RecordsIn", 4, &[("Shard", "shardId-000000000000")]);
        metrics.count_bytes("BytesIn", 1200, &[]);
        metrics.gauge("LeasesHeld", 2.0, Unit::Count, &[]);
        metrics.timing("S3PutLatency", Duration::from_millis(40), &[]);
        metrics.timing("S3PutLatency", Duration::from_millis(60), &[]);
        let documents = metrics.take_documents(1_700_000_000_000);
        assert_eq!(documents.len(), 2, "one document per dimension set");
        for document in &documents {
            check_emf(document).unwrap_or_else(|e| panic!("{e}: {document}"));
        }
        let sharded = documents
            .iter()
            .find(|d| d.get("Shard").is_some())
            .expect("shard group");
        assert_eq!(sharded["RecordsIn"], json!(7.0));
        assert_eq!(sharded["Service"], json!("s3-connector"));
        assert_eq!(
            sharded["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Service", "Shard"]])
        );
        let plain = documents
            .iter()
            .find(|d| d.get("Shard").is_none())
            .expect("plain group");
        assert_eq!(plain["S3PutLatency"], json!([40.0, 60.0]));
        assert_eq!(plain["LeasesHeld"], json!(2.0));
        assert_eq!(plain["_aws"]["Timestamp"], json!(1_700_000_000_000u64));
    }

    #[test]
    fn counters_reset_gauges_persist_samples_clear() {
        let metrics = metrics();
        metrics.count("RecordsIn", 5, &[]);
        metrics.gauge("LeasesHeld", 3.0, Unit::Count, &[]);
        metrics.timing("Latency", Duration::from_millis(1), &[]);
        metrics.take_documents(1);
        let documents = metrics.take_documents(2);
        assert_eq!(documents.len(), 1);
        assert_eq!(documents[0]["RecordsIn"], json!(0.0));
        assert_eq!(documents[0]["LeasesHeld"], json!(3.0));
        assert!(documents[0].get("Latency").is_none());
        check_emf(&documents[0]).expect("valid");
    }

    #[test]
    fn large_groups_are_split_within_the_limits() {
        let metrics = metrics();
        for i in 0..250 {
            metrics.count(&format!("Counter{i}"), 1, &[]);
        }
        for i in 0..250 {
            metrics.sample("BatchRecords", f64::from(i), Unit::Count, &[]);
        }
        let documents = metrics.take_documents(1);
        for document in &documents {
            check_emf(document).unwrap_or_else(|e| panic!("{e}"));
        }
        let counters: usize = documents
            .iter()
            .map(|d| {
                d.as_object()
                    .map_or(0, |o| o.keys().filter(|k| k.starts_with("Counter")).count())
            })
            .sum();
        assert_eq!(counters, 250);
        let samples: usize = documents
            .iter()
            .filter_map(|d| d.get("BatchRecords"))
            .map(|v| v.as_array().map_or(1, Vec::len))
            .sum();
        assert_eq!(samples, 250, "no sample lost in the split");
    }

    #[test]
    fn hostile_names_and_values_stay_valid() {
        let metrics = metrics();
        metrics.count("Rejected", 1, &[("Reason", "")]);
        metrics.gauge("Lag", f64::NAN, Unit::Milliseconds, &[]);
        metrics.sample("Lag", f64::INFINITY, Unit::Milliseconds, &[]);
        let long = "x".repeat(5000);
        metrics.count("Rejected", 1, &[("Reason", &long)]);
        metrics.count("Service", 1, &[]);
        for document in metrics.take_documents(1) {
            check_emf(&document).unwrap_or_else(|e| panic!("{e}: {document}"));
        }
    }

    #[test]
    fn flush_writes_one_line_per_document() {
        let buffer = SharedBuffer::default();
        let metrics = Metrics::build("GamingAnalytics", "test", Box::new(buffer.clone()), false);
        metrics.count("A", 1, &[("Shard", "1")]);
        metrics.count("A", 1, &[("Shard", "2")]);
        metrics.flush().expect("flush");
        let text = buffer.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for line in lines {
            let document: Value = serde_json::from_str(line).expect("each line is JSON");
            check_emf(&document).expect("valid");
        }
    }

    #[test]
    fn a_service_handle_accepts_the_catalogue() {
        let metrics = Metrics::with_sink("GamingAnalytics", "s3-connector", Box::new(std::io::sink()));
        metrics.count(names::RECORDS_IN, 1, &[]);
        metrics.count(
            names::REJECTED_RECORDS,
            1,
            &[(names::dimension::REASON, "malformed_json")],
        );
        metrics.count(
            names::LEASES_LOST,
            1,
            &[(names::dimension::APPLICATION, "s3-connector")],
        );
        assert_eq!(metrics.take_documents(1).len(), 3);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "not in metrics::names::CATALOGUE")]
    fn a_service_handle_refuses_a_dimension_set_the_catalogue_lacks() {
        let metrics = Metrics::with_sink("GamingAnalytics", "s3-connector", Box::new(std::io::sink()));
        metrics.count(names::RECORDS_IN, 1, &[(names::dimension::SHARD, "shardId-0")]);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "not in metrics::names::CATALOGUE")]
    fn a_service_handle_refuses_another_services_metric() {
        let metrics = Metrics::with_sink("GamingAnalytics", "cron-connector", Box::new(std::io::sink()));
        metrics.count(names::RECORDS_IN, 1, &[]);
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(validate_namespace("GamingAnalytics").is_ok());
        assert!(validate_namespace("Studio/Game-1").is_ok());
        assert!(validate_namespace("").is_err());
        assert!(validate_namespace("AWS/Kinesis").is_err());
        assert!(validate_namespace("a\"b").is_err());
    }

    #[derive(Clone, Default)]
    struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

    impl SharedBuffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    impl Write for SharedBuffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
