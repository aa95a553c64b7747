//! The chaos suite, as long as asked: `deploy/local/chaos --send-secs 600`.
//! Prints the table and exits non-zero when an invariant does not hold.

use clap::Parser;
use pipeline_tests::chaos::{self, ChaosArgs};

#[derive(Parser)]
#[command(
    name = "chaos",
    about = "Run the pipeline under SIGKILLs, resharding and AWS faults on the local stack, then check its invariants"
)]
struct Cli {
    #[command(flatten)]
    chaos: ChaosArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let report = chaos::run(&cli.chaos).await;
    println!("{}", report.table());
    let problems = report.problems();
    if problems.is_empty() {
        println!("every invariant holds");
        std::process::ExitCode::SUCCESS
    } else {
        for problem in &problems {
            eprintln!("chaos: {problem}");
        }
        std::process::ExitCode::FAILURE
    }
}
