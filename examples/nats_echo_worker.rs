//! An example worker for imsg-bridge's NATS sink (docs/scale-out.md): answers every envelope with `echo: <text>`.
//!
//! Run as many copies as you like; they share one durable pull consumer, so JetStream hands each envelope to
//! exactly one of them:
//!
//! ```text
//! NATS_URL=nats://127.0.0.1:4222 cargo run --example nats_echo_worker -- --prefix imsg --stream IMSG
//! ```
//!
//! Flags: `--prefix` (subject prefix, default `imsg`), `--stream` (envelope stream, default `IMSG`), `--durable`
//! (shared consumer name, default `echo-workers`), `--token-env NAME` (read the NATS token from $NAME),
//! `--creds FILE` (a NATS `.creds` file). Replace `answer` with your agent.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind, Message};
use clap::Parser;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(about = "Answer imsg-bridge envelopes from NATS JetStream with 'echo: <text>'")]
struct Args {
    /// Subject prefix the bridge publishes under (`<prefix>.in.<account>`, replies `<prefix>.out.<account>`).
    #[arg(long, default_value = "imsg")]
    prefix: String,
    /// The stream that holds the envelopes.
    #[arg(long, default_value = "IMSG")]
    stream: String,
    /// The durable consumer every copy of this worker shares.
    #[arg(long, default_value = "echo-workers")]
    durable: String,
    /// Name of the environment variable holding the NATS token (the token itself never goes on the command line).
    #[arg(long)]
    token_env: Option<String>,
    /// A NATS credentials (.creds) file.
    #[arg(long)]
    creds: Option<PathBuf>,
}

/// The fields of the bridge's envelope this worker needs; the rest (rowid, sender, ...) is ignored.
#[derive(Deserialize)]
struct Envelope {
    id: String,
    to: String,
    text: String,
    /// The bridge account the message came in on; one worker pool can serve several.
    account: String,
}

/// What the bridge expects on `<prefix>.out.<account>`: the envelope answered, where, and what to say.
#[derive(Serialize)]
struct Reply<'a> {
    envelope_id: &'a str,
    to: &'a str,
    text: String,
}

/// How long JetStream waits for our ack before it hands the envelope to another worker.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a failed reply waits before JetStream delivers the envelope again (to any worker).
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string());
    let client = connect(&args, &url).await?;
    let js = jetstream::new(client);
    eprintln!(
        "nats_echo_worker: {}, stream {}, consumer {}, replying on {}.out.*",
        without_userinfo(&url),
        args.stream,
        args.durable,
        args.prefix
    );
    let mut answered: u64 = 0;
    // async-nats rides out reconnects; the message stream still ends if the consumer or stream is deleted
    // (say, recreated by an operator): bind again and go on.
    loop {
        let consumer = bind(&js, &args).await;
        if let Err(err) = serve(&js, &consumer, &args.prefix, &mut answered).await {
            eprintln!("nats_echo_worker: {err:#}; binding again in 1 s");
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }
}

/// Connect with the token or creds asked for. async-nats reconnects by itself after this, forever.
async fn connect(args: &Args, url: &str) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .name("nats_echo_worker")
        .retry_on_initial_connect()
        .max_reconnects(None);
    if let Some(name) = &args.token_env {
        let token = std::env::var(name).with_context(|| format!("--token-env: ${name} is not set"))?;
        options = options.token(token);
    }
    if let Some(path) = &args.creds {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("--creds {}", path.display()))?;
    }
    Ok(options.connect(url).await?)
}

/// Bind the shared durable consumer, creating it if missing. The bridge creates the streams, so a worker
/// started first waits for them (saying so once) instead of failing.
async fn bind(js: &jetstream::Context, args: &Args) -> PullConsumer {
    let mut said = false;
    loop {
        match try_bind(js, args).await {
            Ok(consumer) => return consumer,
            Err(err) => {
                if !said {
                    eprintln!("nats_echo_worker: waiting for the streams ({err:#}); retrying every second");
                    said = true;
                }
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

async fn try_bind(js: &jetstream::Context, args: &Args) -> anyhow::Result<PullConsumer> {
    let stream = js.get_stream(&args.stream).await.context("envelope stream")?;
    // Replies need a stream too, or every publish would fail: wait until one captures `<prefix>.out.*`.
    js.stream_by_subject(format!("{}.out.probe", args.prefix))
        .await
        .context("reply stream")?;
    let config = pull::Config {
        durable_name: Some(args.durable.clone()),
        filter_subject: format!("{}.in.>", args.prefix),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    Ok(stream.get_or_create_consumer(&args.durable, config).await?)
}

/// Answer messages until the consumer's message stream ends or fails.
async fn serve(
    js: &jetstream::Context,
    consumer: &PullConsumer,
    prefix: &str,
    answered: &mut u64,
) -> anyhow::Result<()> {
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        if handle(js, &message, prefix).await {
            *answered += 1;
            if answered.is_multiple_of(100) {
                eprintln!("nats_echo_worker: {answered} envelopes answered");
            }
        }
    }
    anyhow::bail!("the consumer's message stream ended")
}

/// Answer one envelope. Ack only after the reply is stored (PubAck), so a crash in between means the
/// envelope is delivered again rather than lost; the reply's Nats-Msg-Id makes that second reply a duplicate
/// JetStream drops. Returns whether a reply was stored.
async fn handle(js: &jetstream::Context, message: &Message, prefix: &str) -> bool {
    // The reply subject copies the account token from the inbound subject as the bridge wrote it:
    // escaping `envelope.account` again here could produce a different token.
    let token = message.subject.as_str().strip_prefix(&format!("{prefix}.in."));
    let (Some(token), Ok(envelope)) = (token, serde_json::from_slice::<Envelope>(&message.payload)) else {
        eprintln!(
            "nats_echo_worker: not an envelope on {}; dropping it",
            message.subject
        );
        // Term: redelivering a payload we cannot read would fail the same way forever.
        let _ = message.ack_with(AckKind::Term).await;
        return false;
    };
    let reply = Reply {
        envelope_id: &envelope.id,
        to: &envelope.to,
        text: answer(&envelope.text),
    };
    match publish(js, &format!("{prefix}.out.{token}"), &envelope.id, &reply).await {
        Ok(()) => {
            let _ = message.ack().await;
            true
        }
        Err(err) => {
            eprintln!(
                "nats_echo_worker: reply to {} (account {}) not stored ({err:#}); retrying",
                envelope.id, envelope.account
            );
            let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
            false
        }
    }
}

/// The URL without `user:password@`, so the start line never shows a secret.
fn without_userinfo(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        _ => url.to_string(),
    }
}

/// Your agent goes here.
fn answer(text: &str) -> String {
    format!("echo: {text}")
}

/// Publish a reply and wait until JetStream has stored it.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    envelope_id: &str,
    reply: &Reply<'_>,
) -> anyhow::Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("reply:{envelope_id}").as_str());
    let payload = serde_json::to_vec(reply)?;
    js.publish_with_headers(subject.to_string(), headers, payload.into())
        .await?
        .await?;
    Ok(())
}
