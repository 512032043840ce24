//! The master's warm `imsg rpc`s (op `rpc`): one per command line, shared by every client that asks
//! for it, so a short-lived drop-in child pays for neither an SSH handshake nor imsg's start
//! (docs/ssh.md, "Connection sharing"). Lines are routed by `rpc::mux`; each client sees its own
//! stream as if it ran imsg alone, and its stdin's end ends only its own stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::protocol::{self, ToClient, ToMaster};
use crate::rpc::mux::{ClientId, Mux, Route};
use crate::rpc::{MAX_LINE_BYTES, Splitter};
use crate::transport::ssh::{ExecChannel, ExecEvent, ExecInput, SshError};
use crate::util::escape::escape_controls;

/// Frames queued for one client; a client this far behind is dropped (its proxy resumes).
const CLIENT_FRAMES: usize = 4096;
/// Events from the clients of one shared imsg.
const EVENTS: usize = 1024;
/// Lines queued for imsg's stdin.
const TO_IMSG: usize = 256;

/// What a client connection tells its shared imsg.
enum Event {
    Join {
        client: ClientId,
        out: mpsc::Sender<ToClient>,
    },
    Line {
        client: ClientId,
        line: Vec<u8>,
    },
    StdinEnded {
        client: ClientId,
    },
    Gone {
        client: ClientId,
    },
}

/// The warm `imsg rpc`s of one master.
pub struct SharedRpcs {
    running: Mutex<HashMap<String, mpsc::Sender<Event>>>,
    next_client: AtomicU64,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl SharedRpcs {
    pub fn new(tracker: TaskTracker, cancel: CancellationToken) -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(0),
            tracker,
            cancel,
        }
    }

    /// The shared imsg for `command`: the running one, or a new one on the channel `start` opens
    /// (one at a time, so two clients never start two).
    pub async fn join<F>(&self, command: &str, start: F) -> Result<Joined, SshError>
    where
        F: Future<Output = Result<ExecChannel, SshError>>,
    {
        let mut running = self.running.lock().await;
        if let Some(events) = running.get(command).filter(|tx| !tx.is_closed()) {
            return Ok(Joined(events.clone()));
        }
        let channel = start.await?;
        let (tx, rx) = mpsc::channel(EVENTS);
        self.tracker
            .spawn(run(channel, rx, self.tracker.clone(), self.cancel.clone()));
        running.insert(command.to_string(), tx.clone());
        Ok(Joined(tx))
    }

    /// No client joins any more: each shared imsg ends after its last client (the master stops).
    pub async fn close(&self) {
        self.running.lock().await.clear();
    }

    /// Serve one client on a joined shared imsg until either side ends.
    pub async fn serve(&self, joined: Joined, stream: UnixStream) {
        let events = joined.0;
        let client = self.next_client.fetch_add(1, Ordering::Relaxed) + 1;
        let (out, frames) = mpsc::channel(CLIENT_FRAMES);
        if events.send(Event::Join { client, out }).await.is_err() {
            return;
        }
        let (read, write) = stream.into_split();
        tokio::join!(write_frames(frames, write), read_lines(client, read, events));
    }
}

/// A shared imsg a client may be served on.
pub struct Joined(mpsc::Sender<Event>);

