//! `infra/` rendered as CloudFormation would deploy it, in docs/deploy.md's order and with
//! sample parameters, without AWS (`pipeline_tests::cfn_render`), then checked the way
//! CloudWatch, ECS and an operator would meet it: every dashboard body is one
//! `PutDashboard` accepts; every metric a dashboard or alarm names is one the code
//! writes (`pipeline_runtime::metrics::names`), with the dimensions it writes, under
//! the namespace the containers are given; every alarm tells someone, and the topic
//! it tells can be published to; what holds data outlives its stack; scaling stops at
//! the shard count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use pipeline_runtime::metrics::names::{self, EmittedBy};
use pipeline_tests::cfn_render::{self, Rendered, template};
use pipeline_tests::cloudwatch::{self, MetricUse};
use serde_json::Value;

/// docs/deploy.md's deploy order; `beanstalk` is the alternative to `roles` + `compute`.
const ORDER: [&str; 6] = [
    "data-plane",
    "warehouse",
    "roles",
    "compute",
    "beanstalk",
    "observability",
];

/// One deployment of every template.
struct Deployment {
    label: &'static str,
    telemetry_shards: u32,
    namespace: &'static str,
    stacks: BTreeMap<&'static str, Rendered>,
}

impl Deployment {
    fn stack(&self, name: &str) -> &Rendered {
        &self.stacks[name]
    }

    fn all(&self) -> impl Iterator<Item = (&'static str, &str, &Value)> {
        self.stacks
            .iter()
            .flat_map(|(stack, rendered)| rendered.resources.iter().map(move |(id, r)| (*stack, id.as_str(), r)))
    }

    fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'static str, &'a str, &'a Value)> + 'a {
        self.all().filter(move |(_, _, r)| r["Type"] == kind)
    }
}

/// Renders every template in order, each importing what the ones before export.
fn deploy(
    label: &'static str,
    prefix: &str,
    telemetry_shards: u32,
    namespace: &'static str,
    extra: &[(&str, &str, &str)],
) -> Deployment {
    let shards = telemetry_shards.to_string();
    let network = [("VpcId", "vpc-0sample"), ("SubnetIds", "subnet-a,subnet-b,subnet-c")];
    let mut parameters: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for stack in ORDER {
        parameters
            .entry(stack)
            .or_default()
            .insert("NamePrefix".into(), prefix.into());
    }
    let mut set = |stack: &'static str, key: &str, value: &str| {
        parameters.entry(stack).or_default().insert(key.into(), value.into());
    };
    set("data-plane", "TelemetryShards", &shards);
    set("compute", "TelemetryShards", &shards);
    set(
        "compute",
        "Image",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/gaming-pipeline:1.0.0",
    );
    set("compute", "MetricsNamespace", namespace);
    set("observability", "MetricsNamespace", namespace);
    for stack in ["warehouse", "compute"] {
        for (key, value) in network {
            set(stack, key, value);
        }
    }
    for &(stack, key, value) in extra {
        let stack = ORDER.into_iter().find(|s| *s == stack).expect("a stack of ORDER");
        set(stack, key, value);
    }
    let stacks = cfn_render::render_in_order(
        prefix,
        &ORDER.map(|stack| (stack, parameters.remove(stack).unwrap_or_default())),
    )
    .unwrap_or_else(|e| panic!("{label}: {e}"));
    Deployment {
        label,
        telemetry_shards,
        namespace,
        stacks,
    }
}

/// The defaults; one shard, another prefix and namespace, an alarm address and
/// Beanstalk; many shards.
fn deployments() -> Vec<Deployment> {
    vec![
        deploy("defaults", "gaming", 2, "GamingAnalytics", &[]),
        deploy(
            "one shard on beanstalk",
            "studio-b",
            1,
            "StudioB/Pipeline",
            &[
                ("observability", "AlarmEmail", "oncall@example.com"),
                ("observability", "Compute", "beanstalk"),
            ],
        ),
        deploy("six shards", "big", 6, "Big", &[]),
    ]
}

