//! The control socket's wire format (docs/ssh.md, "Connection sharing"): one JSON header line from
//! the client, one JSON answer line from the master, then either raw SFTP bytes or exec frames
//! `[tag u8][len u32 BE][bytes]`. Pure encoding and decoding, so both ends and the tests share it.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol version in every header; a master refuses any other.
pub const VERSION: u32 = 1;
/// Longest header or answer line: a remote command line fits easily; anything longer is not ours.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest frame payload either side accepts (SSH data packets are far smaller).
pub const MAX_FRAME: usize = 1024 * 1024;

/// What a client asks of the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// Only "is the SSH connection up (connect it if not)": no stream follows.
    Connect,
    /// Run a command on a new session channel; exec frames follow.
    Exec { command: String },
    /// Start the `sftp` subsystem on a new channel; raw SFTP bytes follow.
    Sftp,
    /// Join the master's warm `imsg rpc` for this command line (started when none runs); exec
    /// frames follow, carrying this client's JSON-RPC lines only.
    Rpc { command: String },
}

/// The master's answer to a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    /// The one-line error a direct connection would have shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What failed, so the client can keep its callers' fallbacks (a refused sftp subsystem reads
    /// files with `cat` instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
}

/// Which step an `ok: false` answer failed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// The SSH connection could not be made (unreachable, host key, authentication).
    Connect,
    /// The server refused the exec or the subsystem.
    Refused,
    /// Anything else: the request was malformed, a channel could not be opened.
    Other,
}

impl Answer {
    pub fn ok() -> Answer {
        Answer {
            ok: true,
            error: None,
            kind: None,
        }
    }

    pub fn failed(kind: FailureKind, error: impl std::fmt::Display) -> Answer {
        // One line: the client prints it as it is.
        let text = error.to_string().replace(['\r', '\n'], " ");
        Answer {
            ok: false,
            error: Some(text),
            kind: Some(kind),
        }
    }
}

/// A JSON value and its newline, as one line on the socket.
pub fn line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail; an empty object would be refused by the peer.
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    bytes
}

/// Read one line byte by byte, so nothing after it is consumed (raw SFTP bytes or frames follow).
/// None when the stream ends before any byte.
pub async fn read_line(reader: &mut (impl AsyncRead + Unpin)) -> Result<Option<String>, FrameError> {
    let mut bytes = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        if reader.read(&mut byte).await? == 0 {
            if bytes.is_empty() {
                return Ok(None);
            }
            return Err(FrameError::Truncated);
        }
        if byte[0] == b'\n' {
            break;
        }
        bytes.push(byte[0]);
        if bytes.len() > MAX_LINE {
            return Err(FrameError::TooLong { len: bytes.len() });
        }
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| FrameError::Malformed("the line is not UTF-8".into()))
}

/// Why a line or frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("control socket: the stream ended inside a frame")]
    Truncated,
    #[error("control socket: a frame of {len} bytes exceeds the limit")]
    TooLong { len: usize },
    #[error("control socket: unknown frame tag {0}")]
    UnknownTag(u8),
    #[error("control socket: {0}")]
    Malformed(String),
}

const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const EXIT: u8 = 3;
const SIGNAL: u8 = 4;
const EOF: u8 = 5;
const STDIN: u8 = 0x11;
const STDIN_EOF: u8 = 0x12;
const CLOSE: u8 = 0x13;

/// What the master tells a client about its remote command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToClient {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exited(i32),
    /// Killed by a signal: payload `[number i32 BE][name length u16 BE][name][message]`.
    Killed {
        number: i32,
        signal: String,
        message: String,
    },
    Eof,
}

/// What a client tells the master about its remote command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMaster {
    Stdin(Vec<u8>),
    StdinEof,
    Close,
}

/// `[tag][len u32 BE][payload]`.
pub fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(5 + payload.len());
    bytes.push(tag);
    // Payloads are bounded by MAX_FRAME (callers split larger data), far below u32::MAX.
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