/// The client's frames to its socket; the socket ends when the shared imsg drops the queue.
async fn write_frames(mut frames: mpsc::Receiver<ToClient>, mut write: tokio::net::unix::OwnedWriteHalf) {
    while let Some(frame) = frames.recv().await {
        if write.write_all(&frame.encode()).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// The client's stdin, as whole lines, to the shared imsg.
async fn read_lines(client: ClientId, read: tokio::net::unix::OwnedReadHalf, events: mpsc::Sender<Event>) {
    let mut read = BufReader::new(read);
    let mut splitter = Splitter::new(MAX_LINE_BYTES);
    loop {
        let frame = protocol::read_frame(&mut read).await;
        match frame.map(|f| f.map(|(tag, payload)| ToMaster::decode(tag, payload))) {
            Ok(Some(Ok(ToMaster::Stdin(data)))) => {
                for line in splitter.push(&data) {
                    if events.send(Event::Line { client, line }).await.is_err() {
                        return;
                    }
                }
            }
            Ok(Some(Ok(ToMaster::StdinEof))) => {
                let _ = events.send(Event::StdinEnded { client }).await;
                return;
            }
            Ok(None) | Ok(Some(Ok(ToMaster::Close))) | Ok(Some(Err(_))) | Err(_) => {
                let _ = events.send(Event::Gone { client }).await;
                return;
            }
        }
    }
}

/// A client of the shared imsg.
struct Client {
    out: mpsc::Sender<ToClient>,
    stdin_ended: bool,
}

/// The shared imsg: route its lines, feed it the clients' requests, end each client's stream when
/// it is done, and every client's when imsg ends.
async fn run(
    channel: ExecChannel,
    mut events: mpsc::Receiver<Event>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let (mut output, input) = channel.split();
    let (to_imsg, lines) = mpsc::channel(TO_IMSG);
    let done = cancel.child_token();
    tracker.spawn(feed(input, lines, done.clone()));
    let mut shared = Shared::default();
    let mut splitter = Splitter::new(MAX_LINE_BYTES);
    let mut end = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            event = output.next() => match event {
                Some(ExecEvent::Stdout(data)) => {
                    for line in splitter.push(&data) {
                        let routes = shared.mux.from_imsg(&line);
                        shared.deliver(routes, &to_imsg).await;
                    }
                    shared.finish_done(&to_imsg).await;
                }
                Some(ExecEvent::Stderr(data)) => {
                    debug!(stderr = %escape_controls(&String::from_utf8_lossy(&data)), "shared imsg");
                    shared.broadcast(ToClient::Stderr(data.to_vec()));
                }
                Some(ExecEvent::Exited(code)) => end = Some(ToClient::Exited(code)),
                Some(ExecEvent::Killed { number, signal, message }) => end = Some(ToClient::Killed { number, signal, message }),
                Some(ExecEvent::Eof) => {}
                None => break,
            },
            event = events.recv() => match event {
                Some(event) => shared.on_event(event, &to_imsg).await,
                None => break,
            },
        }
    }
    if let Some(end) = end {
        warn!("the shared imsg rpc ended; its clients reconnect");
        shared.broadcast(end);
    }
    done.cancel();
}

/// imsg's stdin, until the shared imsg ends (a write stuck on a frozen link ends with it).
async fn feed(input: ExecInput, mut lines: mpsc::Receiver<Vec<u8>>, done: CancellationToken) {
    loop {
        let line = tokio::select! {
            () = done.cancelled() => return,
            line = lines.recv() => line,
        };
        let Some(line) = line else { return };
        let written = tokio::select! {
            () = done.cancelled() => return,
            written = input.send(&line[..]) => written,
        };
        if written.is_err() {
            return;
        }
    }
}

#[derive(Default)]
struct Shared {
    mux: Mux,
    clients: HashMap<ClientId, Client>,
}

impl Shared {
    async fn on_event(&mut self, event: Event, to_imsg: &mpsc::Sender<Vec<u8>>) {
        match event {
            Event::Join { client, out } => {
                self.clients.insert(
                    client,
                    Client {
                        out,
                        stdin_ended: false,
                    },
                );
            }
            Event::Line { client, line } => {
                let _ = to_imsg.send(self.mux.from_client(client, &line)).await;
            }
            Event::StdinEnded { client } => {
                if let Some(state) = self.clients.get_mut(&client) {
                    state.stdin_ended = true;
                }
                self.finish_done(to_imsg).await;
            }
            Event::Gone { client } => self.drop_client(client, to_imsg).await,
        }
    }

    async fn deliver(&mut self, routes: Vec<Route>, to_imsg: &mpsc::Sender<Vec<u8>>) {
        for route in routes {
            match route {
                Route::To(client, line) => {
                    let sent = self
                        .clients
                        .get(&client)
                        .map(|c| c.out.try_send(ToClient::Stdout(line)));
                    if let Some(Err(_)) = sent {
                        debug!(
                            client,
                            "a client of the shared imsg fell behind or left; dropping it"
                        );
                        self.drop_client(client, to_imsg).await;
                    }
                }
                Route::All(line) => self.broadcast(ToClient::Stdout(line)),
            }
        }
    }

    fn broadcast(&self, frame: ToClient) {
        for client in self.clients.values() {
            let _ = client.out.try_send(frame.clone());
        }
    }

    /// A client whose stdin ended and whose requests are all answered is done: imsg would exit.
    async fn finish_done(&mut self, to_imsg: &mpsc::Sender<Vec<u8>>) {
        let done: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(id, c)| c.stdin_ended && self.mux.pending_of(**id) == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(client) = self.clients.remove(&id) {
                let _ = client.out.try_send(ToClient::Exited(0));
            }
            for line in self.mux.client_gone(id) {
                let _ = to_imsg.send(line).await;
            }
        }
    }

    async fn drop_client(&mut self, client: ClientId, to_imsg: &mpsc::Sender<Vec<u8>>) {
        self.clients.remove(&client);
        for line in self.mux.client_gone(client) {
            let _ = to_imsg.send(line).await;
        }
    }
}
