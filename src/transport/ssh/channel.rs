//! Session channels for remote commands: the one way every caller runs a command on the connection
//! (`imsg rpc`, the login-shell lookup, `cat` and upload fallbacks, doctor's probes). The channel is
//! opened, the exec sent with want_reply, and the server's answer awaited before anything is written
//! (a refused exec must not swallow a file on stdin); then stdin, stdout, stderr and the exit status
//! are streamed as they come, without copying the data. The same channel types also carry a command
//! a connection-sharing master runs for us (src/transport/control/), framed over its Unix socket.

use std::ops::Deref;

use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;

use super::{SshConnection, SshError};
use crate::transport::control::protocol::{self, ToClient, ToMaster};

/// The server's answer to a request sent with want_reply (exec, subsystem).
pub(super) enum Reply {
    Accepted,
    Refused,
    /// The channel closed before an answer came.
    Closed,
}

/// Wait for the answer to the last want_reply request; the answer arrives as Success/Failure on the
/// channel, and nothing else is expected before it.
pub(super) async fn wait_reply(channel: &mut Channel<Msg>) -> Reply {
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => return Reply::Accepted,
            Some(ChannelMsg::Failure) => return Reply::Refused,
            None => return Reply::Closed,
            Some(_) => {}
        }
    }
}

impl SshConnection {
    /// Run `command` on a new session channel. Returns once the server has accepted the exec, so
    /// nothing is ever written to a command that did not start.
    pub async fn exec(&self, command: &str) -> Result<ExecChannel, SshError> {
        let mut channel = self.handle.channel_open_session().await?;
        channel.exec(true, command).await?;
        match wait_reply(&mut channel).await {
            Reply::Accepted => {}
            Reply::Refused | Reply::Closed => {
                return Err(SshError::ExecRefused {
                    command: command.to_string(),
                });
            }
        }
        let (output, input) = channel.split();
        Ok(ExecChannel {
            output: ExecOutput(Output::Ssh(output)),
            input: ExecInput(Input::Ssh(input)),
        })
    }
}

/// A running remote command. Read it with [`ExecChannel::next`], feed its stdin with
/// [`ExecChannel::send`], or [`ExecChannel::split`] it to do both from different tasks.
#[derive(Debug)]
pub struct ExecChannel {
    output: ExecOutput,
    input: ExecInput,
}

impl ExecChannel {
    /// A command the master runs for us: frames on `socket` after the master's `ok` answer.
    /// `label` names the socket in errors.
    pub(crate) fn over_control(socket: tokio::net::UnixStream, label: String) -> ExecChannel {
        let (read, write) = socket.into_split();
        ExecChannel {
            output: ExecOutput(Output::Control {
                read,
                pending: Vec::new(),
            }),
            input: ExecInput(Input::Control {
                write: Mutex::new(write),
                label,
            }),
        }
    }

    /// What the command did next; None once the channel is closed.
    pub async fn next(&mut self) -> Option<ExecEvent> {
        self.output.next().await
    }

    /// Write everything `data` yields to the command's stdin.
    pub async fn send(&self, data: impl AsyncRead + Unpin) -> Result<(), SshError> {
        self.input.send(data).await
    }

    /// End of the command's stdin.
    pub async fn eof(&self) -> Result<(), SshError> {
        self.input.eof().await
    }

    /// Close the channel (the command's output is not wanted any more).
    pub async fn close(&self) -> Result<(), SshError> {
        self.input.close().await
    }

    /// The reading and the writing side, for separate tasks.
    pub fn split(self) -> (ExecOutput, ExecInput) {
        (self.output, self.input)
    }
}

/// The reading side of a remote command.
#[derive(Debug)]
pub struct ExecOutput(Output);

#[derive(Debug)]
enum Output {
    Ssh(ChannelReadHalf),
    /// The master's socket and the bytes read from it that do not make a whole frame yet (kept
    /// here so `next` stays cancel safe, as a channel's is).
    Control {
        read: OwnedReadHalf,
        pending: Vec<u8>,
    },
}

impl ExecOutput {
    /// What the command did next; None once the channel is closed. Window adjustments and other
    /// channel bookkeeping are skipped.
    pub async fn next(&mut self) -> Option<ExecEvent> {
        match &mut self.0 {
            Output::Ssh(read) => next_from_channel(read).await,
            Output::Control { read, pending } => next_from_control(read, pending).await,
        }
    }
}

async fn next_from_channel(read: &mut ChannelReadHalf) -> Option<ExecEvent> {
    loop {
        let message = read.wait().await?;
        let event = match message {
            ChannelMsg::Data { .. } => ExecEvent::Stdout(Chunk(Bytes::Channel(message))),
            // Extended data type 1 is stderr, the only type SSH defines.
            ChannelMsg::ExtendedData { ext: 1, .. } => ExecEvent::Stderr(Chunk(Bytes::Channel(message))),
            ChannelMsg::ExitStatus { exit_status } => ExecEvent::Exited(exit_status as i32),
            ChannelMsg::ExitSignal {
                signal_name,
                error_message,
                ..
            } => ExecEvent::Killed {
                number: signal_number(&signal_name),
                signal: format!("{signal_name:?}"),
                message: error_message,
            },
            ChannelMsg::Eof => ExecEvent::Eof,
            ChannelMsg::Close => return None,
            _ => continue,
        };
        return Some(event);
    }
}

