//! AWS SDK clients, built in one place.
//!
//! Credentials come from the SDK's default chain (env, profile, ECS task role,
//! instance profile). Each service's endpoint can be overridden, which is how the
//! services reach the local emulators; unset, they talk to real AWS.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use clap::Args;

/// Where and how to reach AWS.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// AWS region, for example `eu-west-1`. Unset: taken from the profile or instance metadata.
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,

    /// Endpoint URL for every AWS service (a local emulator); unset means real AWS.
    #[arg(long, env = "AWS_ENDPOINT_URL", value_parser = parse_endpoint_url)]
    pub aws_endpoint_url: Option<String>,

    /// Endpoint URL for Kinesis Data Streams only (overrides AWS_ENDPOINT_URL).
    #[arg(long = "aws-endpoint-url-kinesis", env = "AWS_ENDPOINT_URL_KINESIS", value_parser = parse_endpoint_url)]
    pub kinesis_endpoint_url: Option<String>,

    /// Endpoint URL for DynamoDB only (overrides AWS_ENDPOINT_URL).
    #[arg(long = "aws-endpoint-url-dynamodb", env = "AWS_ENDPOINT_URL_DYNAMODB", value_parser = parse_endpoint_url)]
    pub dynamodb_endpoint_url: Option<String>,

    /// Endpoint URL for DynamoDB Streams only (overrides AWS_ENDPOINT_URL).
    #[arg(long = "aws-endpoint-url-dynamodb-streams", env = "AWS_ENDPOINT_URL_DYNAMODB_STREAMS", value_parser = parse_endpoint_url)]
    pub dynamodb_streams_endpoint_url: Option<String>,

    /// Endpoint URL for S3 only (overrides AWS_ENDPOINT_URL).
    #[arg(long = "aws-endpoint-url-s3", env = "AWS_ENDPOINT_URL_S3", value_parser = parse_endpoint_url)]
    pub s3_endpoint_url: Option<String>,

    /// Address S3 buckets in the path (`http://host/bucket/key`) instead of the host name;
    /// needed by emulators on an IP address.
    #[arg(long, env = "S3_FORCE_PATH_STYLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_force_path_style: bool,

    /// Milliseconds to wait for a TCP/TLS connection to an AWS endpoint.
    #[arg(long, env = "AWS_CONNECT_TIMEOUT_MS", default_value_t = 3_000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub aws_connect_timeout_ms: u64,

    /// Milliseconds one attempt of an AWS call may take before it is abandoned and retried.
    /// Some emulators never answer certain calls; a bound keeps a worker from hanging.
    #[arg(long, env = "AWS_ATTEMPT_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub aws_attempt_timeout_ms: u64,

    /// Attempts per AWS call by the SDK's standard retry strategy (1 = no SDK retries).
    #[arg(long, env = "AWS_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=10))]
    pub aws_max_attempts: u32,
}

fn parse_endpoint_url(value: &str) -> Result<String, String> {
    let uri: http::Uri = value.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(value.trim_end_matches('/').to_string()),
        _ => Err("expected http://host:port or https://host".into()),
    }
}

/// Failure to prepare the AWS clients.
#[derive(Debug, thiserror::Error)]
pub enum AwsConfigError {
    #[error("no AWS region: set AWS_REGION (or --aws-region), or a region in the AWS profile")]
    NoRegion,
}

/// The SDK configuration and endpoint overrides; hands out one client per service.
///
/// Clients share the SDK's HTTP connection pool, so creating one is cheap.
#[derive(Debug, Clone)]
pub struct AwsClients {
    sdk: SdkConfig,
    args: AwsArgs,
}

impl AwsClients {
    /// Loads region and credentials (default chain) and applies timeouts and retries.
    pub async fn load(args: &AwsArgs) -> Result<Self, AwsConfigError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(args.aws_connect_timeout_ms))
                    .operation_attempt_timeout(Duration::from_millis(args.aws_attempt_timeout_ms))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(args.aws_max_attempts));
        if let Some(region) = &args.aws_region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(AwsConfigError::NoRegion);
        }
        Ok(Self {
            sdk,
            args: args.clone(),
        })
    }

    /// Clients from a configuration made elsewhere (a test's own credentials), with
    /// `args`' endpoints.
    pub fn from_sdk_config(sdk: SdkConfig, args: &AwsArgs) -> Self {
        Self {
            sdk,
            args: args.clone(),
        }
    }

    /// The shared configuration (credentials, region, timeouts, retries), for a client
    /// of a service this struct has no method for.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
    }

    /// The region the clients use.
    pub fn region(&self) -> &str {
        self.sdk.region().map(Region::as_ref).unwrap_or_default()
    }

    fn endpoint<'a>(&'a self, specific: &'a Option<String>) -> Option<&'a str> {
        specific.as_deref().or(self.args.aws_endpoint_url.as_deref())
    }

    pub fn kinesis(&self) -> aws_sdk_kinesis::Client {
        let mut builder = aws_sdk_kinesis::config::Builder::from(&self.sdk);
        if let Some(url) = self.endpoint(&self.args.kinesis_endpoint_url) {
            builder = builder.endpoint_url(url);
        }
        aws_sdk_kinesis::Client::from_conf(builder.build())
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let mut builder = aws_sdk_dynamodb::config::Builder::from(&self.sdk);
        if let Some(url) = self.endpoint(&self.args.dynamodb_endpoint_url) {
            builder = builder.endpoint_url(url);
        }
        aws_sdk_dynamodb::Client::from_conf(builder.build())
    }

    pub fn dynamodb_streams(&self) -> aws_sdk_dynamodbstreams::Client {
        let mut builder = aws_sdk_dynamodbstreams::config::Builder::from(&self.sdk);
        if let Some(url) = self.endpoint(&self.args.dynamodb_streams_endpoint_url) {
            builder = builder.endpoint_url(url);
        }
        aws_sdk_dynamodbstreams::Client::from_conf(builder.build())
    }

    /// The Redshift Data API (endpoint: `AWS_ENDPOINT_URL` when set).
    pub fn redshift_data(&self) -> aws_sdk_redshiftdata::Client {
        let mut builder = aws_sdk_redshiftdata::config::Builder::from(&self.sdk);
        if let Some(url) = self.args.aws_endpoint_url.as_deref() {
            builder = builder.endpoint_url(url);
        }
        aws_sdk_redshiftdata::Client::from_conf(builder.build())
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let mut builder = aws_sdk_s3::config::Builder::from(&self.sdk).force_path_style(self.args.s3_force_path_style);
        if let Some(url) = self.endpoint(&self.args.s3_endpoint_url) {
            builder = builder.endpoint_url(url);
        }
        aws_sdk_s3::Client::from_conf(builder.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_are_checked() {
        assert_eq!(
            parse_endpoint_url("http://127.0.0.1:4567/"),
            Ok("http://127.0.0.1:4567".into())
        );
        assert!(parse_endpoint_url("https://kinesis.eu-west-1.amazonaws.com").is_ok());
        assert!(parse_endpoint_url("127.0.0.1:4567").is_err());
        assert!(parse_endpoint_url("ftp://host").is_err());
    }
}
