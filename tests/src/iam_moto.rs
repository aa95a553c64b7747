//! A private moto server that enforces IAM, for tests that need a call to be denied.
//!
//! moto authorizes requests once it has answered `INITIAL_NO_AUTH_ACTION_COUNT` of
//! them without checks (those create the principals): after that, a request signed with
//! one of its IAM users' access keys is allowed only by that user's policies, resource
//! ARNs included (account `123456789012`). It answers a denied DynamoDB call with an
//! HTTP 403 and an XML body. Kinesis stays on kinesalite, which checks nothing.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_iam::config::{Credentials, Region};

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

    /// An IAM user whose only permissions are `policy` (an IAM policy document), and its
    /// access key. Takes three of the free requests.
    pub async fn principal(&self, name: &str, policy: &serde_json::Value) -> AccessKey {
        let iam = aws_sdk_iam::Client::new(&self.sdk_config(None).await);
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

impl Drop for IamMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
