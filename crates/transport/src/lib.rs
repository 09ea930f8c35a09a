//! shoal-transport: what the broker's listeners and the load generator's connectors share.
//! Every transport ends as one `AsyncRead + AsyncWrite` byte stream carrying MQTT exactly as
//! TCP does:
//!
//! - [`WsIo`]: a WebSocket whose binary messages carry the stream (MQTT §6: packets may span
//!   messages, and a message may hold several packets);
//! - [`QuicIo`]: the first bidirectional stream of a QUIC connection (the single-stream
//!   mode of EMQX and NanoSDK clients);
//! - [`pem`]: certificate chains and private keys read from PEM files, with errors that name
//!   the file.

pub mod pem;
mod quic;
mod ws;

pub use quic::QuicIo;
pub use ws::WsIo;
