//! The command line: subcommands, and [`execute`], which runs one and
//! prints its report on stdout.

use crate::{
    consumer_groups, queue_url, render_check, render_letters, render_redrive, render_replay, CliError, Clients,
    Settings, Tables,
};
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_core::ports::DeadLetterQueue;
use std::sync::Arc;

/// Operations on the deployed CRM: rebuild projections, check them against
/// the events, list and redrive dead letters.
#[derive(clap::Parser)]
#[command(name = "crm-ops", version)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Rebuild a projection (customer-360, consent-ledger, ...) or every
    /// projection of a consumer group (projector, consent): clear its
    /// documents and checkpoints, then replay the events table with a
    /// parallel scan. Prints events/s and how many events were parked.
    Replay {
        /// The projection or consumer group to rebuild.
        #[arg(long)]
        consumer: String,
        /// Parallel scan segments (Segment/TotalSegments), run concurrently.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        segments: u32,
        /// No progress spinner.
        #[arg(long)]
        quiet: bool,
    },
    /// Consistency check: fold a sample of customer streams and compare with
    /// the stored customer 360 and consent ledger; prints every difference,
    /// exits 1 if there is any.
    Check {
        /// How many customer streams to fold (0: all).
        #[arg(long, default_value_t = 100)]
        sample: usize,
    },
    /// The SQS dead-letter queues.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// List the messages of a dead-letter queue (they stay visible).
    List {
        /// The queue's URL or name.
        queue: String,
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Hand each event of a dead-letter queue to a consumer group again;
    /// exits 1 if any message could not be redriven.
    Redrive {
        /// The queue's URL or name.
        queue: String,
        /// The consumer group to deliver to: projector or consent.
        #[arg(long)]
        to: String,
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
}

/// Runs `cli`'s command with `clients` and prints its report on stdout.
/// An inconsistent check or a message not redriven is an error (exit 1).
pub async fn execute(cli: Cli, clients: &Clients) -> Result<(), CliError> {
    let settings = cli.settings;
    match cli.command {
        Command::Replay {
            consumer,
            segments,
            quiet,
        } => {
            let tables = Tables::new(clients, &settings)?;
            let url = queue_url(&clients.sqs, settings.dead_letter_queue()?).await?;
            let dead_letters: Arc<dyn DeadLetterQueue> = Arc::new(SqsDeadLetterQueue::new(clients.sqs.clone(), url));
            let groups = consumer_groups(
                &tables,
                dead_letters.clone(),
                settings.identifier_hash_secret.as_deref(),
            );
            let replayed = crate::replay(&tables, &groups, dead_letters.as_ref(), &consumer, segments, !quiet).await?;
            println!("{}", render_replay(&replayed));
            Ok(())
        }
        Command::Check { sample } => {
            let tables = Tables::new(clients, &settings)?;
            let report = crate::check(&tables, sample).await?;
            println!("{}", render_check(&report));
            if report.is_consistent() {
                Ok(())
            } else {
                Err(CliError::Inconsistent(report.differences.len()))
            }
        }
        Command::Dlq {
            command: DlqCommand::List { queue, max },
        } => {
            let letters = crate::dlq_list(&clients.sqs, &queue, max).await?;
            println!("{}", render_letters(&letters));
            Ok(())
        }
        Command::Dlq {
            command: DlqCommand::Redrive { queue, to, max },
        } => {
            let tables = Tables::new(clients, &settings)?;
            // Events parked again go to DEAD_LETTER_QUEUE_URL, or back to the queue redriven.
            let park_in = settings.dead_letter_queue_url.clone().unwrap_or_else(|| queue.clone());
            let url = queue_url(&clients.sqs, &park_in).await?;
            let dead_letters: Arc<dyn DeadLetterQueue> = Arc::new(SqsDeadLetterQueue::new(clients.sqs.clone(), url));
            let groups = consumer_groups(&tables, dead_letters, settings.identifier_hash_secret.as_deref());
            let report = crate::dlq_redrive(&clients.sqs, &tables, groups, &queue, &to, max).await?;
            println!("{}", render_redrive(&report));
            if report.failed.is_empty() {
                Ok(())
            } else {
                Err(CliError::NotRedriven(report.failed.len()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("crm-ops").chain(args.iter().copied()))
    }

    #[test]
    fn replay_needs_a_consumer_and_takes_segments() {
        assert!(parse(&["replay"]).is_err());
        assert!(parse(&["replay", "--consumer", "customer-360", "--segments", "0"]).is_err());
        match parse(&["replay", "--consumer", "customer-360", "--segments", "8", "--quiet"]) {
            Ok(Cli {
                command:
                    Command::Replay {
                        consumer,
                        segments,
                        quiet,
                    },
                ..
            }) => {
                assert_eq!(consumer, "customer-360");
                assert_eq!(segments, 8);
                assert!(quiet);
            }
            _ => panic!("replay did not parse"),
        }
    }

    #[test]
    fn settings_come_from_flags_after_the_subcommand_too() {
        let cli = parse(&["check", "--events-table", "ev", "--read-models-table", "rm"]).expect("parses");
        assert_eq!(cli.settings.events_table().expect("events"), "ev");
        assert_eq!(cli.settings.read_models_table().expect("read models"), "rm");
        assert!(matches!(cli.command, Command::Check { sample: 100 }));
    }

    #[test]
    fn dlq_redrive_needs_a_target() {
        assert!(parse(&["dlq", "redrive", "crm-projector-dlq"]).is_err());
        match parse(&["dlq", "redrive", "crm-projector-dlq", "--to", "projector", "--max", "5"]) {
            Ok(Cli {
                command:
                    Command::Dlq {
                        command: DlqCommand::Redrive { queue, to, max },
                    },
                ..
            }) => assert_eq!(
                (queue.as_str(), to.as_str(), max),
                ("crm-projector-dlq", "projector", 5)
            ),
            _ => panic!("dlq redrive did not parse"),
        }
    }

    #[test]
    fn a_missing_setting_names_its_variable_and_flag() {
        let settings = Settings {
            events_table: Some(" ".into()),
            ..Settings::default()
        };
        let e = settings.events_table().expect_err("blank is missing");
        assert_eq!(
            e.to_string(),
            "EVENTS_TABLE is not set (environment variable EVENTS_TABLE, or --events-table)"
        );
        assert!(settings.data_keys_kms_key_id().is_err());
    }
}
