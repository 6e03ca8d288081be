//! `crm-ops`: parses the command line, builds the AWS clients once (region,
//! credentials and `AWS_ENDPOINT_URL` from the environment) and runs the
//! command ([`crm_ops::execute`]). Exit status 1 on any error, an
//! inconsistent check or a message not redriven; 2 on a usage error.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    crm_ops::init_tracing();
    let cli = crm_ops::Cli::parse();
    let aws = crm_aws::lambda::load_aws_config().await;
    let clients = crm_ops::Clients::new(&aws);
    match crm_ops::execute(cli, &clients).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crm-ops: {e}");
            ExitCode::FAILURE
        }
    }
}
