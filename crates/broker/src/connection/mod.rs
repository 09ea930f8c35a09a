//! The connection driver: one task per client connection. It reads and decodes packets,
//! feeds them to the session, acts on the session's events (dispatch, subscriptions,
//! durability), and writes what the session has to send, waiting in one hand-written poll
//! (`Conn::poll_wait`) that keeps an idle connection's task small.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use shoal_access::acl::ClientAcl;
use shoal_codec::{
    ConnectReasonCode, DecodeError, Decoder, DisconnectReasonCode, MqttString, Packet,
    ProtocolVersion,
};
use shoal_session::{CloseReason, ClosedBy};
use shoal_topic::Recipients;
use tracing::Instrument;

use crate::broker::Receipts;

use crate::auth::AuthExchange;
use crate::broker::Broker;
use crate::listener::Peer;
use crate::metrics as m;
use crate::slot::SessionSlot;
use crate::stats::Stats;

/// The read size of a quiet connection, and the largest one.
const MIN_READ: usize = 512;
const MAX_READ: usize = 16 * 1024;
/// A write buffer grown past this is released once empty.
const KEEP_WRITE_BUFFER: usize = 16 * 1024;
/// How long the last packets (DISCONNECT) may take to leave.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

mod ack;
mod close;
mod connect;
mod ownership;
mod subscribe;
mod throttle;
mod transport;

pub(crate) use ack::flush_store;
use ack::wait_receipts;
use throttle::Throttle;
pub(crate) use transport::Transport;

/// Serves one client connection until it ends.
///
/// The connection's state is built here, outside the future, and the future uses it in
/// place: an async fn's arguments stay in its future for its whole life, and moving them
/// into a local would hold them twice.
pub(crate) fn serve<T: Transport>(
    broker: Arc<Broker>,
    io: T,
    peer: Peer,
) -> impl Future<Output = ()> + Send {
    let span = tracing::debug_span!("conn", peer = %peer.addr, listener = %peer.listener().name, client_id = tracing::field::Empty);
    let decoder = Decoder::new(broker.config.session.maximum_packet_size);
    let extras = Throttle::new(&broker.config.limits).map(|throttle| {
        Box::new(Extras {
            throttle: Some(throttle),
            ..Default::default()
        })
    });
    let mut conn = Conn {
        broker,
        io,
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        read_size: MIN_READ,
        decoder,
        extras,
        username: None,
        peer,
        attachment: 0,
        unflushed: Receipts::default(),
    };
    async move { conn.run().await }.instrument(span)
}

/// What woke a connection waiting for work.
enum Woke {
    /// The session was taken over, or the node asked the connection to end.
    Kicked(DisconnectReasonCode),
    /// A read completed (bytes, room).
    Read(io::Result<(usize, usize)>),
    /// The publish rate allows reading again.
    Resume,
    /// A write completed.
    Wrote(io::Result<usize>),
    /// The started packet's deadline came (`packet_timeout`).
    PacketDeadline,
    /// The session has something to send.
    Wake,
}

struct Conn<T> {
    broker: Arc<Broker>,
    io: T,
    rbuf: BytesMut,
    wbuf: BytesMut,
    decoder: Decoder,
    /// What only some connections need.
    extras: Option<Box<Extras>>,
    /// Who is connected, through which listener.
    peer: Peer,
    /// The username the client was authenticated as.
    username: Option<String>,
    /// How much the next read asks for: grows while reads fill it, shrinks when they do
    /// not, so an idle connection holds a small buffer and a busy one reads in bulk.
    read_size: usize,
    /// This connection's number on its session (`SessionSlot::serving`), once attached.
    attachment: u32,
    /// Whether this connection wrote to the store since its last flush: output that confirms
    /// state (`fill_output`) waits for a flush then.
    unflushed: Receipts,
}

