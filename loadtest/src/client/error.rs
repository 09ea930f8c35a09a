//! Why a connection failed or ended, with a short key for the run's error table.

use std::io;

use shoal_codec::{ConnectReasonCode, DecodeError, DisconnectReasonCode, EncodeError, PacketType};

use crate::transport::TransportError;

/// Why a connection could not be set up, or ended before the run asked it to.
#[derive(Debug)]
pub enum ClientError {
    /// The transport could not connect.
    Transport(TransportError),
    /// A step did not complete in time.
    Timeout(&'static str),
    /// CONNACK refused the connection.
    Refused(ConnectReasonCode),
    /// The broker closed the connection.
    Closed,
    /// Reading or writing failed.
    Io(io::Error),
    /// The broker sent bytes that are not a valid packet.
    Decode(DecodeError),
    /// A packet could not be encoded (a scenario bug, e.g. an oversize payload).
    Encode(EncodeError),
    /// The broker sent DISCONNECT (MQTT 5).
    Disconnected(DisconnectReasonCode),
    /// The broker sent a packet a client never expects.
    Unexpected(PacketType),
}

impl ClientError {
    /// The key under which the error is counted: its kind and reason code, without detail
    /// that differs per connection.
    pub fn key(&self) -> String {
        match self {
            Self::Transport(e) => e.key(),
            Self::Timeout(step) => format!("timeout: {step}"),
            Self::Refused(code) => format!("connack: {code}"),
            Self::Closed => "closed by broker".to_owned(),
            Self::Io(e) => format!("io: {}", e.kind()),
            Self::Decode(e) => format!("decode: {e}"),
            Self::Encode(e) => format!("encode: {e}"),
            Self::Disconnected(code) => format!("disconnect: {code}"),
            Self::Unexpected(p) => format!("unexpected {p}"),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "{e}"),
            Self::Io(e) => write!(f, "io: {e}"),
            _ => f.write_str(&self.key()),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

impl From<EncodeError> for ClientError {
    fn from(e: EncodeError) -> Self {
        Self::Encode(e)
    }
}

impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}
