use std::process::ExitCode;

use pipeline_runtime::AwsClients;
use pipelinectl::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = pipeline_runtime::config::parse();
    if let Err(error) = pipeline_runtime::logging::init(cli.log_format, &cli.log_level) {
        eprintln!("pipelinectl: {error}");
        return ExitCode::from(2);
    }
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pipelinectl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Commands that write files only never need AWS credentials or a region.
    match &cli.command {
        Command::LevelMap(args) => {
            pipelinectl::level_map::run(args)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Healthcheck(args) => {
            return Ok(match pipelinectl::healthcheck::status(args) {
                Ok(200) => ExitCode::SUCCESS,
                Ok(code) => {
                    eprintln!("{}: {code}", args.url);
                    ExitCode::FAILURE
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            });
        }
        Command::Generate(args) if args.output_file.is_some() => {
            pipelinectl::generate::run(None, args).await?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let aws = AwsClients::load(&cli.aws).await?;
    match cli.command {
        Command::Setup(args) => {
            let plan = args.plan();
            if args.verify && args.warehouse_only {
                let warehouse = args.warehouse.open(aws.s3(), || aws.redshift_data())?;
                let version = warehouse.check_schema().await?;
                println!("warehouse schema at version {version}, as this build needs");
                return Ok(ExitCode::SUCCESS);
            }
            if args.verify {
                let problems = pipeline_runtime::resources::verify(&aws, &plan.resources()).await;
                for problem in &problems {
                    println!("missing or wrong: {problem}");
                }
                if problems.is_empty() {
                    println!("all {} resources are present", plan.resources().len());
                    return Ok(ExitCode::SUCCESS);
                }
                return Ok(ExitCode::FAILURE);
            }
            if !args.warehouse_only {
                let report = pipelinectl::setup::apply(&aws, &plan).await?;
                for line in &report {
                    println!("{line}");
                }
            }
            let configured = args.warehouse.warehouse_url.is_some()
                || args.warehouse.warehouse_backend != warehouse::config::Backend::Postgres;
            if configured {
                let warehouse = args.warehouse.open(aws.s3(), || aws.redshift_data())?;
                let version = warehouse.migrate().await?;
                println!("warehouse schema at version {version}");
                let users = [
                    (warehouse::privileges::Grantee::Loader, &args.warehouse_loader_users),
                    (warehouse::privileges::Grantee::Reader, &args.warehouse_reader_users),
                ];
                for (grantee, users) in users {
                    for user in users.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
                        warehouse.grant(grantee, user).await?;
                        println!("warehouse user {user}: {grantee:?} grants");
                    }
                }
            } else if args.warehouse_only {
                anyhow::bail!("SETUP_WAREHOUSE_ONLY: no warehouse is configured (WAREHOUSE_URL or WAREHOUSE_BACKEND)");
            } else {
                println!(
                    "warehouse not configured (WAREHOUSE_URL or WAREHOUSE_BACKEND): its schema is not created; services refuse to start until it is"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => {
            pipelinectl::generate::run(Some(aws.kinesis()), &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Heatmap(args) => {
            let warehouse = args.warehouse.open(aws.s3(), || aws.redshift_data())?;
            let drawn = pipelinectl::heatmap::run(&warehouse, &args.spec).await?;
            eprintln!(
                "{}: {} events, {} in the busiest cell{}",
                args.spec.output.display(),
                drawn.events,
                drawn.busiest_cell,
                if drawn.outside > 0 {
                    format!("; {} outside the map (check HEATMAP_MAP_WIDTH/HEIGHT)", drawn.outside)
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::LevelMap(_) | Command::Healthcheck(_) => Ok(ExitCode::SUCCESS),
        Command::Summary(args) => {
            let warehouse = args.warehouse.open(aws.s3(), || aws.redshift_data())?;
            let holds = pipelinectl::summary::run(&aws, &warehouse, &args).await?;
            Ok(if holds { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Serve(args) => {
            // No warehouse configured leaves its panels down; a wrong setting stops the start.
            let timeout = std::time::Duration::from_millis(args.store_timeout_ms);
            let warehouse = pipelinectl::serve::open_warehouse(&args.warehouse, timeout, |settings| {
                settings.open(aws.s3(), || aws.redshift_data())
            })
            .await?;
            let shutdown = pipeline_runtime::shutdown::on_signals()?;
            let page = pipelinectl::serve::Page::new(&aws, warehouse, *args)?;
            pipelinectl::serve::run(page, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Levels(args) => {
            pipelinectl::levels::run(&aws.dynamodb(), &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ReconcileLevels(args) => {
            if args.check {
                // Read-only: a signal may end it at any point (no handler, the default exit).
                let never = tokio_util::sync::CancellationToken::new();
                let drift = pipelinectl::reconcile::check(&aws.dynamodb(), &args, &never).await?;
                print!("{}", pipelinectl::reconcile::render(&drift));
                return Ok(if drift.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            let shutdown = pipeline_runtime::shutdown::on_signals()?;
            // Each transaction as it commits: an interruption between two of a correction
            // that takes several leaves those printed written.
            let on_commit = |chunk: &[live_state::drift::Drift]| {
                print!("{}", pipelinectl::reconcile::correct::render(chunk, "corrected"));
            };
            let corrected = pipelinectl::reconcile::correct(&aws, &args, shutdown, &on_commit).await?;
            print!("{}", pipelinectl::reconcile::report(&corrected, args.dry_run));
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill(args) => {
            let warehouse = args.warehouse.open(aws.s3(), || aws.redshift_data())?;
            let done = pipelinectl::backfill::run(&aws.s3(), &warehouse, &args).await?;
            print!("{}", done.render(args.dry_run));
            Ok(if done.set_aside.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Forget(args) => {
            let warehouse = args.warehouse.open(aws.s3(), || aws.redshift_data())?;
            let receipt = pipelinectl::forget::run(&aws, &warehouse, &args).await?;
            println!("{}", serde_json::to_string_pretty(&receipt)?);
            if !receipt.lake.unreadable.is_empty() {
                eprintln!(
                    "pipelinectl: {} lake object(s) could not be read as batch files and were left as they are (see `unreadable`)",
                    receipt.lake.unreadable.len()
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters(args) => {
            pipelinectl::dead_letters::run(&aws.s3(), &aws.kinesis(), &args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
