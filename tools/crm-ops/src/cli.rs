//! The command line: subcommands, and [`execute`], which runs one and
//! prints its report on stdout.

use crate::{
    consumer_groups, queue_url, render_check, render_letters, render_letters_with_data, render_redrive, render_replay,
    render_republish, render_verify, sealed_dead_letters, unverified, verify_json, CliError, Clients, Settings, Tables,
};
use chrono::{DateTime, Utc};

/// Operations on the deployed CRM: rebuild projections, check them against
/// the events, list and redrive dead letters, publish events again.
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
    /// Move the email reservations made before keyed hashes (`email#<sha256>`)
    /// to the keyed key (decision 0046; needs IDENTIFIER_HASH_SECRET);
    /// idempotent. Then `replay --consumer projector` rebuilds the indexes.
    Rekey,
    /// Check the stored projections against the events (--full: every
    /// projection, every event, the proof that no consumer lost one).
    ///
    /// --full (decision 0035), replay and diff: every event of the events
    /// table, decrypted, is folded in memory through every projection of the
    /// projector and consent groups (the segment evaluator aside: it writes
    /// no documents), in recorded order and again stream by stream in
    /// reverse; every folded document, and every stored document of the
    /// partitions the fold wrote in, is compared with the read-models table.
    /// Checkpoints are not read: nothing is skipped as "behind", so run it
    /// once the queues are drained. Prints each document missing, different
    /// or extra (with the event that last wrote it in the fold), a table per
    /// consumer (compared, missing, different, extra) and the totals, with
    /// the events lost; exits 1 on any difference, or on any document two
    /// orders fold differently. Needs IDENTIFIER_HASH_SECRET.
    ///
    /// Without --full: fold a sample of customer streams through the
    /// customer 360 and the consent ledger only. A (consumer, stream) whose
    /// checkpoint is below the stream's newest event the consumer handles,
    /// and whose documents are not those of the whole stream, is reported
    /// BEHIND and its differences are not (lag, or a lost event: the sample
    /// cannot tell). Prints every difference, exits 1 if there is any.
    Check {
        /// Without --full: how many customer streams to fold (0: all).
        #[arg(long, default_value_t = 100)]
        sample: usize,
        /// Replay every event through every projection and diff every document.
        #[arg(long, conflicts_with = "sample")]
        full: bool,
        /// With --full: print the report as JSON (its `totals` hold compared,
        /// missing, different, extra, order_dependent, mismatched and
        /// lost_events: the distinct events the differences name).
        #[arg(long, requires = "full")]
        json: bool,
    },
    /// The SQS dead-letter queues.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Publish again, straight from the events table, every event recorded
    /// in a time range (both ends included): for when the table's stream
    /// (24 h) ran out before the relay could read it. Consumers drop the
    /// duplicates. Needs EVENTS_TABLE, EVENT_BUS_NAME and
    /// RELAY_DEAD_LETTER_QUEUE_URL (where what the bus will not take is
    /// parked). Exits 1 if any event was neither published nor parked.
    Republish {
        /// The range's start, RFC 3339 (2026-12-01T10:00:00Z).
        #[arg(long, value_parser = rfc3339)]
        from: DateTime<Utc>,
        /// The range's end, RFC 3339.
        #[arg(long, value_parser = rfc3339)]
        to: DateTime<Utc>,
        /// Parallel scan segments (Segment/TotalSegments), run concurrently.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        segments: u32,
        /// No progress spinner.
        #[arg(long)]
        quiet: bool,
    },
    /// Rewrite the deferral timers set before decision 0041, whose
    /// schedule's Input holds the message request (the trigger event's
    /// personal data, in clear), to reference the request instead: same
    /// schedule, same name and fire time, only the Input changes
    /// (UpdateSchedule). Other schedules, and deferrals already due, are
    /// left alone; a second run changes nothing (decision 0049). Prints the
    /// counts; exits 1 if any schedule failed.
    MigrateTimers {
        /// The schedule group (`crm-<stack>`).
        #[arg(long, env = "SCHEDULE_GROUP")]
        group: String,
    },
    /// Re-wrap the customers' data keys that KMS wrapped before decision
    /// 0044 under the branch key: the same data key (everything encrypted
    /// under it still decrypts), one KMS Decrypt each, written on the
    /// condition that the item is unchanged, so a key erased meanwhile
    /// stays erased. A second run changes nothing (decision 0049). Needs
    /// KEYS_TABLE and DATA_KEYS_KMS_KEY_ID. Prints the counts; exits 1 if
    /// any key failed.
    RewrapKeys,
}

