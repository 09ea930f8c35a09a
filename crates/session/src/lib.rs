//! shoal-session: the state machine of one client's MQTT session, sans-IO.
//!
//! It never touches a socket, a clock, a task or a file: the driver (the broker's
//! connection task) gives it packets and the time, and takes out what it produces.
//!
//! - `Session::attach(now, &connect, options)` when a CONNECT is accepted; CONNACK and the
//!   resends of what was in flight come out of `poll_transmit`.
//! - `Session::handle_packet(now, packet)` for each packet from the client;
//!   `Session::handle_timeout(now)` at `poll_timeout()` (keep alive).
//! - `Session::deliver(now, message, ...)` for each message that matched a subscription of
//!   the session: it waits in a bounded queue until `poll_transmit(now)` sends it, within
//!   the client's Receive Maximum and Maximum Packet Size, with topic aliases.
//! - `poll_event()` yields what the broker must act on: publications to dispatch,
//!   subscriptions to authorize and register, AUTH, and the end of the connection; the
//!   broker answers with `handle_publish_done` and `handle_subscribe_done`.
//! - `poll_change()` yields the changes that persistent sessions must write to the store
//!   before the broker acknowledges the messages behind them.
//!
//! Main types: [`Session`], [`SessionConfig`], [`Message`], [`SessionRecord`],
//! [`OutboundMessage`], [`Event`], [`Change`], [`Timestamp`].

mod config;
mod event;
mod filters;
mod inbound;
mod message;
mod outbound;
mod record;
mod session;
mod time;

pub use config::SessionConfig;
pub use event::{Change, CloseReason, ClosedBy, Event, SubscribeRequest};
pub use message::Message;
pub use record::{
    NEVER_EXPIRES, OutboundMessage, OutboundState, SessionRecord, SubscriptionRecord, WillRecord,
};
pub use session::{AttachOptions, Delivery, DropCounts, Session};
pub use time::Timestamp;