/// What only some connections need, boxed so that the others do not carry it.
#[derive(Default)]
struct Extras {
    /// A re-authentication exchange waiting for the client's next AUTH.
    reauth: Option<Box<dyn AuthExchange>>,
    /// The client's ACL, once authenticated (`None`: the node has no ACL).
    acl: Option<ConnAcl>,
    /// The publish rate limit, when configured.
    throttle: Option<Throttle>,
    /// Since when the read buffer has held a packet started and not complete (`None`:
    /// none), and the timer that looks at it again (`packet_timeout`).
    partial_since: Option<shoal_session::Timestamp>,
    packet_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Events held back while the pending receipts of the QoS 2 messages among them are
    /// written (`take_events`): handled, in order, once they are.
    held: Vec<shoal_session::Event>,
    /// QoS 2 messages whose pending receipt could not be written: refused (0x80).
    untagged: Vec<shoal_codec::PacketId>,
}

/// Why the CONNECT phase ended without a session.
enum Refused {
    /// Answer with this CONNACK, in this version (MQTT 5: with this Reason String), then
    /// close.
    ConnAck(ProtocolVersion, ConnectReasonCode, Option<String>),
    /// Answer with CONNACK 0x9C (Use another server) naming this server (MQTT 5: the
    /// Server Reference; 3.1.1: return code 3), with this Reason String, then close.
    Redirect(ProtocolVersion, String, &'static str),
    /// Just close.
    Close,
}

impl<T: Transport> Conn<T> {
    async fn run(&mut self) {
        // The CONNECT phase and the close are boxed: their futures are large and short-lived,
        // and an idle connection's task should hold only the serving loop's state.
        let Some((slot, version)) = Box::pin(self.open()).await else {
            return;
        };
        let reason = self.serve_session(&slot, version).await;
        Box::pin(self.finish(&slot, reason)).await;
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
        self.broker
            .stats
            .connected
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // A connection taking the session over may be waiting for this one to let go.
        self.broker.detached.notify_waiters();
    }

