use std::process::ExitCode;

use cron_connector::{Config, SERVICE};
use pipeline_runtime::service::Service;

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = pipeline_runtime::config::parse();
    let (service, aws) = (config.service.clone(), config.aws.clone());
    Service::new(SERVICE, &service, &aws)
        .run(|context| cron_connector::run(config, context))
        .await
}
