//! `imsg-bridge run`: every enabled account (or `--account`) until SIGINT/SIGTERM. The fleet itself
//! is `gateway::fleet`; this file holds the signals (docs/agents.md, "Signals") and the exit codes.

use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Config;
use crate::gateway::fleet::{self, FleetEnd, FleetError, FleetOptions, ReloadHook};

/// How long in-flight work may take to finish after SIGINT/SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(config: &Config, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::install();
    let cancel = CancellationToken::new();
    let reload = ReloadHook::default();
    let options = FleetOptions {
        only: only.map(str::to_string),
        reload: reload.clone(),
        ..FleetOptions::default()
    };
    let fleet = fleet::run(config, options, cancel.clone());
    tokio::pin!(fleet);
    let end = loop {
        tokio::select! {
            end = &mut fleet => break end,
            signal = signals.next() => match signal {
                Caught::Hangup => reload.request(),
                Caught::Stop(name) => {
                    info!("{name}: finishing the current message, then stopping");
                    cancel.cancel();
                    break drain(fleet.as_mut(), &mut signals).await;
                }
            },
        }
    };
    exit_code(end)
}

/// Wait for the fleet to stop. A second signal, or work that does not drain in time, ends the
/// process at once; cursors are only ever written after delivery, so nothing accepted is lost.
async fn drain(
    fleet: std::pin::Pin<&mut impl Future<Output = Result<FleetEnd, FleetError>>>,
    signals: &mut Signals,
) -> Result<FleetEnd, FleetError> {
    tokio::select! {
        end = fleet => return end,
        _ = signals.next_stop() => error!("second signal: exiting now"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            error!("still busy {} s after the signal: exiting now", DRAIN_TIMEOUT.as_secs());
        }
    }
    std::process::exit(1);
}

fn exit_code(end: Result<FleetEnd, FleetError>) -> anyhow::Result<ExitCode> {
    let end = end?;
    if end.failed.is_empty() {
        info!("stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

/// A signal `run` acts on.
enum Caught {
    /// SIGHUP: re-read the config.
    Hangup,
    /// SIGTERM or SIGINT, by name.
    Stop(&'static str),
}

/// The handlers of SIGTERM and SIGINT (both or neither) and of SIGHUP.
struct Signals {
    stop: Option<(Signal, Signal)>,
    hangup: Option<Signal>,
}

impl Signals {
    fn install() -> Self {
        let stop = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => {
                error!("cannot install signal handlers; stop with SIGKILL");
                None
            }
        };
        Self {
            stop,
            hangup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// The next signal; never, for signals without a handler.
    async fn next(&mut self) -> Caught {
        let Self { stop, hangup } = self;
        let hangup = async {
            match hangup.as_mut() {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        let stop = async {
            match stop.as_mut() {
                Some((term, int)) => stop_signal(term, int).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hangup => Caught::Hangup,
            name = stop => Caught::Stop(name),
        }
    }

    /// The next SIGTERM or SIGINT; never without their handlers.
    async fn next_stop(&mut self) -> &'static str {
        match self.stop.as_mut() {
            Some((term, int)) => stop_signal(term, int).await,
            None => std::future::pending().await,
        }
    }
}

async fn stop_signal(term: &mut Signal, int: &mut Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
