use std::process::ExitCode;

use pipeline_runtime::service::Service;
use s3_connector::{Config, SERVICE};

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = pipeline_runtime::config::parse();
    let (service, aws) = (config.runtime.service.clone(), config.runtime.aws.clone());
    Service::new(SERVICE, &service, &aws)
        .run(|context| s3_connector::run(config, context))
        .await
}
