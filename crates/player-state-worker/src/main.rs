use std::process::ExitCode;

use pipeline_runtime::service::Service;
use player_state_worker::{Config, SERVICE, routes};

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = pipeline_runtime::config::parse();
    let (service, aws) = (config.runtime.service.clone(), config.runtime.aws.clone());
    let (levels, transitions) = (
        config.tables.level_state_table.clone(),
        config.tables.transitions_table.clone(),
    );
    Service::new(SERVICE, &service, &aws)
        .with_routes(move |clients| routes::routes(clients.dynamodb(), &levels, &transitions))
        .run(|context| player_state_worker::run(config, context))
        .await
}
