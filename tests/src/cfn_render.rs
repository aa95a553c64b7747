//! Renders a CloudFormation template the way CloudFormation would deploy it, with no
//! AWS: parameters (given, else their defaults, checked against their constraints),
//! pseudo parameters, conditions, and the intrinsic functions `Ref`, `Fn::GetAtt`,
//! `Fn::Sub` (both forms), `Fn::Join`, `Fn::Select`, `Fn::Split`, `Fn::GetAZs`,
//! `Fn::FindInMap`, `Fn::If` and `Fn::ImportValue` (from the exports of templates
//! rendered before). A reference to something that does not exist, an import nobody
//! exports, or a function not listed here is an error, so a template that starts using
//! one fails here instead of passing unseen.
//!
//! Resources render to sample physical ids: the name a resource's properties give it
//! (`TableName`, `Name`, …) where CloudFormation's `Ref` returns that name, an ARN where
//! `Ref` returns one, and a generated name otherwise.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub const REGION: &str = "eu-west-1";
pub const ACCOUNT_ID: &str = "123456789012";
pub const PARTITION: &str = "aws";

/// Where in the template rendering failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// A path such as `Resources.Dashboard.Properties.DashboardBody`.
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for RenderError {}

fn error(at: &str, message: impl Into<String>) -> RenderError {
    RenderError {
        at: at.to_string(),
        message: message.into(),
    }
}

/// What a stack is deployed with.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub stack_name: &'a str,
    /// Parameter values; a parameter not given takes its default.
    pub parameters: &'a BTreeMap<String, String>,
    /// Export name → value, of the stacks deployed before.
    pub exports: &'a BTreeMap<String, Value>,
}

/// A rendered template.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// The parameters' values (numbers as strings, lists as arrays, as `Ref` gives them).
    pub parameters: BTreeMap<String, Value>,
    pub conditions: BTreeMap<String, bool>,
    /// Logical id → the resource with its `Properties` rendered; resources whose
    /// condition is false are left out.
    pub resources: BTreeMap<String, Value>,
    /// Logical id → what `Ref` returns for each deployed resource.
    pub physical_ids: BTreeMap<String, String>,
    /// Logical id → rendered `Value` of each output whose condition holds.
    pub outputs: BTreeMap<String, Value>,
    /// Export name → value.
    pub exports: BTreeMap<String, Value>,
}

impl Rendered {
    /// The resources of one type, by logical id.
    pub fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
        self.resources.iter().filter(move |(_, r)| r["Type"] == kind)
    }
}

/// A template of `infra/` (`name` without `.json`), parsed.
pub fn template(name: &str) -> Value {
    let path = crate::sources::root().join(format!("infra/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.json: {e}"))
}