/// Every string in `value`, with where it is.
fn strings<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => out.push((at, s)),
        Value::Array(list) => {
            for (i, item) in list.iter().enumerate() {
                strings(item, format!("{at}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                strings(item, format!("{at}.{key}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn templates_render_with_sample_parameters() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra");
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("infra/")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .collect();
    let known: BTreeSet<String> = ORDER.iter().map(|s| s.to_string()).collect();
    assert_eq!(present, known, "a template this test does not deploy, or one it lacks");

    let mut problems = Vec::new();
    for deployment in deployments() {
        for (stack, id, resource) in deployment.all() {
            let mut found = Vec::new();
            strings(&resource["Properties"], format!("{stack}.{id}"), &mut found);
            for (at, text) in found {
                // An intrinsic written inside a string is text, never evaluated.
                if let Some(start) = ["Fn::", "\"Ref\"", "${"].iter().filter_map(|s| text.find(s)).min() {
                    let from = text.floor_char_boundary(start.saturating_sub(40));
                    let to = text.ceil_char_boundary((start + 60).min(text.len()));
                    problems.push(format!(
                        "{}: {at} keeps template syntax: …{}…",
                        deployment.label,
                        &text[from..to]
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The dashboards' metrics, checked as `PutDashboard` would.
fn dashboard_uses(deployment: &Deployment, problems: &mut Vec<String>) -> Vec<MetricUse> {
    let mut uses = Vec::new();
    let mut dashboards = 0;
    for (stack, id, dashboard) in deployment.of_type("AWS::CloudWatch::Dashboard") {
        dashboards += 1;
        let Some(body) = dashboard["Properties"]["DashboardBody"].as_str() else {
            problems.push(format!("{stack}.{id}: DashboardBody is not a string"));
            continue;
        };
        match cloudwatch::dashboard_metrics(body) {
            Ok(found) => uses.extend(found.into_iter().map(|mut u| {
                u.place = format!("{stack}.{id} {}", u.place);
                u
            })),
            Err(found) => problems.extend(
                found
                    .into_iter()
                    .map(|p| format!("{}: {stack}.{id}: {p}", deployment.label)),
            ),
        }
    }
    assert!(dashboards > 0, "no dashboard");
    uses
}

/// The alarms' metrics, checked as `PutMetricAlarm` would.
fn alarm_uses(deployment: &Deployment, problems: &mut Vec<String>) -> Vec<MetricUse> {
    let mut uses = Vec::new();
    for (stack, id, alarm) in deployment.of_type("AWS::CloudWatch::Alarm") {
        match cloudwatch::alarm_metrics(&format!("{stack}.{id}"), &alarm["Properties"]) {
            Ok(found) => uses.extend(found),
            Err(found) => problems.extend(found.into_iter().map(|p| format!("{}: {p}", deployment.label))),
        }
    }
    uses
}

#[test]
fn templates_render_dashboards_cloudwatch_accepts() {
    let mut problems = Vec::new();
    for deployment in deployments() {
        let uses = dashboard_uses(&deployment, &mut problems);
        if uses.len() < 20 {
            problems.push(format!(
                "{}: the dashboard graphs only {} metrics",
                deployment.label,
                uses.len()
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The metrics AWS services publish that the templates use, with their dimension sets.
const AWS_METRICS: &[(&str, &str, &[&str])] = &[
    ("AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", &["StreamName"]),
    ("AWS/Kinesis", "ReadProvisionedThroughputExceeded", &["StreamName"]),
    ("AWS/Kinesis", "WriteProvisionedThroughputExceeded", &["StreamName"]),
    ("AWS/Kinesis", "IncomingRecords", &["StreamName"]),
    ("AWS/DynamoDB", "ReadThrottleEvents", &["TableName"]),
    ("AWS/DynamoDB", "WriteThrottleEvents", &["TableName"]),
    ("AWS/DynamoDB", "ThrottledRequests", &["Operation", "TableName"]),
    (
        "ECS/ContainerInsights",
        "RunningTaskCount",
        &["ClusterName", "ServiceName"],
    ),
    (
        "ECS/ContainerInsights",
        "DesiredTaskCount",
        &["ClusterName", "ServiceName"],
    ),
    ("AWS/ECS", "CPUUtilization", &["ClusterName", "ServiceName"]),
];

/// Service name → its lease applications, from the service crates themselves.
fn services() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        (s3_connector::SERVICE, vec![s3_connector::APPLICATION]),
        (redshift_connector::SERVICE, vec![redshift_connector::APPLICATION]),
        (cron_connector::SERVICE, vec![]),
        (
            player_state_worker::SERVICE,
            vec![
                player_state_worker::events_stage::APPLICATION,
                player_state_worker::level_stage::APPLICATION,
            ],
        ),
    ])
}

/// Names of what the stacks create, by the dimension that names them.
fn resource_names(deployment: &Deployment) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut names: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for (dimension, kind, property) in [
        ("StreamName", "AWS::Kinesis::Stream", "Name"),
        ("TableName", "AWS::DynamoDB::Table", "TableName"),
        ("ClusterName", "AWS::ECS::Cluster", "ClusterName"),
        ("ServiceName", "AWS::ECS::Service", "ServiceName"),
    ] {
        for (_, _, resource) in deployment.of_type(kind) {
            if let Some(name) = resource["Properties"][property].as_str() {
                names.entry(dimension).or_default().insert(name.to_string());
            }
        }
    }
    names
}

/// Why `used` is not a metric the code writes, if it is not.
fn custom_metric_problem(used: &MetricUse, services: &BTreeMap<&str, Vec<&str>>) -> Option<String> {
    let Some(emitted) = names::find(&used.name) else {
        return Some(format!("no service writes a metric {}", used.name));
    };
    let service_dimension = names::dimension::SERVICE;
    if !used.dimensions.contains_key(service_dimension) {
        return Some(format!(
            "{} without {service_dimension}: every metric of the services has it",
            used.name
        ));
    }
    let others: Vec<&str> = used
        .dimension_names()
        .into_iter()
        .filter(|d| *d != service_dimension)
        .collect();
    if !emitted.has_dimensions(&others) {
        return Some(format!(
            "{} is written with the dimension sets {:?} (and Service), not {others:?}",
            used.name, emitted.dimensions
        ));
    }
    let Some(Some(service)) = used.dimensions.get(service_dimension) else {
        return None;
    };
    let Some(applications) = services.get(service.as_str()) else {
        return Some(format!("{service} is not a service"));
    };
    let consumer = !applications.is_empty();
    if !emitted.is_emitted_by(service) || (emitted.by == EmittedBy::ShardConsumers && !consumer) {
        return Some(format!("{service} does not write {}", used.name));
    }
    if let Some(Some(application)) = used.dimensions.get(names::dimension::APPLICATION)
        && !applications.contains(&application.as_str())
    {
        return Some(format!(
            "{service} has no lease application {application} (it has {applications:?})"
        ));
    }
    None
}

#[test]
fn templates_render_only_metrics_the_code_emits() {
    let services = services();
    for metric in names::CATALOGUE {
        if let EmittedBy::Services(list) = metric.by {
            for service in list {
                assert!(
                    services.contains_key(service),
                    "the catalogue names {service}, no service"
                );
            }
        }
    }
    let mut problems = Vec::new();
    for deployment in deployments() {
        // The namespace reaches every container and every graph and alarm.
        for (stack, id, task) in deployment.of_type("AWS::ECS::TaskDefinition") {
            for container in task["Properties"]["ContainerDefinitions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let set = container["Environment"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["Name"] == "METRICS_NAMESPACE")
                    .and_then(|e| e["Value"].as_str());
                if set != Some(deployment.namespace) {
                    problems.push(format!(
                        "{}: {stack}.{id} sets METRICS_NAMESPACE {set:?}",
                        deployment.label
                    ));
                }
            }
        }
        let names = resource_names(&deployment);
        let mut uses = dashboard_uses(&deployment, &mut problems);
        uses.extend(alarm_uses(&deployment, &mut problems));
        for used in &uses {
            let problem = if used.namespace == deployment.namespace {
                custom_metric_problem(used, &services)
            } else if let Some((_, _, dimensions)) = AWS_METRICS
                .iter()
                .find(|(namespace, name, _)| *namespace == used.namespace && *name == used.name)
            {
                let wanted: Vec<&str> = dimensions.to_vec();
                if used.dimension_names() != wanted {
                    Some(format!("{} {} has dimensions {wanted:?}", used.namespace, used.name))
                } else {
                    used.dimensions.iter().find_map(|(dimension, value)| {
                        let value = value.as_ref()?;
                        let known = names.get(dimension.as_str())?;
                        (!known.contains(value)).then(|| format!("{dimension} {value} is nothing the stacks create"))
                    })
                }
            } else if used.namespace.starts_with("AWS/") || used.namespace.starts_with("ECS/") {
                Some(format!(
                    "{} {} is not in this test's AWS_METRICS",
                    used.namespace, used.name
                ))
            } else {
                Some(format!(
                    "namespace {} is not the services' METRICS_NAMESPACE {}",
                    used.namespace, deployment.namespace
                ))
            };
            if let Some(problem) = problem {
                problems.push(format!("{}: {}: {problem}", deployment.label, used.place));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn templates_render_alarms_that_notify() {
    let mut problems = Vec::new();
    for deployment in deployments() {
        alarm_uses(&deployment, &mut problems);
        let mut topics = BTreeSet::new();
        let mut policies = BTreeSet::new();
        for (stack, rendered) in &deployment.stacks {
            for (id, _) in rendered.of_type("AWS::SNS::Topic") {
                topics.insert(rendered.physical_ids[id].clone());
                // The topic's key must be one CloudWatch may use: alias/aws/sns is not.
                let topic = &rendered.resources[id]["Properties"];
                let key = rendered
                    .of_type("AWS::KMS::Key")
                    .find(|(key, _)| topic["KmsMasterKeyId"].as_str() == Some(rendered.physical_ids[*key].as_str()));
                let Some((key_id, key)) = key else {
                    problems.push(format!(
                        "{}: {stack}.{id}: encrypted with {}, no key of its stack",
                        deployment.label, topic["KmsMasterKeyId"]
                    ));
                    continue;
                };
                let lets_cloudwatch_publish = key["Properties"]["KeyPolicy"]["Statement"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| {
                        let actions: Vec<&str> = match &s["Action"] {
                            Value::String(a) => vec![a.as_str()],
                            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                            _ => vec![],
                        };
                        s["Effect"] == "Allow"
                            && s["Principal"]["Service"] == "cloudwatch.amazonaws.com"
                            && actions.contains(&"kms:Decrypt")
                            && actions.iter().any(|a| a.starts_with("kms:GenerateDataKey"))
                    });
                if !lets_cloudwatch_publish {
                    problems.push(format!(
                        "{}: {stack}.{key_id}: its policy does not let CloudWatch publish to {id}",
                        deployment.label
                    ));
                }
            }
            for (id, _) in rendered.of_type("AWS::ApplicationAutoScaling::ScalingPolicy") {
                policies.insert(rendered.physical_ids[id].clone());
            }
        }
        let mut down = BTreeSet::new();
        for (stack, id, alarm) in deployment.of_type("AWS::CloudWatch::Alarm") {
            let properties = &alarm["Properties"];
            let place = format!("{}: {stack}.{id}", deployment.label);
            let list = |key: &str| -> Vec<String> {
                properties[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect()
            };
            let actions = list("AlarmActions");
            for action in &actions {
                if !topics.contains(action) && !policies.contains(action) {
                    problems.push(format!(
                        "{place}: action {action} is no topic or scaling policy of the stacks"
                    ));
                }
            }
            let notifies = actions.iter().any(|a| topics.contains(a));
            if notifies && list("OKActions") != actions {
                problems.push(format!("{place}: notifies on ALARM but not on OK"));
            }
            // An alarm that means "nobody is working" must fire on silence.
            let metric = properties["MetricName"].as_str().unwrap_or_default();
            let on_silence = metric == names::UP
                || metric == "GetRecords.IteratorAgeMilliseconds"
                || properties["Metrics"].to_string().contains("RunningTaskCount");
            if notifies && on_silence && properties["TreatMissingData"] != "breaching" {
                problems.push(format!("{place}: no data must count as breaching"));
            }
            if notifies && metric == names::UP {
                for dimension in properties["Dimensions"].as_array().into_iter().flatten() {
                    if dimension["Name"] == names::dimension::SERVICE {
                        down.insert(dimension["Value"].as_str().unwrap_or_default().to_string());
                    }
                }
            }
        }
        for service in services().keys() {
            if !down.contains(*service) {
                problems.push(format!(
                    "{}: no alarm on {service}'s missing heartbeat",
                    deployment.label
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn templates_render_stateful_resources_retained() {
    const STATEFUL: [&str; 5] = [
        "AWS::Kinesis::Stream",
        "AWS::S3::Bucket",
        "AWS::DynamoDB::Table",
        "AWS::SecretsManager::Secret",
        "AWS::RedshiftServerless::Namespace",
    ];
    let mut problems = Vec::new();
    let deployment = &deployments()[0];
    let data_plane = deployment.stack("data-plane");
    // The key every stack imports: deleting it would make all the data unreadable.
    let shared_key = data_plane
        .of_type("AWS::KMS::Key")
        .find(|(id, _)| {
            data_plane
                .exports
                .values()
                .any(|v| v.as_str().is_some_and(|arn| arn.ends_with(&format!("key/{id}-key-id"))))
        })
        .map(|(id, _)| id.clone())
        .expect("data-plane exports its key");
    let mut checked = 0;
    for (stack, id, resource) in deployment.all() {
        let kind = resource["Type"].as_str().unwrap_or_default();
        if STATEFUL.contains(&kind) || (stack == "data-plane" && *id == shared_key) {
            checked += 1;
            for policy in ["DeletionPolicy", "UpdateReplacePolicy"] {
                if resource[policy] != "Retain" {
                    problems.push(format!("{stack}.{id} ({kind}): {policy} is not Retain"));
                }
            }
        }
    }
    assert!(checked >= 18, "only {checked} stateful resources found");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn templates_render_scaling_follows_the_shards() {
    let mut problems = Vec::new();
    for deployment in deployments() {
        let compute = deployment.stack("compute");
        let shards = deployment.stack("data-plane").parameters["TelemetryShards"].clone();
        assert_eq!(shards, Value::String(deployment.telemetry_shards.to_string()));
        for (id, service) in compute.of_type("AWS::ECS::Service") {
            if service["Properties"].get("DesiredCount").is_some() {
                problems.push(format!(
                    "{}: {id} sets DesiredCount: every stack update resets the count scaling chose",
                    deployment.label
                ));
            }
        }
        let mut targets = 0;
        for (id, target) in compute.of_type("AWS::ApplicationAutoScaling::ScalableTarget") {
            targets += 1;
            let capacity = |key: &str| -> u32 {
                let value = &target["Properties"][key];
                value
                    .as_u64()
                    .map(|v| v as u32)
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or_else(|| panic!("{id}.{key} is {value}"))
            };
            let (min, max) = (capacity("MinCapacity"), capacity("MaxCapacity"));
            // More tasks than shards only wait; at least two keep a standby.
            let wanted = deployment.telemetry_shards.max(2);
            if min > max || max != wanted {
                problems.push(format!(
                    "{}: {id} scales {min}..={max} on {} telemetry shards, not up to {wanted}",
                    deployment.label, deployment.telemetry_shards
                ));
            }
        }
        assert_eq!(targets, 2, "the s3-connector and the player-state-worker scale");
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn templates_render_beanstalk_instance_role_holds_each_task_role() {
    let roles = template("roles");
    let beanstalk = template("beanstalk");
    let instance: BTreeMap<&str, &Value> = beanstalk["Resources"]["InstanceRole"]["Properties"]["Policies"]
        .as_array()
        .expect("the instance role's policies")
        .iter()
        .map(|p| (p["PolicyName"].as_str().expect("a name"), &p["PolicyDocument"]))
        .collect();
    for service in services().keys() {
        let pascal: String = service.split('-').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
        let task_role = &roles["Resources"][format!("{pascal}TaskRole")]["Properties"]["Policies"];
        let task_policies = task_role.as_array().expect("task role policies");
        assert_eq!(task_policies.len(), 1, "{service}: one policy per task role");
        assert_eq!(
            instance.get(service),
            Some(&&task_policies[0]["PolicyDocument"]),
            "infra/beanstalk.json's {service} policy differs from its task role in infra/roles.json"
        );
    }
}
