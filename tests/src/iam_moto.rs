//! A private moto server that enforces IAM, for tests that need a call to be denied.
//!
//! moto authorizes requests once it has answered `INITIAL_NO_AUTH_ACTION_COUNT` of
//! them without checks (those create the principals): after that, a request signed with
//! one of its IAM users' access keys is allowed only by that user's policies, resource
//! ARNs included for S3 (account `123456789012`). It answers a denied DynamoDB call with
//! an HTTP 403 and an XML body. Kinesis stays on kinesalite, which checks nothing.
//!
//! Where moto authorizes differently from AWS, [`for_moto`] widens a policy by exactly
//! that much, and says why.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use aws_config::BehaviorVersion;
use aws_sdk_iam::config::{Credentials, Region};
use serde_json::Value;

use crate::cfn_render::{self, Rendered};
use crate::resources::Resources;

/// moto's fixed account id.
pub const ACCOUNT: &str = "123456789012";

/// A moto server of this test's own, on a free loopback port.
pub struct IamMoto {
    child: Child,
    pub endpoint: String,
}

/// An IAM user's access key.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

impl IamMoto {
    /// Starts moto answering `free_requests` requests before it checks permissions.
    pub fn start(free_requests: u32) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let binary = crate::stack::python().with_file_name("moto_server");
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", free_requests.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run deploy/local/up)", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The SDK configuration for this moto, signed with `key` (the free requests'
    /// credentials when `None`).
    pub async fn sdk_config(&self, key: Option<&AccessKey>) -> aws_config::SdkConfig {
        let (id, secret) = key.map_or(("test", "test"), |k| (k.id.as_str(), k.secret.as_str()));
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(id, secret, None, None, "iam-moto"))
            .load()
            .await
    }

    /// An IAM user allowed everything, to set up the rest once moto checks every call.
    /// Takes three of the free requests.
    pub async fn admin(&self) -> AccessKey {
        let everything = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
        });
        self.principal(None, "admin", &everything).await
    }

    /// Clients for this moto signed with `key`, Kinesis on the local stack's kinesalite.
    pub async fn clients(&self, key: &AccessKey) -> pipeline_runtime::AwsClients {
        let args = pipeline_runtime::AwsArgs {
            aws_endpoint_url: Some(self.endpoint.clone()),
            ..crate::stack::aws_args()
        };
        pipeline_runtime::AwsClients::from_sdk_config(self.sdk_config(Some(key)).await, &args)
    }

    /// An IAM user whose only permissions are `policy` (an IAM policy document), and its
    /// access key, made by `admin` (by the free requests when `None`: it takes three).
    pub async fn principal(&self, admin: Option<&AccessKey>, name: &str, policy: &serde_json::Value) -> AccessKey {
        let iam = aws_sdk_iam::Client::new(&self.sdk_config(admin).await);
        iam.create_user().user_name(name).send().await.expect("create user");
        iam.put_user_policy()
            .user_name(name)
            .policy_name("only-this")
            .policy_document(policy.to_string())
            .send()
            .await
            .expect("put user policy");
        let key = iam
            .create_access_key()
            .user_name(name)
            .send()
            .await
            .expect("create access key");
        let key = key.access_key().expect("an access key");
        AccessKey {
            id: key.access_key_id().to_string(),
            secret: key.secret_access_key().to_string(),
        }
    }
}

/// `infra/`'s data plane, warehouse and roles rendered as stacks of `name_prefix`
/// (`crate::cfn_render`): the names the roles' policies are written for.
pub struct TemplateNames {
    data_plane: Value,
    stacks: BTreeMap<&'static str, Rendered>,
}

impl TemplateNames {
    pub fn render(name_prefix: &str) -> Self {
        let parameters = |extra: &[(&str, &str)]| {
            std::iter::once(("NamePrefix", name_prefix))
                .chain(extra.iter().copied())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let network = [("VpcId", "vpc-0local"), ("SubnetIds", "subnet-a,subnet-b")];
        let stacks = cfn_render::render_in_order(
            name_prefix,
            &[
                ("data-plane", parameters(&[])),
                ("warehouse", parameters(&network)),
                ("roles", parameters(&[])),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Self {
            data_plane: cfn_render::template("data-plane"),
            stacks,
        }
    }

    /// The data plane's resource names, by the variable each output sets (its
    /// description).
    pub fn resources(&self) -> Resources {
        let outputs = &self.stacks["data-plane"].outputs;
        Resources::named(|var| {
            let (id, _) = self.data_plane["Outputs"]
                .as_object()?
                .iter()
                .find(|(_, o)| o["Description"] == var)?;
            outputs.get(id)?.as_str().map(String::from)
        })
    }

    /// The policy document of the task role `role`, all its policies' statements in one.
    pub fn role_policy(&self, role: &str) -> Value {
        let policies = self.stacks["roles"].resources[role]["Properties"]["Policies"]
            .as_array()
            .unwrap_or_else(|| panic!("infra/roles.json has no policies for {role}"));
        let statements: Vec<Value> = policies
            .iter()
            .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().cloned().unwrap_or_default())
            .collect();
        serde_json::json!({"Version": "2012-10-17", "Statement": statements})
    }
}

/// `policy` as moto needs it to allow what AWS allows, and no wider in what moto checks:
/// - moto authorizes every DynamoDB and DynamoDB Streams call against the resource `*`,
///   so statements of `dynamodb:` actions hold `*` (their actions are still checked);
/// - moto authorizes TransactWriteItems as `dynamodb:TransactWriteItems`, where AWS
///   checks each item's own action: the level stage's transactions hold only Update
///   items, so `dynamodb:UpdateItem` stands for it (as in `tests/tests/iam.rs`);
/// - moto authorizes HeadBucket as `s3:HeadBucket`, an action AWS does not have (it
///   checks `s3:ListBucket`).
pub fn for_moto(policy: &serde_json::Value) -> serde_json::Value {
    let mut policy = policy.clone();
    let statements = policy["Statement"].as_array_mut().into_iter().flatten();
    for statement in statements {
        let mut actions: Vec<String> = match &statement["Action"] {
            serde_json::Value::String(action) => vec![action.clone()],
            serde_json::Value::Array(actions) => actions.iter().filter_map(|a| a.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        };
        let has = |actions: &[String], action: &str| actions.iter().any(|a| a == action);
        if has(&actions, "dynamodb:UpdateItem") {
            actions.push("dynamodb:TransactWriteItems".into());
        }
        if has(&actions, "s3:ListBucket") {
            actions.push("s3:HeadBucket".into());
        }
        if actions.iter().any(|a| a.starts_with("dynamodb:")) {
            statement["Resource"] = "*".into();
        }
        statement["Action"] = actions.into();
    }
    policy
}

impl Drop for IamMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
