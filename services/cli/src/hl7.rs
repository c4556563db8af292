//! `baton hl7`: tools for integration engineers connecting an HL7 v2 feed.
//! `map` shows what messages would become without publishing anything;
//! `send` sends them over MLLP and shows each acknowledgement, and with
//! `--then-get` the care state of each patient, read with the consistency
//! token the acknowledgements carried.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use baton_hl7::{AckCode, Header, MapConfig, Message, ReadAck, Zone};
use baton_ingest::mllp::MllpClient;
use baton_log::ConsistencyToken;
use baton_proto::events::v1::CareEvent;
use baton_proto::query::v1::GetCareStateRequest;
use clap::{Args, Subcommand};

use crate::read::{QueryAddress, connect, patient_ref};
use crate::render;

/// HL7 v2: see what messages map to, and send them over MLLP.
#[derive(Debug, Subcommand)]
pub(crate) enum Hl7Command {
    /// Print the care events each message maps to, or why it is refused,
    /// without publishing anything.
    ///
    /// A file may hold several messages, one after another. Each event is
    /// printed as one line of JSON (the protobuf JSON mapping of
    /// baton.events.v1.CareEvent, as `baton publish` reads it). Exits 1
    /// when any message is refused.
    Map(MapArgs),
    /// Send messages over MLLP, one at a time, and print each
    /// acknowledgement.
    ///
    /// Baton's AA carries the consistency token of the message's events
    /// (segment ZBT); `send` prints it, and the token of them all at the
    /// end. With --then-get it then reads each patient's care state from
    /// the query API with that token, so what it shows includes every
    /// message sent. Exits 1 when any message is not acknowledged AA.
    ///
    /// With --ca it speaks MLLP over TLS, checking the listener's
    /// certificate against the host of --to, and with --cert and --key
    /// presents a client certificate (a listener with client_ca requires
    /// one); --then-get reads over TLS with the same options.
    Send(SendArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MapArgs {
    /// Files of HL7 v2 messages
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// IANA time zone of timestamps sent without an offset
    #[arg(long, default_value = Zone::DEFAULT)]
    time_zone: String,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Files of HL7 v2 messages
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Address (HOST:PORT) of the MLLP listener
    #[arg(long, env = "BATON_MLLP", default_value = "127.0.0.1:2575")]
    to: String,
    /// How long to wait for each acknowledgement
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Then show the care state of each patient of the messages accepted,
    /// read with their consistency token (--query names the query API)
    #[arg(long)]
    then_get: bool,
    #[command(flatten)]
    query: QueryAddress,
}

pub(crate) async fn hl7(command: Hl7Command) -> anyhow::Result<()> {
    match command {
        Hl7Command::Map(args) => map(args),
        Hl7Command::Send(args) => send(args).await,
    }
}

/// Every message of every file, named `file` or `file#n` when it holds
/// several.
fn messages(files: &[PathBuf]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut all = Vec::new();
    for file in files {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let messages = baton_hl7::split_messages(&bytes);
        if messages.is_empty() {
            anyhow::bail!(
                "{} holds no HL7 message (no segment starts with MSH)",
                file.display()
            );
        }
        let several = messages.len() > 1;
        for (n, message) in messages.into_iter().enumerate() {
            all.push((name(file, several.then_some(n + 1)), message));
        }
    }
    Ok(all)
}

fn name(file: &Path, number: Option<usize>) -> String {
    match number {
        Some(n) => format!("{}#{n}", file.display()),
        None => file.display().to_string(),
    }
}

#[allow(clippy::print_stdout)]
fn map(args: MapArgs) -> anyhow::Result<()> {
    let zone = Zone::named(&args.time_zone).context("--time-zone")?;
    let config = MapConfig { zone };
    let mut refused = 0;
    let messages = messages(&args.files)?;
    for (name, bytes) in &messages {
        let message = match Message::parse(bytes) {
            Ok(message) => message,
            Err(error) => {
                println!("{name}: refused (AR): {error}");
                refused += 1;
                continue;
            }
        };
        let header = Header::read(&message);
        let title = format!("{name}: {} {}", header.kind(), header.control_id);
        let mapped = match baton_hl7::map(&message, &config) {
            Ok(mapped) => mapped,
            Err(refusal) => {
                println!("{title}: {refusal}");
                refused += 1;
                continue;
            }
        };
        if let Err(problems) = mapped.check() {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            println!("{title}: refused (AE): {}", problems.join("; "));
            refused += 1;
            continue;
        }
        let count = mapped.len();
        println!(
            "{title}: {count} event{}",
            if count == 1 { "" } else { "s" }
        );
        for event in mapped.events() {
            println!("  {}", json(event)?);
        }
        for warning in &mapped.warnings {
            println!("  {warning}");
        }
    }
    if refused > 0 {
        anyhow::bail!("{refused} of {} messages refused", messages.len());
    }
    Ok(())
}

async fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .with_context(|| format!("--to {address:?}: expected HOST:PORT, e.g. 127.0.0.1:2575"))
}

/// The name the listener's certificate is checked against: the host of
/// `--to` (`localhost`, `mllp.trust.nhs.uk`, `127.0.0.1`, `[::1]`).
fn server_name(to: &str) -> &str {
    let host = to
        .trim()
        .rsplit_once(':')
        .map_or(to.trim(), |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn json(event: &CareEvent) -> anyhow::Result<String> {
    let value = baton_proto::json::to_json_value(event).context("printing an event as JSON")?;
    Ok(serde_json::to_string(&value)?)
}

#[allow(clippy::print_stdout)]
async fn send(args: SendArgs) -> anyhow::Result<()> {
    let messages = messages(&args.files)?;
    let address = resolve(&args.to).await?;
    let connected = match crate::endpoint::client_tls()? {
        Some(config) => MllpClient::connect_tls(address, server_name(&args.to), config).await,
        None => MllpClient::connect(address).await,
    };
    let mut client = connected.with_context(|| {
        format!(
            "cannot reach the MLLP listener at {}: is `baton up` running{}?",
            args.to,
            if crate::endpoint::tls_on() {
                " with TLS, and does --ca trust its certificate (and its client_ca yours)"
            } else {
                ""
            }
        )
    })?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut not_accepted = 0;
    let mut token = ConsistencyToken::empty();
    let mut patients: Vec<String> = Vec::new();
    for (name, bytes) in &messages {
        let ack = tokio::time::timeout(timeout, client.send(bytes))
            .await
            .with_context(|| format!("{name}: no acknowledgement within {timeout:?}"))?
            .with_context(|| format!("{name}: sending to {}", args.to))?;
        let ack =
            ReadAck::parse(&ack).with_context(|| format!("{name}: the answer is not an ACK"))?;
        match &ack.consistency_token {
            Some(written) => {
                println!(
                    "{name}: {} {}  (consistency token {written})",
                    ack.code.as_str(),
                    ack.control_id
                );
                if let Ok(written) = written.parse::<ConsistencyToken>() {
                    token.merge(&written);
                }
            }
            None => println!("{name}: {} {}", ack.code.as_str(), ack.control_id),
        }
        for problem in &ack.problems {
            println!("  {problem}");
        }
        if ack.code == AckCode::Accept {
            for patient in patients_of(bytes) {
                if !patients.contains(&patient) {
                    patients.push(patient);
                }
            }
        } else {
            not_accepted += 1;
        }
    }
    if !token.is_empty() {
        println!("consistency token: {token}");
        if !args.then_get {
            println!(
                "(pass it to `baton state get <patient> --consistency-token {token}` to read your writes, or send with --then-get)"
            );
        }
    }
    if args.then_get && !patients.is_empty() {
        let mut query = connect(&args.query).await?;
        for patient in &patients {
            let state = query
                .get_care_state(GetCareStateRequest {
                    patient: Some(patient_ref(patient)),
                    consistency_token: token.to_string(),
                })
                .await
                .map_err(|status| anyhow::anyhow!("reading {patient}: {}", status.message()))?
                .into_inner()
                .state
                .unwrap_or_default();
            println!();
            print!("{}", render::care_state(&state));
        }
    }
    if not_accepted > 0 {
        anyhow::bail!("{not_accepted} of {} messages not accepted", messages.len());
    }
    Ok(())
}

/// The patients a message's events are about (their patient keys), as
/// Baton maps it; none for one that does not map.
fn patients_of(bytes: &[u8]) -> Vec<String> {
    let Ok(message) = Message::parse(bytes) else {
        return Vec::new();
    };
    let Ok(mapped) = baton_hl7::map(&message, &MapConfig::default()) else {
        return Vec::new();
    };
    mapped
        .events()
        .filter_map(|event| baton_care::ValidEvent::new(event.clone()).ok())
        .map(|event| event.key().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_checked_against_the_host_of_to() {
        assert_eq!(server_name("localhost:2575"), "localhost");
        assert_eq!(server_name(" mllp.trust.nhs.uk:2575 "), "mllp.trust.nhs.uk");
        assert_eq!(server_name("127.0.0.1:2575"), "127.0.0.1");
        assert_eq!(server_name("[::1]:2575"), "::1");
    }
}