fn rfc3339(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| format!("not an RFC 3339 time ({e}); for example 2026-12-01T10:00:00Z"))
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
        /// Also print each letter's data, decrypted for display with the
        /// customer's key (KEYS_TABLE, DATA_KEYS_KMS_KEY_ID), or [erased]
        /// once the customer was erased. The queue keeps it encrypted.
        #[arg(long)]
        data: bool,
    },
    /// Seal the letters parked with personal data in clear (before decision
    /// 0040): each parked again with its personal fields encrypted under the
    /// customer's key ([erased] without one), the old message deleted.
    /// Needs KEYS_TABLE and DATA_KEYS_KMS_KEY_ID.
    Seal {
        /// The queue's URL or name.
        queue: String,
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Deliver the events of a dead-letter queue again; a message is
    /// deleted once its event was delivered (or parked again with a new
    /// reason). Exits 1 if any message could not be redriven.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["to", "to_queue"])))]
    Redrive {
        /// The queue's URL or name.
        queue: String,
        /// `relay`: the relay's dead-letter queue, published again onto
        /// EVENT_BUS_NAME (events parked by key re-read from EVENTS_TABLE);
        /// `scheduler`: EventBridge Scheduler's dead-letter queue, each
        /// parked timer put on EVENT_BUS_NAME as its schedule would have (a
        /// TimerFired from crm.scheduler, the schedule's Input as detail);
        /// `projector` or `consent`: handed to that consumer group in this
        /// process.
        #[arg(long)]
        to: Option<String>,
        /// A consumer's source queue (URL or name; projector, consent,
        /// campaign, channel): each event is sent back as the EventBridge
        /// event its rule delivers, for the consumer's own function.
        #[arg(long)]
        to_queue: Option<String>,
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
}

/// The `--to` that publishes onto the bus through the relay.
pub const RELAY_TARGET: &str = "relay";

/// The `--to` that puts the scheduler's parked timers on the bus.
pub const SCHEDULER_TARGET: &str = "scheduler";

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
            let dead_letters = sealed_dead_letters(clients, &tables, url);
            let groups = consumer_groups(
                &tables,
                dead_letters.clone(),
                settings.identifier_hash_secret.as_deref(),
            );
            let replayed = crate::replay(&tables, &groups, dead_letters.as_ref(), &consumer, segments, !quiet).await?;
            println!("{}", render_replay(&replayed));
            Ok(())
        }
        Command::Rekey => {
            let tables = Tables::new(clients, &settings)?;
            let report = crate::rekey::rekey(&tables, settings.identifier_hash_secret.as_deref()).await?;
            println!("{}", crate::rekey::render(&report));
            Ok(())
        }
        Command::Check { full: true, json, .. } => {
            let tables = Tables::new(clients, &settings)?;
            let report = crate::verify(&tables, settings.identifier_hash_secret.as_deref()).await?;
            if json {
                println!("{}", verify_json(&report)?);
            } else {
                println!("{}", render_verify(&report));
            }
            match unverified(&report) {
                None => Ok(()),
                Some(e) => Err(e),
            }
        }
        Command::Check { sample, .. } => {
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
            command: DlqCommand::List { queue, max, data },
        } => {
            let letters = crate::dlq_list(&clients.sqs, &queue, max).await?;
            if data {
                let tables = Tables::new(clients, &settings)?;
                println!("{}", render_letters_with_data(tables.keys.as_ref(), &letters).await?);
            } else {
                println!("{}", render_letters(&letters));
            }
            Ok(())
        }
        Command::Dlq {
            command: DlqCommand::Seal { queue, max },
        } => {
            let report = crate::dlq_seal(clients, &settings, &queue, max).await?;
            for (id, why) in &report.failed {
                println!("FAILED {id}: {why}");
            }
            println!("sealed {}, failed {}", report.redriven.len(), report.failed.len());
            if report.failed.is_empty() {
                Ok(())
            } else {
                Err(CliError::NotRedriven(report.failed.len()))
            }
        }
        Command::Dlq {
            command:
                DlqCommand::Redrive {
                    queue,
                    to,
                    to_queue,
                    max,
                },
        } => {
            let report = match (to, to_queue) {
                (_, Some(target)) => crate::dlq_redrive_to_queue(&clients.sqs, &queue, &target, max).await?,
                (Some(to), None) if to == RELAY_TARGET => {
                    crate::dlq_redrive_to_bus(clients, &settings, &queue, max).await?
                }
                (Some(to), None) if to == SCHEDULER_TARGET => {
                    crate::dlq_redrive_timers(clients, &settings, &queue, max).await?
                }
                (to, None) => {
                    let to = to.unwrap_or_default();
                    let tables = Tables::new(clients, &settings)?;
                    // Events parked again go to DEAD_LETTER_QUEUE_URL, or back to the queue redriven.
                    let park_in = settings.dead_letter_queue_url.clone().unwrap_or_else(|| queue.clone());
                    let url = queue_url(&clients.sqs, &park_in).await?;
                    let dead_letters = sealed_dead_letters(clients, &tables, url);
                    let groups = consumer_groups(&tables, dead_letters, settings.identifier_hash_secret.as_deref());
                    crate::dlq_redrive(&clients.sqs, &tables, groups, &queue, &to, max).await?
                }
            };
            println!("{}", render_redrive(&report));
            if report.failed.is_empty() {
                Ok(())
            } else {
                Err(CliError::NotRedriven(report.failed.len()))
            }
        }
        Command::Republish {
            from,
            to,
            segments,
            quiet,
        } => {
            let republished = crate::republish(clients, &settings, from, to, segments, !quiet).await?;
            println!("{}", render_republish(&republished));
            match republished.report.failed {
                0 => Ok(()),
                failed => Err(CliError::NotRepublished(failed)),
            }
        }
        Command::MigrateTimers { group } => {
            let report = crate::migrate::migrate_timers(clients, &group).await?;
            println!("{}", crate::migrate::render_timer_migration(&report));
            match report.failed.len() {
                0 => Ok(()),
                failed => Err(CliError::NotMigrated(failed)),
            }
        }
        Command::RewrapKeys => {
            let report = crate::migrate::rewrap_keys(clients, &settings).await?;
            println!("{}", crate::migrate::render_rewrap(&report));
            match report.failed.len() {
                0 => Ok(()),
                failed => Err(CliError::NotMigrated(failed)),
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
        assert!(matches!(
            cli.command,
            Command::Check {
                sample: 100,
                full: false,
                json: false
            }
        ));
    }

    #[test]
    fn check_full_takes_json_and_no_sample() {
        assert!(matches!(
            parse(&["check", "--full", "--json"]).map(|c| c.command),
            Ok(Command::Check {
                full: true,
                json: true,
                ..
            })
        ));
        assert!(
            parse(&["check", "--full", "--sample", "0"]).is_err(),
            "a sample or everything"
        );
        assert!(parse(&["check", "--json"]).is_err(), "JSON is the full check's");
    }

    #[test]
    fn dlq_redrive_needs_one_target() {
        assert!(parse(&["dlq", "redrive", "crm-projector-dlq"]).is_err());
        assert!(
            parse(&[
                "dlq",
                "redrive",
                "q",
                "--to",
                "projector",
                "--to-queue",
                "crm-projector"
            ])
            .is_err(),
            "a consumer group or a queue, not both"
        );
        match parse(&["dlq", "redrive", "crm-projector-dlq", "--to", "projector", "--max", "5"]) {
            Ok(Cli {
                command:
                    Command::Dlq {
                        command:
                            DlqCommand::Redrive {
                                queue,
                                to,
                                to_queue,
                                max,
                            },
                    },
                ..
            }) => assert_eq!(
                (queue.as_str(), to.as_deref(), to_queue, max),
                ("crm-projector-dlq", Some("projector"), None, 5)
            ),
            _ => panic!("dlq redrive did not parse"),
        }
        match parse(&["dlq", "redrive", "crm-channel-dlq", "--to-queue", "crm-channel"]) {
            Ok(Cli {
                command:
                    Command::Dlq {
                        command: DlqCommand::Redrive { to, to_queue, .. },
                    },
                ..
            }) => assert_eq!((to, to_queue.as_deref()), (None, Some("crm-channel"))),
            _ => panic!("dlq redrive --to-queue did not parse"),
        }
    }

    #[test]
    fn republish_takes_an_rfc3339_range() {
        assert!(parse(&["republish", "--from", "2026-12-01T10:00:00Z"]).is_err());
        assert!(parse(&["republish", "--from", "yesterday", "--to", "2026-12-01T10:00:00Z"]).is_err());
        match parse(&[
            "republish",
            "--from",
            "2026-12-01T10:00:00+01:00",
            "--to",
            "2026-12-01T12:00:00Z",
            "--segments",
            "8",
        ]) {
            Ok(Cli {
                command:
                    Command::Republish {
                        from,
                        to,
                        segments,
                        quiet,
                    },
                ..
            }) => {
                assert_eq!(from.to_rfc3339(), "2026-12-01T09:00:00+00:00");
                assert_eq!(to.to_rfc3339(), "2026-12-01T12:00:00+00:00");
                assert_eq!(segments, 8);
                assert!(!quiet);
            }
            _ => panic!("republish did not parse"),
        }
    }

    #[test]
    fn migrate_timers_needs_a_group_and_rewrap_keys_takes_the_settings() {
        // SCHEDULE_GROUP may be set in the environment: the flag wins.
        match parse(&["migrate-timers", "--group", "crm-prod"]) {
            Ok(Cli {
                command: Command::MigrateTimers { group },
                ..
            }) => assert_eq!(group, "crm-prod"),
            _ => panic!("migrate-timers did not parse"),
        }
        let cli = parse(&[
            "rewrap-keys",
            "--keys-table",
            "keys",
            "--data-keys-kms-key-id",
            "alias/k",
        ])
        .expect("parses");
        assert!(matches!(cli.command, Command::RewrapKeys));
        assert_eq!(cli.settings.keys_table().expect("keys"), "keys");
        assert!(parse(&["rewrap-keys", "extra"]).is_err());
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