/// Renders templates of `infra/` as stacks `<prefix>-<name>` deployed in the order
/// given, each with its parameters and importing what the ones before export.
pub fn render_in_order(
    prefix: &str,
    stacks: &[(&'static str, BTreeMap<String, String>)],
) -> Result<BTreeMap<&'static str, Rendered>, String> {
    let mut exports = BTreeMap::new();
    let mut rendered = BTreeMap::new();
    for (stack, parameters) in stacks {
        let name = format!("{prefix}-{stack}");
        let one = render(
            &template(stack),
            &Inputs {
                stack_name: &name,
                parameters,
                exports: &exports,
            },
        )
        .map_err(|e| format!("{stack}.json does not render: {e}"))?;
        exports.extend(one.exports.clone());
        rendered.insert(*stack, one);
    }
    Ok(rendered)
}

/// Renders `template` deployed as `inputs` says.
pub fn render(template: &Value, inputs: &Inputs<'_>) -> Result<Rendered, RenderError> {
    let empty = Map::new();
    let section = |name: &str| -> Result<&Map<String, Value>, RenderError> {
        match template.get(name) {
            None => Ok(&empty),
            Some(Value::Object(map)) => Ok(map),
            Some(_) => Err(error(name, "is not an object")),
        }
    };
    let declared = section("Parameters")?;
    if let Some(unknown) = inputs.parameters.keys().find(|k| !declared.contains_key(*k)) {
        return Err(error("Parameters", format!("the template has no parameter {unknown}")));
    }
    let mut parameters = BTreeMap::new();
    for (name, spec) in declared {
        let value = parameter(name, spec, inputs.parameters.get(name))?;
        parameters.insert(name.clone(), value);
    }
    let mut context = Context {
        inputs,
        parameters,
        conditions: BTreeMap::new(),
        mappings: section("Mappings")?,
        resources: section("Resources")?,
    };
    let raw_conditions = section("Conditions")?;
    for name in raw_conditions.keys() {
        let holds = context.condition_named(raw_conditions, name, &format!("Conditions.{name}"), 0)?;
        context.conditions.insert(name.clone(), holds);
    }

    let mut rendered = Rendered {
        parameters: context.parameters.clone(),
        conditions: context.conditions.clone(),
        ..Rendered::default()
    };
    for (logical, resource) in context.resources {
        let at = format!("Resources.{logical}");
        if !context.exists(logical, &at)? {
            continue;
        }
        let body = resource.as_object().ok_or_else(|| error(&at, "is not an object"))?;
        let mut out = Map::new();
        for (key, value) in body {
            match key.as_str() {
                "Type" | "DeletionPolicy" | "UpdateReplacePolicy" | "Metadata" | "Condition" => {
                    out.insert(key.clone(), value.clone());
                }
                "Properties" => {
                    let properties = context.value(value, &format!("{at}.Properties"))?;
                    out.insert(key.clone(), properties.unwrap_or_else(|| Value::Object(Map::new())));
                }
                "DependsOn" => {
                    let names: Vec<&Value> = match value {
                        Value::Array(list) => list.iter().collect(),
                        one => vec![one],
                    };
                    for name in names {
                        let name = name
                            .as_str()
                            .ok_or_else(|| error(&at, "DependsOn names a non-string"))?;
                        if !context.exists(name, &format!("{at}.DependsOn"))? {
                            return Err(error(
                                &at,
                                format!("DependsOn {name}, which this deployment leaves out"),
                            ));
                        }
                    }
                    out.insert(key.clone(), value.clone());
                }
                other => return Err(error(&at, format!("unknown resource attribute {other}"))),
            }
        }
        if !out.get("Type").is_some_and(Value::is_string) {
            return Err(error(&at, "has no Type"));
        }
        rendered
            .physical_ids
            .insert(logical.clone(), context.physical_id(logical, &at, 0)?);
        rendered.resources.insert(logical.clone(), Value::Object(out));
    }
    for (name, output) in section("Outputs")? {
        let at = format!("Outputs.{name}");
        if let Some(condition) = output.get("Condition") {
            let condition = condition
                .as_str()
                .ok_or_else(|| error(&at, "Condition is not a name"))?;
            if !context.holds(condition, &at)? {
                continue;
            }
        }
        let value = context
            .value(&output["Value"], &format!("{at}.Value"))?
            .ok_or_else(|| error(&at, "has no Value"))?;
        if let Some(export) = output.get("Export") {
            let export_name = context
                .value(&export["Name"], &format!("{at}.Export.Name"))?
                .and_then(|n| n.as_str().map(str::to_string))
                .ok_or_else(|| error(&at, "Export.Name is not a string"))?;
            if inputs.exports.contains_key(&export_name) || rendered.exports.contains_key(&export_name) {
                return Err(error(&at, format!("export {export_name} exists already")));
            }
            rendered.exports.insert(export_name, value.clone());
        }
        rendered.outputs.insert(name.clone(), value);
    }
    Ok(rendered)
}

/// A parameter's value as `Ref` returns it.
fn parameter(name: &str, spec: &Value, given: Option<&String>) -> Result<Value, RenderError> {
    let at = format!("Parameters.{name}");
    let kind = spec["Type"].as_str().ok_or_else(|| error(&at, "has no Type"))?;
    let raw = match (given, &spec["Default"]) {
        (Some(value), _) => value.clone(),
        (None, Value::String(default)) => default.clone(),
        (None, Value::Number(default)) => default.to_string(),
        (None, Value::Null) => return Err(error(&at, "has no value and no default")),
        (None, other) => return Err(error(&at, format!("default {other} is not a string or number"))),
    };
    if let Some(allowed) = spec["AllowedValues"].as_array() {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect();
        if !allowed.contains(&raw) {
            return Err(error(&at, format!("{raw:?} is not one of {allowed:?}")));
        }
    }
    if kind == "Number" {
        let number: f64 = raw
            .parse()
            .map_err(|_| error(&at, format!("{raw:?} is not a number")))?;
        if spec["MinValue"].as_f64().is_some_and(|min| number < min)
            || spec["MaxValue"].as_f64().is_some_and(|max| number > max)
        {
            return Err(error(&at, format!("{raw} is outside MinValue..MaxValue")));
        }
        return Ok(Value::String(raw));
    }
    if kind.starts_with("List<") || kind == "CommaDelimitedList" {
        return Ok(Value::Array(
            raw.split(',')
                .map(|item| Value::String(item.trim().to_string()))
                .collect(),
        ));
    }
    let length = raw.chars().count() as u64;
    if spec["MinLength"].as_u64().is_some_and(|min| length < min)
        || spec["MaxLength"].as_u64().is_some_and(|max| length > max)
    {
        return Err(error(&at, format!("{raw:?} is outside MinLength..MaxLength")));
    }
    Ok(Value::String(raw))
}

/// Deepest nesting of references followed (a cycle ends here).
const MAX_DEPTH: usize = 32;

struct Context<'a> {
    inputs: &'a Inputs<'a>,
    parameters: BTreeMap<String, Value>,
    conditions: BTreeMap<String, bool>,
    mappings: &'a Map<String, Value>,
    resources: &'a Map<String, Value>,
}

