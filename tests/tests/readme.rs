//! The README's configuration reference names every env var every binary reads.

use clap::CommandFactory;

fn env_vars(command: &clap::Command, into: &mut Vec<String>) {
    for arg in command.get_arguments() {
        if let Some(env) = arg.get_env() {
            into.push(env.to_string_lossy().to_string());
        }
    }
    for sub in command.get_subcommands() {
        env_vars(sub, into);
    }
}

#[test]
fn readme_documents_every_env_var() {
    let readme = include_str!("../../README.md");
    let mut vars = Vec::new();
    for command in [
        s3_connector::Config::command(),
        redshift_connector::Config::command(),
        cron_connector::Config::command(),
        player_state_worker::Config::command(),
        pipelinectl::Cli::command(),
    ] {
        env_vars(&command, &mut vars);
    }
    vars.sort();
    vars.dedup();
    let missing: Vec<&String> = vars.iter().filter(|v| !readme.contains(&format!("`{v}`"))).collect();
    assert!(missing.is_empty(), "README.md does not document {missing:?}");
}