    /// The connection's extras, made on first use.
    fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Default::default)
    }

    /// The publish rate limit, if there is one.
    fn throttle(&mut self) -> Option<&mut Throttle> {
        self.extras.as_mut()?.throttle.as_mut()
    }

    /// The client's ACL, recompiled if the ACL file was reloaded; `None` when unrestricted.
    fn acl(&mut self) -> Option<&ClientAcl> {
        let conn = self.extras.as_mut()?.acl.as_mut()?;
        let generation = self.broker.access.generation();
        if conn.generation != generation {
            let (generation, acl) = self
                .broker
                .access
                .client_acl(self.username.as_deref(), &conn.client_id);
            conn.generation = generation;
            conn.acl = acl;
        }
        Some(&conn.acl)
    }

    /// The main loop: returns why the connection ends.
    ///
    /// Its state between turns is small on purpose: an idle connection's task holds the
    /// `Conn`, the slot and this loop's few locals. The wait is one hand-written poll
    /// (`poll_wait`), the store flushes are boxed, and keep alive is watched by the node's
    /// wheel (`KeepAlive`), not by a timer per connection.
    async fn serve_session(
        &mut self,
        slot: &Arc<SessionSlot>,
        version: ProtocolVersion,
    ) -> CloseReason {
        // Made on the first PUBLISH: a client that only listens never needs it.
        let mut recipients: Option<Box<Recipients<u64>>> = None;
        // Packets that came in the same read as CONNECT are handled at once, not when the
        // client sends more.
        let mut buffered = !self.rbuf.is_empty();
        loop {
            // What the output confirms must be durable before it leaves (`fill_output`). If
            // the store cannot make it so, the connection ends without it: MQTT 5 clients
            // are told 0x80, and nothing unconfirmed is acknowledged.
            if let Some(receipts) = self.fill_output(slot, version)
                && !Box::pin(self.broker.durable(receipts)).await
            {
                return self.store_failed(slot);
            }
            self.release_idle_buffer();
            let woke = match std::mem::take(&mut buffered) {
                true => Woke::Resume,
                false => std::future::poll_fn(|cx| self.poll_wait(cx, slot)).await,
            };
            let stats = &self.broker.stats;
            match woke {
                Woke::Kicked(reason) => {
                    // Reasons that end every connection of the node are logged once, by
                    // whoever ended them.
                    if !matches!(
                        reason,
                        DisconnectReasonCode::ServerShuttingDown
                            | DisconnectReasonCode::SessionTakenOver
                            | DisconnectReasonCode::UseAnotherServer
                    ) {
                        tracing::info!(%reason, "disconnected by the server");
                    }
                    // Wills are not published on a graceful shutdown, nor when a connection
                    // resuming the session took it over (§3.1.4): the session goes on. A
                    // clean start ended it (the slot is retired): then the Will is due. A
                    // client sent elsewhere: as whoever sent it said.
                    let redirect = match reason {
                        DisconnectReasonCode::UseAnotherServer => slot.take_redirect(),
                        _ => None,
                    };
                    let will = match reason {
                        DisconnectReasonCode::ServerShuttingDown => false,
                        DisconnectReasonCode::SessionTakenOver => slot.is_retired(),
                        _ => redirect.as_ref().is_none_or(|(_, will)| *will),
                    };
                    let properties = shoal_codec::DisconnectProperties {
                        server_reference: redirect
                            .and_then(|(server, _)| MqttString::try_from(&*server).ok()),
                        ..Default::default()
                    };
                    slot.lock().close_with(reason, will, properties);
                }
                Woke::Read(Ok((0, _)) | Err(_)) | Woke::Wrote(Ok(0) | Err(_)) => {
                    return CloseReason {
                        reason: DisconnectReasonCode::UnspecifiedError,
                        publish_will: true,
                        by: ClosedBy::Network,
                    };
                }
                Woke::Read(Ok((n, room))) => {
                    Stats::add(&stats.bytes_received, n as u64);
                    self.adapt_read(n, room);
                    self.handle_throttled(slot, n);
                }
                Woke::Resume => {
                    if let Some(throttle) = self.throttle() {
                        throttle.resume = None;
                    }
                    // Packets held back by the rate come first.
                    self.handle_throttled(slot, 0);
                }
                Woke::Wrote(Ok(n)) => {
                    Stats::add(&stats.bytes_sent, n as u64);
                    if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_WRITE_BUFFER {
                        self.wbuf = BytesMut::new();
                    }
                }
                Woke::PacketDeadline => self.check_packet_deadline(slot),
                Woke::Wake => {}
            }
            // Events held back for the receipts of tagged QoS 2 messages come again once
            // those are written (`take_events`).
            while let Some((done, receipts)) = self.take_events(slot, version, &mut recipients) {
                // Nothing this read did is acknowledged before its receipts hold.
                let (done, durable) = match receipts.is_empty() && done.waits_for_nobody() {
                    true => (done, true),
                    // Boxed with the wait: the loop's state holds one pointer while it waits.
                    false => Box::pin(wait_receipts(&self.broker, done, receipts)).await,
                };
                match self.complete_events(slot, done, durable) {
                    Ok(0) => {}
                    // This read woke other connections: let them write before reading
                    // more, or a flood of publishers starves its subscribers' tasks.
                    Ok(_) => tokio::task::yield_now().await,
                    Err(reason) => return reason,
                }
                if self.extras.as_ref().is_none_or(|e| e.held.is_empty()) {
                    break;
                }
            }
        }
    }

    /// The store could not make the output durable: the output is dropped unsent, MQTT 5
    /// clients get DISCONNECT 0x80, and the connection ends.
    fn store_failed(&mut self, slot: &SessionSlot) -> CloseReason {
        metrics::counter!(m::ACKS_FAILED, "kind" => "output").increment(1);
        self.wbuf.clear();
        let reason = DisconnectReasonCode::UnspecifiedError;
        let mut session = slot.lock();
        session.close_explained(reason, true, Some("the broker's store failed"));
        // The DISCONNECT (MQTT 5) is what is left to send; `finish` writes it.
        CloseReason {
            reason,
            publish_will: true,
            by: ClosedBy::Server,
        }
    }

    /// Waits for the next thing to do, in this order: being told to end, data to read (or
    /// the publish rate allowing more), room to write, output from the session.
    fn poll_wait(&mut self, cx: &mut Context<'_>, slot: &SessionSlot) -> Poll<Woke> {
        // Registered first, so that a wake-up between the checks below and the wait is not
        // lost. The output it announces is picked up by the next turn whatever woke it.
        let woken = slot.poll_notified(cx).is_ready();
        if let Some(reason) = slot.kicked(self.attachment) {
            return Poll::Ready(Woke::Kicked(reason));
        }
        if let Some(deadline) = self
            .extras
            .as_mut()
            .and_then(|extras| extras.packet_deadline.as_mut())
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Woke::PacketDeadline);
        }
        let resume = self
            .extras
            .as_mut()
            .and_then(|extras| extras.throttle.as_mut());
        match resume.and_then(|throttle| throttle.resume.as_mut()) {
            None => {
                if let Poll::Ready(read) =
                    self.io.poll_read_into(cx, &mut self.rbuf, self.read_size)
                {
                    return Poll::Ready(Woke::Read(read));
                }
            }
            Some(resume) => {
                if resume.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Resume);
                }
            }
        }
        if !self.wbuf.is_empty()
            && let Poll::Ready(written) = self.io.poll_write_from(cx, &mut self.wbuf)
        {
            return Poll::Ready(Woke::Wrote(written));
        }
        if woken {
            return Poll::Ready(Woke::Wake);
        }
        Poll::Pending
    }

    /// Writes all of `wbuf`.
    async fn write_all(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            let n = std::future::poll_fn(|cx| self.io.poll_write_from(cx, &mut self.wbuf)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            Stats::add(&self.broker.stats.bytes_sent, n as u64);
        }
        Ok(())
    }

    /// Writes what is left and shuts the stream down, within `CLOSE_FLUSH_TIMEOUT`.
    async fn write_and_close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
            self.write_all().await?;
            std::future::poll_fn(|cx| self.io.poll_close(cx)).await
        })
        .await;
    }

    /// Reads once; returns the bytes read (0: the stream ended).
    async fn read_some(&mut self) -> io::Result<usize> {
        let want = self.read_size;
        let (n, _) =
            std::future::poll_fn(|cx| self.io.poll_read_into(cx, &mut self.rbuf, want)).await?;
        Stats::add(&self.broker.stats.bytes_received, n as u64);
        Ok(n)
    }

    /// Gives back an empty read buffer that the connection does not need while it waits:
    /// what a busy spell left it, and, where the transport can wait without one, the whole
    /// buffer of a connection reading little (an idle client holds none).
    ///
    /// An empty write buffer of a control packet's size (what CONNACK or PINGRESP left) is
    /// given back too: an idle connection holds none, and a busy one grows past it.
    fn release_idle_buffer(&mut self) {
        if self.wbuf.is_empty() && self.wbuf.capacity() > 0 && self.wbuf.capacity() <= 64 {
            self.wbuf = BytesMut::new();
        }
        if !self.rbuf.is_empty() || self.rbuf.capacity() == 0 {
            return;
        }
        let quiet = T::WAITS_WITHOUT_BUFFER && self.read_size == MIN_READ;
        if quiet || self.rbuf.capacity() > 2 * self.read_size {
            self.rbuf = BytesMut::new();
        }
    }

    /// Grows the read size when a read filled its room, shrinks it when reads stay small.
    fn adapt_read(&mut self, read: usize, room: usize) {
        if read == room {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if read < self.read_size / 8 {
            self.read_size = (self.read_size / 2).max(MIN_READ);
        }
    }

    /// Handles what was read (`bytes` more), within the publish rate if there is one: the
    /// packets past the allowance stay in the buffer, and reading pauses until the rate
    /// allows more.
    fn handle_throttled(&mut self, slot: &Arc<SessionSlot>, bytes: usize) {
        // Without a rate (the usual case) no clock is read.
        let Some(throttle) = self.throttle() else {
            self.handle_input(slot, usize::MAX);
            return;
        };
        let now = tokio::time::Instant::now();
        let allowance = throttle.allowance(now);
        let published = self.handle_input(slot, allowance);
        if let Some(throttle) = self.throttle() {
            throttle.take(now, published, bytes);
        }
    }

    /// Decodes whole packets read and hands them to the session, stopping after `limit`
    /// PUBLISH packets; returns how many PUBLISH it handled.
    fn handle_input(&mut self, slot: &Arc<SessionSlot>, limit: usize) -> usize {
        let now = self.broker.now();
        let mut session = slot.lock();
        let mut published = 0;
        let mut decoded = false;
        loop {
            if published >= limit {
                return published;
            }
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(packet)) => {
                    decoded = true;
                    if let Packet::Publish(p) = &packet {
                        published += 1;
                        Stats::add(&self.broker.stats.messages_received[p.qos() as usize], 1);
                    }
                    session.handle_packet(now, packet);
                    if session.closing().is_some() {
                        return published;
                    }
                }
                Ok(None) => {
                    self.note_partial(now, decoded);
                    return published;
                }
                Err(e) => {
                    count_protocol_error(&e);
                    tracing::debug!(error = %e, "malformed packet");
                    session.close_explained(e.reason_code(), true, Some(&e.to_string()));
                    return published;
                }
            }
        }
    }
}