/// The master's frames; the end of the socket is the channel's close. A frame we cannot read ends
/// the stream too (the master closes the channel when we go away). Cancel safe: bytes read stay in
/// `pending` until they make a whole frame.
async fn next_from_control(read: &mut OwnedReadHalf, pending: &mut Vec<u8>) -> Option<ExecEvent> {
    let (tag, payload) = loop {
        match protocol::take_frame(pending) {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(err) => {
                tracing::debug!("{err}");
                return None;
            }
        }
        match read.read_buf(pending).await {
            Ok(0) => return None,
            Ok(_) => {}
            Err(err) => {
                tracing::debug!("control socket: {err}");
                return None;
            }
        }
    };
    match ToClient::decode(tag, payload) {
        Ok(ToClient::Stdout(data)) => Some(ExecEvent::Stdout(Chunk(Bytes::Owned(data)))),
        Ok(ToClient::Stderr(data)) => Some(ExecEvent::Stderr(Chunk(Bytes::Owned(data)))),
        Ok(ToClient::Exited(code)) => Some(ExecEvent::Exited(code)),
        Ok(ToClient::Killed {
            number,
            signal,
            message,
        }) => Some(ExecEvent::Killed {
            signal,
            number,
            message,
        }),
        Ok(ToClient::Eof) => Some(ExecEvent::Eof),
        Err(err) => {
            tracing::debug!("{err}");
            None
        }
    }
}

/// The writing side of a remote command: its stdin, and the channel's close.
#[derive(Debug)]
pub struct ExecInput(Input);

#[derive(Debug)]
enum Input {
    Ssh(ChannelWriteHalf<Msg>),
    /// Frames to the master; the lock keeps one frame whole when several tasks write.
    Control {
        write: Mutex<OwnedWriteHalf>,
        label: String,
    },
}

/// Stdin is read and framed in pieces of this size.
const STDIN_PIECE: usize = 32 * 1024;

impl ExecInput {
    /// Write everything `data` yields to the command's stdin (waits for the window as needed).
    pub async fn send(&self, mut data: impl AsyncRead + Unpin) -> Result<(), SshError> {
        match &self.0 {
            Input::Ssh(write) => Ok(write.data(data).await?),
            Input::Control { label, .. } => {
                let mut buf = vec![0u8; STDIN_PIECE];
                loop {
                    let n = data.read(&mut buf).await.map_err(|e| control_error(label, e))?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.write_frame(ToMaster::Stdin(buf[..n].to_vec())).await?;
                }
            }
        }
    }

    /// End of the command's stdin.
    pub async fn eof(&self) -> Result<(), SshError> {
        match &self.0 {
            Input::Ssh(write) => Ok(write.eof().await?),
            Input::Control { .. } => self.write_frame(ToMaster::StdinEof).await,
        }
    }

    /// Close the channel.
    pub async fn close(&self) -> Result<(), SshError> {
        match &self.0 {
            Input::Ssh(write) => Ok(write.close().await?),
            Input::Control { .. } => self.write_frame(ToMaster::Close).await,
        }
    }

    async fn write_frame(&self, frame: ToMaster) -> Result<(), SshError> {
        let Input::Control { write, label } = &self.0 else {
            return Ok(());
        };
        let mut write = write.lock().await;
        write
            .write_all(&frame.encode())
            .await
            .map_err(|e| control_error(label, e))
    }
}

fn control_error(label: &str, source: std::io::Error) -> SshError {
    SshError::ControlSocket {
        socket: label.to_string(),
        source,
    }
}

/// One thing a remote command did.
#[derive(Debug)]
pub enum ExecEvent {
    Stdout(Chunk),
    Stderr(Chunk),
    /// Its exit status.
    Exited(i32),
    /// Killed by a signal: its name as the server sent it, its number (0 when not a standard one),
    /// and the server's message.
    Killed {
        signal: String,
        number: i32,
        message: String,
    },
    /// It will write nothing more.
    Eof,
}

/// Bytes a remote command wrote, as they arrived on the channel (not copied), or as the master's
/// frame carried them.
#[derive(Debug)]
pub struct Chunk(Bytes);

#[derive(Debug)]
enum Bytes {
    Channel(ChannelMsg),
    Owned(Vec<u8>),
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Channel(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                data.as_ref()
            }
            // Only data messages are ever wrapped (see `next_from_channel`).
            Bytes::Channel(_) => &[],
            Bytes::Owned(data) => data,
        }
    }
}

fn signal_number(name: &Sig) -> i32 {
    match name {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_reads_as_the_bytes_that_arrived_without_copying_them() {
        let bytes = b"hello from the mac".to_vec();
        let start = bytes.as_ptr();
        let chunk = Chunk(Bytes::Channel(ChannelMsg::Data { data: bytes.into() }));
        assert_eq!(&*chunk, b"hello from the mac");
        assert_eq!(chunk.as_ptr(), start, "the chunk is the buffer that arrived");
        let stderr = Chunk(Bytes::Channel(ChannelMsg::ExtendedData {
            data: b"oops".to_vec().into(),
            ext: 1,
        }));
        assert_eq!(&*stderr, b"oops");
        assert_eq!(&*Chunk(Bytes::Owned(b"framed".to_vec())), b"framed");
    }

    #[test]
    fn numbers_the_standard_signals_and_zero_for_the_rest() {
        assert_eq!(signal_number(&Sig::TERM), 15);
        assert_eq!(signal_number(&Sig::KILL), 9);
        assert_eq!(signal_number(&Sig::Custom("USR1".into())), 0);
    }
}