impl ToClient {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToClient::Stdout(data) => frame(STDOUT, data),
            ToClient::Stderr(data) => frame(STDERR, data),
            ToClient::Exited(code) => frame(EXIT, &code.to_be_bytes()),
            ToClient::Killed {
                number,
                signal,
                message,
            } => {
                let name = &signal.as_bytes()[..signal.len().min(u16::MAX as usize)];
                let mut payload = number.to_be_bytes().to_vec();
                payload.extend_from_slice(&(name.len() as u16).to_be_bytes());
                payload.extend_from_slice(name);
                payload.extend_from_slice(message.as_bytes());
                frame(SIGNAL, &payload)
            }
            ToClient::Eof => frame(EOF, &[]),
        }
    }

    pub fn decode(tag: u8, payload: Vec<u8>) -> Result<ToClient, FrameError> {
        Ok(match tag {
            STDOUT => ToClient::Stdout(payload),
            STDERR => ToClient::Stderr(payload),
            EXIT => ToClient::Exited(i32::from_be_bytes(fixed(&payload)?)),
            SIGNAL => {
                let number = i32::from_be_bytes(fixed(payload.get(..4).unwrap_or_default())?);
                let len = u16::from_be_bytes(fixed(payload.get(4..6).unwrap_or_default())?) as usize;
                let name = payload
                    .get(6..6 + len)
                    .ok_or_else(|| FrameError::Malformed("short signal frame".into()))?;
                ToClient::Killed {
                    number,
                    signal: String::from_utf8_lossy(name).into_owned(),
                    message: String::from_utf8_lossy(&payload[6 + len..]).into_owned(),
                }
            }
            EOF => ToClient::Eof,
            other => return Err(FrameError::UnknownTag(other)),
        })
    }
}

impl ToMaster {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToMaster::Stdin(data) => frame(STDIN, data),
            ToMaster::StdinEof => frame(STDIN_EOF, &[]),
            ToMaster::Close => frame(CLOSE, &[]),
        }
    }

    pub fn decode(tag: u8, payload: Vec<u8>) -> Result<ToMaster, FrameError> {
        Ok(match tag {
            STDIN => ToMaster::Stdin(payload),
            STDIN_EOF => ToMaster::StdinEof,
            CLOSE => ToMaster::Close,
            other => return Err(FrameError::UnknownTag(other)),
        })
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], FrameError> {
    bytes
        .try_into()
        .map_err(|_| FrameError::Malformed(format!("expected {N} bytes, got {}", bytes.len())))
}

/// Take one whole frame off the front of `buffer`, when it holds one. Callers that must be cancel
/// safe read into a buffer they keep and parse with this, instead of [`read_frame`].
pub fn take_frame(buffer: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
    let Some(head) = buffer.get(..5) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong { len });
    }
    if buffer.len() < 5 + len {
        return Ok(None);
    }
    let tag = buffer[0];
    let payload = buffer[5..5 + len].to_vec();
    buffer.drain(..5 + len);
    Ok(Some((tag, payload)))
}