impl<T: Transport> Conn<T> {
    /// After a read's whole packets were decoded: notes whether a started packet is left
    /// in the buffer, and since when (a packet completed in this read starts the clock
    /// again). The first partial packet arms the deadline; a busy connection only updates
    /// `partial_since`, and the timer is moved when it fires (`check_packet_deadline`).
    fn note_partial(&mut self, now: shoal_session::Timestamp, decoded: bool) {
        if self.rbuf.is_empty() {
            if let Some(extras) = self.extras.as_mut() {
                extras.partial_since = None;
            }
            return;
        }
        let timeout = self.broker.config.limits.packet_timeout;
        let extras = self.extras();
        if decoded || extras.partial_since.is_none() {
            extras.partial_since = Some(now);
        }
        if extras.packet_deadline.is_none() {
            extras.packet_deadline = Some(Box::pin(tokio::time::sleep(timeout)));
        }
    }

    /// The packet deadline fired: closes the connection if the packet started then is
    /// still not complete `packet_timeout` later, else moves the deadline on (or drops it
    /// when no packet is started).
    fn check_packet_deadline(&mut self, slot: &SessionSlot) {
        let now = self.broker.now();
        let timeout = self.broker.config.limits.packet_timeout;
        let Some(extras) = self.extras.as_mut() else {
            return;
        };
        let Some(since) = extras.partial_since else {
            extras.packet_deadline = None;
            return;
        };
        let due = since + timeout;
        if now < due {
            let left = Duration::from_millis(due.as_millis().saturating_sub(now.as_millis()));
            if let Some(deadline) = extras.packet_deadline.as_mut() {
                deadline.as_mut().reset(tokio::time::Instant::now() + left);
            }
            return;
        }
        extras.packet_deadline = None;
        extras.partial_since = None;
        metrics::counter!(m::PACKET_TIMEOUTS).increment(1);
        tracing::debug!(
            buffered = self.rbuf.len(),
            "a started packet did not complete in time"
        );
        let why = format!(
            "a packet was not completed within {} s (packet_timeout)",
            timeout.as_secs()
        );
        slot.lock()
            .close_explained(DisconnectReasonCode::KeepAliveTimeout, true, Some(&why));
    }
}

fn count_protocol_error(e: &DecodeError) {
    metrics::counter!(m::PROTOCOL_ERRORS, "rule" => e.rule()).increment(1);
}

/// A connection's compiled ACL, for its client id and `Conn::username`.
struct ConnAcl {
    generation: u64,
    acl: ClientAcl,
    client_id: String,
}