impl Context<'_> {
    fn holds(&self, condition: &str, at: &str) -> Result<bool, RenderError> {
        self.conditions
            .get(condition)
            .copied()
            .ok_or_else(|| error(at, format!("no condition {condition}")))
    }

    /// Whether resource `logical` is declared and deployed (its condition holds).
    fn exists(&self, logical: &str, at: &str) -> Result<bool, RenderError> {
        let Some(resource) = self.resources.get(logical) else {
            return Err(error(at, format!("no resource {logical}")));
        };
        match resource.get("Condition") {
            None => Ok(true),
            Some(Value::String(condition)) => self.holds(condition, &format!("Resources.{logical}")),
            Some(other) => Err(error(at, format!("Condition {other} is not a name"))),
        }
    }

    fn condition_named(
        &self,
        all: &Map<String, Value>,
        name: &str,
        at: &str,
        depth: usize,
    ) -> Result<bool, RenderError> {
        let definition = all.get(name).ok_or_else(|| error(at, format!("no condition {name}")))?;
        self.condition(all, definition, &format!("Conditions.{name}"), depth + 1)
    }

    fn condition(
        &self,
        all: &Map<String, Value>,
        definition: &Value,
        at: &str,
        depth: usize,
    ) -> Result<bool, RenderError> {
        if depth > MAX_DEPTH {
            return Err(error(at, "conditions refer to each other in a cycle"));
        }
        let (function, argument) = single_key(definition).ok_or_else(|| error(at, "is not a condition function"))?;
        let at = format!("{at}.{function}");
        let conditions = |count: Option<usize>| -> Result<Vec<bool>, RenderError> {
            let list = argument.as_array().ok_or_else(|| error(&at, "takes a list"))?;
            if count.is_some_and(|n| list.len() != n) || list.is_empty() {
                return Err(error(&at, "has the wrong number of conditions"));
            }
            list.iter().map(|c| self.condition(all, c, &at, depth + 1)).collect()
        };
        match function {
            "Condition" => {
                let name = argument.as_str().ok_or_else(|| error(&at, "is not a name"))?;
                self.condition_named(all, name, &at, depth)
            }
            "Fn::Not" => Ok(!conditions(Some(1))?[0]),
            "Fn::And" => Ok(conditions(None)?.into_iter().all(|c| c)),
            "Fn::Or" => Ok(conditions(None)?.into_iter().any(|c| c)),
            "Fn::Equals" => {
                let pair = argument
                    .as_array()
                    .filter(|p| p.len() == 2)
                    .ok_or_else(|| error(&at, "takes two values"))?;
                let left = self.value(&pair[0], &at)?.map(scalar_text);
                let right = self.value(&pair[1], &at)?.map(scalar_text);
                Ok(left == right)
            }
            other => Err(error(&at, format!("{other} is not a condition function"))),
        }
    }

    /// Renders `value`; `None` is `AWS::NoValue` (the key or element is dropped).
    fn value(&self, value: &Value, at: &str) -> Result<Option<Value>, RenderError> {
        self.value_at_depth(value, at, 0)
    }

    fn value_at_depth(&self, value: &Value, at: &str, depth: usize) -> Result<Option<Value>, RenderError> {
        if depth > MAX_DEPTH {
            return Err(error(at, "references go too deep (a cycle?)"));
        }
        match value {
            Value::Object(map) => {
                if let Some((function, argument)) = single_key(value)
                    && is_intrinsic(function)
                {
                    return self.intrinsic(function, argument, &format!("{at}.{function}"), depth + 1);
                }
                if let Some(function) = map.keys().find(|k| is_intrinsic(k)) {
                    return Err(error(at, format!("{function} beside other keys")));
                }
                let mut out = Map::new();
                for (key, item) in map {
                    if let Some(item) = self.value_at_depth(item, &format!("{at}.{key}"), depth)? {
                        out.insert(key.clone(), item);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            Value::Array(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, item) in list.iter().enumerate() {
                    if let Some(item) = self.value_at_depth(item, &format!("{at}[{i}]"), depth)? {
                        out.push(item);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            scalar => Ok(Some(scalar.clone())),
        }
    }

    /// Renders `value`, which must not be `AWS::NoValue`.
    fn present(&self, value: &Value, at: &str, depth: usize) -> Result<Value, RenderError> {
        self.value_at_depth(value, at, depth)?
            .ok_or_else(|| error(at, "AWS::NoValue where a value is needed"))
    }

    fn string(&self, value: &Value, at: &str, depth: usize) -> Result<String, RenderError> {
        match self.present(value, at, depth)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(error(at, format!("{other} is not a string"))),
        }
    }

    fn strings(&self, value: &Value, at: &str, depth: usize) -> Result<Vec<String>, RenderError> {
        match self.present(value, at, depth)? {
            Value::Array(list) => list
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(error(at, format!("list item {other} is not a string"))),
                })
                .collect(),
            other => Err(error(at, format!("{other} is not a list"))),
        }
    }

    fn intrinsic(
        &self,
        function: &str,
        argument: &Value,
        at: &str,
        depth: usize,
    ) -> Result<Option<Value>, RenderError> {
        let list = |n: usize| -> Result<&Vec<Value>, RenderError> {
            argument
                .as_array()
                .filter(|l| l.len() == n)
                .ok_or_else(|| error(at, format!("takes a list of {n}")))
        };
        match function {
            "Ref" => {
                let name = argument.as_str().ok_or_else(|| error(at, "names no string"))?;
                self.reference(name, at, depth)
            }
            "Fn::GetAtt" => {
                let (logical, attribute) = match argument {
                    Value::String(dotted) => dotted
                        .split_once('.')
                        .map(|(l, a)| (l.to_string(), a.to_string()))
                        .ok_or_else(|| error(at, "is not Logical.Attribute"))?,
                    Value::Array(pair) if pair.len() == 2 => {
                        (self.string(&pair[0], at, depth)?, self.string(&pair[1], at, depth)?)
                    }
                    _ => return Err(error(at, "takes [logical id, attribute]")),
                };
                self.attribute(&logical, &attribute, at, depth).map(Some)
            }
            "Fn::Sub" => {
                let (text, variables) = match argument {
                    Value::String(text) => (text.clone(), Map::new()),
                    Value::Array(pair) if pair.len() == 2 => {
                        let text = pair[0]
                            .as_str()
                            .ok_or_else(|| error(at, "the first item is not a string"))?;
                        let map = pair[1]
                            .as_object()
                            .ok_or_else(|| error(at, "the second item is not a map"))?;
                        (text.to_string(), map.clone())
                    }
                    _ => return Err(error(at, "takes a string or [string, map]")),
                };
                self.substitute(&text, &variables, at, depth)
                    .map(|s| Some(Value::String(s)))
            }
            "Fn::Join" => {
                let pair = list(2)?;
                let delimiter = pair[0]
                    .as_str()
                    .ok_or_else(|| error(at, "the delimiter is not a string"))?;
                let items = self.strings(&pair[1], at, depth)?;
                Ok(Some(Value::String(items.join(delimiter))))
            }
            "Fn::Select" => {
                let pair = list(2)?;
                let index: usize = self
                    .string(&pair[0], at, depth)?
                    .parse()
                    .map_err(|_| error(at, "the index is not a number"))?;
                let items = match self.present(&pair[1], at, depth)? {
                    Value::Array(items) => items,
                    other => return Err(error(at, format!("{other} is not a list"))),
                };
                items
                    .into_iter()
                    .nth(index)
                    .map(Some)
                    .ok_or_else(|| error(at, format!("index {index} is past the end")))
            }
            "Fn::Split" => {
                let pair = list(2)?;
                let delimiter = pair[0]
                    .as_str()
                    .ok_or_else(|| error(at, "the delimiter is not a string"))?;
                let text = self.string(&pair[1], at, depth)?;
                Ok(Some(Value::Array(
                    text.split(delimiter).map(|s| Value::String(s.to_string())).collect(),
                )))
            }
            "Fn::GetAZs" => {
                let region = self.string(argument, at, depth)?;
                let region = if region.is_empty() { REGION.to_string() } else { region };
                Ok(Some(Value::Array(
                    ["a", "b", "c"]
                        .iter()
                        .map(|zone| Value::String(format!("{region}{zone}")))
                        .collect(),
                )))
            }
            "Fn::FindInMap" => {
                let keys = list(3)?;
                let map = self.string(&keys[0], at, depth)?;
                let top = self.string(&keys[1], at, depth)?;
                let second = self.string(&keys[2], at, depth)?;
                self.mappings
                    .get(&map)
                    .and_then(|m| m.get(&top))
                    .and_then(|m| m.get(&second))
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| error(at, format!("no mapping {map}.{top}.{second}")))
            }
            "Fn::ImportValue" => {
                let name = self.string(argument, at, depth)?;
                self.inputs
                    .exports
                    .get(&name)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| error(at, format!("no stack deployed before exports {name}")))
            }
            "Fn::If" => {
                let triple = list(3)?;
                let condition = triple[0]
                    .as_str()
                    .ok_or_else(|| error(at, "the condition is not a name"))?;
                let branch = if self.holds(condition, at)? {
                    &triple[1]
                } else {
                    &triple[2]
                };
                self.value_at_depth(branch, at, depth)
            }
            other => Err(error(at, format!("{other} is not modelled here"))),
        }
    }

    fn reference(&self, name: &str, at: &str, depth: usize) -> Result<Option<Value>, RenderError> {
        let pseudo = match name {
            "AWS::NoValue" => return Ok(None),
            "AWS::Region" => Some(REGION.to_string()),
            "AWS::AccountId" => Some(ACCOUNT_ID.to_string()),
            "AWS::Partition" => Some(PARTITION.to_string()),
            "AWS::URLSuffix" => Some("amazonaws.com".to_string()),
            "AWS::StackName" => Some(self.inputs.stack_name.to_string()),
            "AWS::StackId" => Some(format!(
                "arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{}/sample",
                self.inputs.stack_name
            )),
            _ => None,
        };
        if let Some(value) = pseudo {
            return Ok(Some(Value::String(value)));
        }
        if let Some(value) = self.parameters.get(name) {
            return Ok(Some(value.clone()));
        }
        self.physical_id(name, at, depth).map(|id| Some(Value::String(id)))
    }

    /// A rendered property of resource `logical`, if it has it.
    fn property(&self, logical: &str, property: &str, depth: usize) -> Result<Option<String>, RenderError> {
        match self.resources.get(logical).and_then(|r| r["Properties"].get(property)) {
            None => Ok(None),
            Some(value) => self
                .string(value, &format!("Resources.{logical}.Properties.{property}"), depth + 1)
                .map(Some),
        }
    }

    fn resource_type(&self, logical: &str, at: &str) -> Result<&str, RenderError> {
        if !self.exists(logical, at)? {
            return Err(error(at, format!("{logical} is not deployed (its condition is false)")));
        }
        self.resources[logical]["Type"]
            .as_str()
            .ok_or_else(|| error(at, format!("{logical} has no Type")))
    }

    /// What `Ref` returns for resource `logical`.
    fn physical_id(&self, logical: &str, at: &str, depth: usize) -> Result<String, RenderError> {
        let kind = self.resource_type(logical, at)?;
        let generated = format!("{}-{logical}-sample", self.inputs.stack_name);
        let named = |property: &str| -> Result<String, RenderError> {
            Ok(self
                .property(logical, property, depth)?
                .unwrap_or_else(|| generated.clone()))
        };
        Ok(match kind {
            "AWS::Kinesis::Stream" => named("Name")?,
            "AWS::DynamoDB::Table" => named("TableName")?,
            "AWS::S3::Bucket" => named("BucketName")?,
            "AWS::KMS::Alias" => named("AliasName")?,
            "AWS::ECS::Cluster" => named("ClusterName")?,
            "AWS::Logs::LogGroup" => named("LogGroupName")?,
            "AWS::IAM::Role" => named("RoleName")?,
            "AWS::IAM::InstanceProfile" => named("InstanceProfileName")?,
            "AWS::CloudWatch::Dashboard" => named("DashboardName")?,
            "AWS::CloudWatch::Alarm" => named("AlarmName")?,
            "AWS::RedshiftServerless::Namespace" => named("NamespaceName")?,
            "AWS::RedshiftServerless::Workgroup" => named("WorkgroupName")?,
            "AWS::KMS::Key" => format!("{logical}-key-id"),
            "AWS::EC2::SecurityGroup" => format!("sg-{logical}"),
            "AWS::SNS::Topic"
            | "AWS::ECS::Service"
            | "AWS::ECS::TaskDefinition"
            | "AWS::ApplicationAutoScaling::ScalingPolicy"
            | "AWS::SecretsManager::Secret" => self.arn(logical, at, depth)?,
            _ => generated,
        })
    }

    fn arn(&self, logical: &str, at: &str, depth: usize) -> Result<String, RenderError> {
        let kind = self.resource_type(logical, at)?;
        let generated = format!("{}-{logical}-sample", self.inputs.stack_name);
        let named = |property: &str| -> Result<String, RenderError> {
            Ok(self
                .property(logical, property, depth)?
                .unwrap_or_else(|| generated.clone()))
        };
        let (p, r, a) = (PARTITION, REGION, ACCOUNT_ID);
        Ok(match kind {
            "AWS::SNS::Topic" => format!("arn:{p}:sns:{r}:{a}:{}", named("TopicName")?),
            "AWS::KMS::Key" => format!("arn:{p}:kms:{r}:{a}:key/{logical}-key-id"),
            "AWS::S3::Bucket" => format!("arn:{p}:s3:::{}", named("BucketName")?),
            "AWS::DynamoDB::Table" => format!("arn:{p}:dynamodb:{r}:{a}:table/{}", named("TableName")?),
            "AWS::Kinesis::Stream" => format!("arn:{p}:kinesis:{r}:{a}:stream/{}", named("Name")?),
            "AWS::IAM::Role" => format!("arn:{p}:iam::{a}:role/{}", named("RoleName")?),
            "AWS::IAM::InstanceProfile" => {
                format!("arn:{p}:iam::{a}:instance-profile/{}", named("InstanceProfileName")?)
            }
            "AWS::ECS::Service" => format!("arn:{p}:ecs:{r}:{a}:service/{}", named("ServiceName")?),
            "AWS::ApplicationAutoScaling::ScalingPolicy" => format!(
                "arn:{p}:autoscaling:{r}:{a}:scalingPolicy:{logical}:resource/ecs/sample:policyName/{}",
                named("PolicyName")?
            ),
            _ => {
                let service = kind.split("::").nth(1).unwrap_or("unknown").to_ascii_lowercase();
                format!("arn:{p}:{service}:{r}:{a}:{logical}")
            }
        })
    }

    fn attribute(&self, logical: &str, attribute: &str, at: &str, depth: usize) -> Result<Value, RenderError> {
        let kind = self.resource_type(logical, at)?;
        let value = match (kind, attribute) {
            (_, "Arn") => self.arn(logical, at, depth)?,
            ("AWS::RedshiftServerless::Workgroup", "Workgroup.WorkgroupArn") => {
                format!("arn:{PARTITION}:redshift-serverless:{REGION}:{ACCOUNT_ID}:workgroup/{logical}-id")
            }
            ("AWS::RedshiftServerless::Workgroup", "Workgroup.WorkgroupName") => {
                self.physical_id(logical, at, depth)?
            }
            ("AWS::ECS::Service", "Name") => self
                .property(logical, "ServiceName", depth)?
                .ok_or_else(|| error(at, format!("{logical} has no ServiceName")))?,
            _ => {
                return Err(error(
                    at,
                    format!("attribute {attribute} of {kind} is not modelled here"),
                ));
            }
        };
        Ok(Value::String(value))
    }

    /// `Fn::Sub`: `${Name}` is a variable of `variables`, a parameter, a pseudo
    /// parameter or a resource's `Ref`; `${Logical.Attribute}` is a `Fn::GetAtt`;
    /// `${!Text}` is the literal `${Text}`.
    fn substitute(
        &self,
        text: &str,
        variables: &Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> Result<String, RenderError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| error(at, format!("unclosed ${{ in {text:?}")))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else {
                let value = if let Some(variable) = variables.get(name) {
                    self.present(variable, &format!("{at}.{name}"), depth)?
                } else if let Some((logical, attribute)) = name.split_once('.') {
                    self.attribute(logical, attribute, at, depth)?
                } else {
                    self.reference(name, at, depth)?
                        .ok_or_else(|| error(at, format!("${{{name}}} is AWS::NoValue")))?
                };
                match value {
                    Value::String(s) => out.push_str(&s),
                    Value::Number(n) => out.push_str(&n.to_string()),
                    other => return Err(error(at, format!("${{{name}}} is {other}, not a string"))),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn is_intrinsic(key: &str) -> bool {
    key == "Ref" || key.starts_with("Fn::")
}

fn single_key(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// `Fn::Equals` compares what the values say, so `2` equals `"2"`.
fn scalar_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render_with(
        template: Value,
        parameters: &[(&str, &str)],
        exports: &BTreeMap<String, Value>,
    ) -> Result<Rendered, RenderError> {
        let parameters: BTreeMap<String, String> =
            parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        render(
            &template,
            &Inputs {
                stack_name: "stack",
                parameters: &parameters,
                exports,
            },
        )
    }

    fn properties(rendered: &Rendered, logical: &str) -> Value {
        rendered.resources[logical]["Properties"].clone()
    }

    fn base() -> Value {
        json!({
            "Parameters": {
                "Prefix": { "Type": "String", "Default": "gaming" },
                "Shards": { "Type": "Number", "Default": 2, "MinValue": 1 },
                "Subnets": { "Type": "List<AWS::EC2::Subnet::Id>" },
                "Email": { "Type": "String", "Default": "" }
            },
            "Conditions": {
                "HasEmail": { "Fn::Not": [ { "Fn::Equals": [ { "Ref": "Email" }, "" ] } ] },
                "OneShard": { "Fn::Equals": [ { "Ref": "Shards" }, 1 ] },
                "Either": { "Fn::Or": [ { "Condition": "HasEmail" }, { "Condition": "OneShard" } ] }
            },
            "Resources": {
                "Stream": { "Type": "AWS::Kinesis::Stream", "Properties": { "Name": { "Fn::Sub": "${Prefix}-telemetry" } } },
                "Topic": { "Type": "AWS::SNS::Topic", "Properties": { "TopicName": "alarms" } },
                "Key": { "Type": "AWS::KMS::Key", "Properties": {} },
                "Mail": { "Type": "AWS::SNS::Subscription", "Condition": "HasEmail",
                          "Properties": { "TopicArn": { "Ref": "Topic" }, "Endpoint": { "Ref": "Email" } } }
            },
            "Outputs": {
                "StreamName": { "Value": { "Ref": "Stream" }, "Export": { "Name": { "Fn::Sub": "${Prefix}-Stream" } } }
            }
        })
    }

    fn with_resource(logical: &str, properties: Value) -> Value {
        let mut template = base();
        template["Resources"][logical] = json!({ "Type": "AWS::CloudWatch::Dashboard", "Properties": properties });
        template
    }

    /// The properties of a resource `Thing` holding `properties`, rendered with the
    /// sample subnets.
    fn render_thing(properties: Value) -> Value {
        let rendered = render_with(with_resource("Thing", properties), &subnets(), &BTreeMap::new()).expect("renders");
        self::properties(&rendered, "Thing")
    }

    fn subnets() -> [(&'static str, &'static str); 1] {
        [("Subnets", "subnet-a,subnet-b")]
    }

    #[test]
    fn sub_replaces_parameters_pseudo_parameters_refs_and_attributes() {
        let thing = render_thing(
            json!({ "A": { "Fn::Sub": "${Prefix}/${AWS::Region}/${AWS::AccountId}/${Stream}/${Topic}/${Key.Arn}/${!Literal}" } }),
        );
        assert_eq!(
            thing["A"],
            json!(
                "gaming/eu-west-1/123456789012/gaming-telemetry/arn:aws:sns:eu-west-1:123456789012:alarms/arn:aws:kms:eu-west-1:123456789012:key/Key-key-id/${Literal}"
            )
        );
    }

    #[test]
    fn sub_with_a_map_renders_the_map_first() {
        let thing = render_thing(
            json!({ "A": { "Fn::Sub": [ "${Seconds}000 ${Prefix}", { "Seconds": { "Ref": "Shards" } } ] } }),
        );
        assert_eq!(thing["A"], json!("2000 gaming"));
    }

    #[test]
    fn sub_of_a_list_parameter_is_an_error() {
        let template = with_resource("Thing", json!({ "A": { "Fn::Sub": "${Subnets}" } }));
        let failure = render_with(template, &subnets(), &BTreeMap::new()).expect_err("a list in a string");
        assert!(failure.message.contains("not a string"), "{failure}");
        assert!(failure.at.starts_with("Resources.Thing.Properties.A"), "{failure}");
    }

    #[test]
    fn join_select_split_and_lists() {
        let thing = render_thing(json!({
            "Joined": { "Fn::Join": [ ",", { "Ref": "Subnets" } ] },
            "Second": { "Fn::Select": [ 1, { "Fn::Split": [ "-", "a-b-c" ] } ] },
            "Zones": { "Fn::GetAZs": "" },
            "List": { "Ref": "Subnets" }
        }));
        assert_eq!(thing["Joined"], json!("subnet-a,subnet-b"));
        assert_eq!(thing["Second"], json!("b"));
        assert_eq!(thing["Zones"], json!(["eu-west-1a", "eu-west-1b", "eu-west-1c"]));
        assert_eq!(thing["List"], json!(["subnet-a", "subnet-b"]));
    }

    #[test]
    fn conditions_choose_branches_resources_and_drop_no_value() {
        let template = with_resource(
            "Thing",
            json!({
                "Max": { "Fn::If": [ "OneShard", 2, { "Ref": "Shards" } ] },
                "Maybe": { "Fn::If": [ "HasEmail", { "Ref": "Email" }, { "Ref": "AWS::NoValue" } ] },
                "Items": [ "kept", { "Fn::If": [ "Either", "also", { "Ref": "AWS::NoValue" } ] } ]
            }),
        );
        let rendered =
            render_with(template.clone(), &[subnets()[0], ("Shards", "1")], &BTreeMap::new()).expect("renders");
        let thing = properties(&rendered, "Thing");
        assert_eq!(thing["Max"], json!(2));
        assert!(thing.get("Maybe").is_none());
        assert_eq!(thing["Items"], json!(["kept", "also"]));
        assert!(!rendered.resources.contains_key("Mail"));
        assert!(rendered.conditions["OneShard"]);

        let rendered = render_with(
            template,
            &[subnets()[0], ("Shards", "5"), ("Email", "a@b.c")],
            &BTreeMap::new(),
        )
        .expect("renders");
        let thing = properties(&rendered, "Thing");
        assert_eq!(thing["Max"], json!("5"));
        assert_eq!(thing["Maybe"], json!("a@b.c"));
        assert_eq!(
            properties(&rendered, "Mail")["TopicArn"],
            json!("arn:aws:sns:eu-west-1:123456789012:alarms")
        );
    }

    #[test]
    fn imports_come_from_earlier_exports() {
        let first = render_with(base(), &subnets(), &BTreeMap::new()).expect("renders");
        assert_eq!(first.exports["gaming-Stream"], json!("gaming-telemetry"));
        let mut template = with_resource(
            "Thing",
            json!({ "S": { "Fn::ImportValue": { "Fn::Sub": "${Prefix}-Stream" } } }),
        );
        template["Outputs"] = json!({});
        let second = render_with(template.clone(), &subnets(), &first.exports).expect("renders");
        assert_eq!(properties(&second, "Thing")["S"], json!("gaming-telemetry"));
        let failure = render_with(template, &subnets(), &BTreeMap::new()).expect_err("nothing exported");
        assert!(failure.message.contains("exports gaming-Stream"), "{failure}");
    }

    #[test]
    fn an_export_name_is_taken_once() {
        let first = render_with(base(), &subnets(), &BTreeMap::new()).expect("renders");
        let failure = render_with(base(), &subnets(), &first.exports).expect_err("exported twice");
        assert!(failure.message.contains("exists already"), "{failure}");
    }

    #[test]
    fn unknown_names_functions_and_parameters_are_errors() {
        for (properties, expected) in [
            (json!({ "A": { "Ref": "Nothing" } }), "no resource Nothing"),
            (
                json!({ "A": { "Fn::GetAtt": [ "Nothing", "Arn" ] } }),
                "no resource Nothing",
            ),
            (json!({ "A": { "Fn::Sub": "${Nothing}" } }), "no resource Nothing"),
            (
                json!({ "A": { "Fn::GetAtt": [ "Stream", "ShardCount" ] } }),
                "not modelled",
            ),
            (json!({ "A": { "Fn::Base64": "x" } }), "not modelled"),
            (json!({ "A": { "Fn::If": [ "Nope", 1, 2 ] } }), "no condition Nope"),
            (json!({ "A": { "Ref": "Mail" } }), "not deployed"),
            (json!({ "A": { "Ref": "Prefix", "Other": 1 } }), "beside other keys"),
            (json!({ "A": { "Fn::Sub": "${Prefix" } }), "unclosed"),
        ] {
            let failure = render_with(with_resource("Thing", properties.clone()), &subnets(), &BTreeMap::new())
                .expect_err(&properties.to_string());
            assert!(failure.message.contains(expected), "{properties}: {failure}");
        }
        let failure = render_with(base(), &[], &BTreeMap::new()).expect_err("no subnets");
        assert_eq!(failure.at, "Parameters.Subnets");
        let failure =
            render_with(base(), &[subnets()[0], ("Shards", "0")], &BTreeMap::new()).expect_err("below MinValue");
        assert!(failure.message.contains("MinValue"), "{failure}");
        let failure = render_with(base(), &[subnets()[0], ("Shard", "3")], &BTreeMap::new()).expect_err("a typo");
        assert!(failure.message.contains("no parameter Shard"), "{failure}");
    }

    #[test]
    fn a_literal_intrinsic_inside_a_sub_string_stays_text() {
        // The shape of the bug in infra/observability.json: an object written into the
        // string is not evaluated, only its ${…} is; the result is JSON text holding
        // an object where a string belongs, which the dashboard check then refuses.
        let thing =
            render_thing(json!({ "Body": { "Fn::Sub": "[\"StreamName\",{\"Fn::Sub\":\"${Prefix}-files\"}]" } }));
        assert_eq!(thing["Body"], json!("[\"StreamName\",{\"Fn::Sub\":\"gaming-files\"}]"));
    }

    #[test]
    fn reference_cycles_end_in_an_error() {
        let mut template = base();
        template["Resources"]["A"] =
            json!({ "Type": "AWS::DynamoDB::Table", "Properties": { "TableName": { "Ref": "B" } } });
        template["Resources"]["B"] =
            json!({ "Type": "AWS::DynamoDB::Table", "Properties": { "TableName": { "Ref": "A" } } });
        let failure = render_with(template, &subnets(), &BTreeMap::new()).expect_err("a cycle");
        assert!(failure.message.contains("too deep"), "{failure}");
    }
}