/// Read the next frame's tag and payload; None at a clean end of stream between frames. Not cancel
/// safe: a frame half read when the future is dropped is lost (see [`take_frame`]).
pub async fn read_frame(reader: &mut (impl AsyncRead + Unpin)) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
    let mut head = [0u8; 5];
    let mut filled = 0;
    while filled < head.len() {
        let n = reader.read(&mut head[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong { len });
    }
    let mut payload = vec![0u8; len];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })?;
    Ok(Some((head[0], payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn decode_all_to_client(bytes: Vec<u8>) -> Vec<ToClient> {
        let mut reader = &bytes[..];
        let mut out = Vec::new();
        while let Some((tag, payload)) = read_frame(&mut reader).await.unwrap() {
            out.push(ToClient::decode(tag, payload).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn every_master_frame_reads_back_as_it_was_written() {
        let frames = vec![
            ToClient::Stdout(b"hello\n".to_vec()),
            ToClient::Stderr(Vec::new()),
            ToClient::Exited(-3),
            ToClient::Killed {
                number: 15,
                signal: "TERM".into(),
                message: "bye now".into(),
            },
            ToClient::Eof,
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(ToClient::encode).collect();
        assert_eq!(decode_all_to_client(bytes).await, frames);
    }

    #[tokio::test]
    async fn every_client_frame_reads_back_as_it_was_written() {
        let frames = vec![
            ToMaster::Stdin(vec![0, 1, 2, 255]),
            ToMaster::StdinEof,
            ToMaster::Close,
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(ToMaster::encode).collect();
        let mut reader = &bytes[..];
        let mut out = Vec::new();
        while let Some((tag, payload)) = read_frame(&mut reader).await.unwrap() {
            out.push(ToMaster::decode(tag, payload).unwrap());
        }
        assert_eq!(out, frames);
    }

    #[test]
    fn a_frame_is_its_tag_a_big_endian_length_and_the_bytes() {
        assert_eq!(frame(7, b"ab"), vec![7, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(ToClient::Exited(1).encode(), vec![EXIT, 0, 0, 0, 4, 0, 0, 0, 1]);
    }

    #[tokio::test]
    async fn refuses_oversized_truncated_and_unknown_frames() {
        let huge = [STDOUT, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut &huge[..]).await,
            Err(FrameError::TooLong { .. })
        ));
        let cut = [STDOUT, 0, 0, 0, 9, b'x'];
        assert!(matches!(
            read_frame(&mut &cut[..]).await,
            Err(FrameError::Truncated)
        ));
        let half_head = [STDOUT, 0];
        assert!(matches!(
            read_frame(&mut &half_head[..]).await,
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            ToClient::decode(99, Vec::new()),
            Err(FrameError::UnknownTag(99))
        ));
        assert!(matches!(
            ToMaster::decode(STDOUT, Vec::new()),
            Err(FrameError::UnknownTag(_))
        ));
        assert!(matches!(
            ToClient::decode(EXIT, vec![1, 2]),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn headers_and_answers_are_the_documented_json_lines() {
        let exec = Header {
            v: VERSION,
            op: Op::Exec {
                command: "imsg rpc".into(),
            },
        };
        assert_eq!(
            line(&exec),
            b"{\"v\":1,\"op\":\"exec\",\"command\":\"imsg rpc\"}\n".to_vec()
        );
        let sftp: Header = serde_json::from_str(r#"{"v":1,"op":"sftp"}"#).unwrap();
        assert_eq!(sftp.op, Op::Sftp);
        assert_eq!(line(&Answer::ok()), b"{\"ok\":true}\n".to_vec());
        let failed = Answer::failed(FailureKind::Connect, "HOST KEY CHANGED\nfor x");
        assert_eq!(failed.error.as_deref(), Some("HOST KEY CHANGED for x"));
    }

    #[test]
    fn frames_are_taken_from_a_buffer_only_once_whole() {
        let mut bytes = ToClient::Stdout(b"abc".to_vec()).encode();
        bytes.extend(ToClient::Exited(2).encode());
        let mut buffer = bytes[..6].to_vec();
        assert_eq!(take_frame(&mut buffer).unwrap(), None, "a partial frame waits");
        assert_eq!(buffer.len(), 6, "and is kept");
        buffer.extend_from_slice(&bytes[6..]);
        assert_eq!(take_frame(&mut buffer).unwrap(), Some((STDOUT, b"abc".to_vec())));
        assert_eq!(take_frame(&mut buffer).unwrap(), Some((EXIT, vec![0, 0, 0, 2])));
        assert!(buffer.is_empty());
        let mut huge = vec![STDOUT, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(take_frame(&mut huge), Err(FrameError::TooLong { .. })));
    }

    #[tokio::test]
    async fn a_line_is_read_without_consuming_what_follows() {
        let bytes = b"{\"ok\":true}\nRAW".to_vec();
        let mut reader = &bytes[..];
        assert_eq!(
            read_line(&mut reader).await.unwrap().as_deref(),
            Some("{\"ok\":true}")
        );
        assert_eq!(reader, b"RAW");
        assert!(read_line(&mut &b""[..]).await.unwrap().is_none());
    }
}
