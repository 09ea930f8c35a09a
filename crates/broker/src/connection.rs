//! The connection driver: one task per client connection. It reads and decodes packets,
//! feeds them to the session, acts on the session's events (dispatch, subscriptions,
//! durability), and writes what the session has to send, waiting in one hand-written poll
//! (`Conn::poll_wait`) that keeps an idle connection's task small.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use shoal_access::acl::{ClientAcl, SubscribeDecision};
use shoal_access::chain::{Credentials, Rejection, Verdict};
use shoal_codec::{
    AuthReasonCode, ConnAck, Connect, ConnectReasonCode, DecodeError, Decoder,
    DisconnectReasonCode, MqttString, Packet, PacketId, ProtocolVersion, PubAckReasonCode, QoS,
    SubAckReasonCode,
};
use shoal_session::{AttachOptions, CloseReason, ClosedBy, Event, SubscribeRequest};
use shoal_topic::{FilterKind, Insertion, Recipients, validate_topic_name};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use crate::auth::{AuthExchange, AuthStep};
use crate::broker::{Broker, write};
use crate::listener::Peer;
use crate::metrics as m;
use crate::slot::SessionSlot;
use crate::stats::Stats;

/// How long a new connection has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a taken-over connection has to let go of its session.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How much encoded output a connection buffers before it stops taking packets from its
/// session (the session's own queue, bounded, holds the rest).
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// The read size of a quiet connection, and the largest one.
const MIN_READ: usize = 512;
const MAX_READ: usize = 16 * 1024;
/// A write buffer grown past this is released once empty.
const KEEP_WRITE_BUFFER: usize = 16 * 1024;
/// How long the last packets (DISCONNECT) may take to leave.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection's byte stream, as its task polls it: one task reads and writes the whole
/// stream (no split halves, no lock between them).
pub(crate) trait Transport: AsyncWrite + Send + Unpin + Sized {
    /// Whether the transport can wait for data without a buffer: then an idle connection
    /// holds no read buffer at all.
    const WAITS_WITHOUT_BUFFER: bool;

    /// Reads into `buf`, first making room for `want` more bytes (once data is ready, when
    /// the transport can tell); returns the bytes read and the room there was.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<(usize, usize)>>;

    /// Writes from the front of `buf`, advancing it past what was written.
    fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        poll_once(self.write_buf(buf), cx)
    }

    /// Shuts the stream down for writing.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_shutdown(cx)
    }
}

/// Makes room for `want` more bytes; returns the room there is.
fn make_room(buf: &mut BytesMut, want: usize) -> usize {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    buf.capacity() - buf.len()
}

/// Polls a reading or writing future of tokio's once: they hold only their borrows, so a
/// new one each poll loses nothing.
fn poll_once<F: Future>(future: F, cx: &mut Context<'_>) -> Poll<F::Output> {
    std::pin::pin!(future).poll(cx)
}

/// Plain TCP waits for readiness before it reserves a read buffer.
impl Transport for tokio::net::TcpStream {
    const WAITS_WITHOUT_BUFFER: bool = true;

    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<(usize, usize)>> {
        loop {
            std::task::ready!(self.poll_read_ready(cx))?;
            let room = make_room(buf, want);
            match self.try_read_buf(buf) {
                Ok(n) => return Poll::Ready(Ok((n, room))),
                // Readiness was stale: `poll_read_ready` registers for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Every other transport (TLS, WebSocket, QUIC, PROXY) is one boxed state machine.
impl Transport for Box<dyn crate::listener::Io> {
    const WAITS_WITHOUT_BUFFER: bool = false;

    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<(usize, usize)>> {
        let room = make_room(buf, want);
        poll_once(self.read_buf(buf), cx).map_ok(|n| (n, room))
    }
}

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
}

/// Why the CONNECT phase ended without a session.
enum Refused {
    /// Answer with this CONNACK, in this version (MQTT 5: with this Reason String), then
    /// close.
    ConnAck(ProtocolVersion, ConnectReasonCode, Option<String>),
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

    /// CONNECT: reads and checks it, authenticates, authorizes, takes the session and
    /// attaches; `None` when the connection was refused or closed.
    async fn open(&mut self) -> Option<(Arc<SessionSlot>, ProtocolVersion)> {
        let connect = match tokio::time::timeout(CONNECT_TIMEOUT, self.read_connect()).await {
            Ok(Ok(connect)) => connect,
            Ok(Err(refused)) => {
                self.refuse(refused).await;
                return None;
            }
            Err(_) => {
                tracing::debug!("no CONNECT in time");
                metrics::counter!(m::CONNECTS, "result" => "timeout").increment(1);
                return None;
            }
        };
        let version = connect.protocol;
        let (client_id, assigned) = match check_connect(&self.broker, &connect) {
            Ok(ok) => ok,
            Err((code, why)) => {
                self.refuse(Refused::ConnAck(version, code, Some(why.to_string())))
                    .await;
                return None;
            }
        };
        tracing::Span::current().record("client_id", client_id.as_str());
        let ip = self.peer.addr.ip();
        let claimed = connect.username.as_ref().map(|u| u.as_str());
        let banned = self
            .broker
            .access
            .banned(&client_id, claimed, ip)
            .or_else(|| self.broker.access.flapping(&client_id));
        if let Some(why) = banned {
            metrics::counter!(m::AUTH_FAILURES, "reason" => "banned").increment(1);
            tracing::info!(%why, "CONNECT refused");
            self.refuse(Refused::ConnAck(
                version,
                ConnectReasonCode::Banned,
                Some(why),
            ))
            .await;
            return None;
        }
        let authentication =
            match tokio::time::timeout(CONNECT_TIMEOUT, self.authenticate(&connect, &client_id))
                .await
            {
                Ok(Ok(authentication)) => authentication,
                Ok(Err(refused)) => {
                    self.refuse(refused).await;
                    return None;
                }
                Err(_) => {
                    self.refuse(Refused::Close).await;
                    return None;
                }
            };
        let username = match self
            .check_credentials(&connect, &client_id, authentication.as_ref())
            .await
        {
            Ok(username) => username,
            Err(refused) => {
                self.refuse(refused).await;
                return None;
            }
        };
        self.username = username;
        if let Some(refused) = self.authorize(&connect, &client_id) {
            self.refuse(refused).await;
            return None;
        }
        let (slot, present) = self.take_session(&connect, client_id.clone()).await;
        let now = self.broker.now();
        {
            let mut session = slot.lock();
            let options = AttachOptions {
                session_present: present,
                assigned_client_id: assigned.then(|| client_id.clone()),
                authentication,
            };
            session.attach(now, &connect, options);
            self.broker.keep_alive.watch(&slot, session.poll_timeout());
            self.filter_resumed(&slot, &mut session);
            self.broker.persist(&slot.client_id, &mut session);
        }
        metrics::counter!(m::CONNECTS, "result" => "success").increment(1);
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        Stats::add(&self.broker.stats.connected, 1);
        tracing::debug!(
            ?version,
            present,
            keep_alive = connect.keep_alive,
            "connected"
        );
        // The CONNECT's frame shares the first read buffer: it goes with this future.
        Some((slot, version))
    }

    /// Runs the authenticator chain; returns the client's username from now on, or the
    /// refusal (sent after the failure delay of its address).
    async fn check_credentials(
        &mut self,
        connect: &Connect,
        client_id: &MqttString,
        enhanced: Option<&(MqttString, Option<bytes::Bytes>)>,
    ) -> Result<Option<String>, Refused> {
        let listener = self.peer.listener();
        let identity_required = listener
            .kind
            .tls()
            .is_some_and(|tls| tls.identity.is_some());
        let credentials = Credentials {
            listener: listener.name.clone(),
            client_id: client_id.as_str().to_owned(),
            username: connect.username.as_ref().map(|u| u.as_str().to_owned()),
            password: connect.password.as_ref().map(|p| p.to_vec()),
            peer: self.peer.addr.ip(),
            certificate_identity: self.peer.identity.clone(),
            identity_required,
            enhanced_method: enhanced.map(|(method, _)| method.as_str().to_owned()),
            allow_anonymous: listener.allow_anonymous,
        };
        let decision = self.broker.access.authenticate(credentials).await;
        let rejection = match decision.verdict {
            Verdict::Accept { username } => {
                self.broker.access.succeeded(self.peer.addr.ip());
                return Ok(username);
            }
            Verdict::Reject(rejection) => rejection,
            Verdict::Abstain => Rejection::NotAuthorized,
        };
        let (code, label, why) = match rejection {
            Rejection::BadCredentials => (
                ConnectReasonCode::BadUserNameOrPassword,
                "bad_credentials",
                "bad user name or password",
            ),
            Rejection::NotAuthorized => (
                ConnectReasonCode::NotAuthorized,
                "not_authorized",
                "not authorized: credentials are required here",
            ),
        };
        metrics::counter!(m::AUTH_FAILURES, "reason" => label).increment(1);
        tracing::info!(by = decision.by, reason = label, "authentication failed");
        // Each failure from an address makes its next answers slower: guessing gets slow,
        // and every refusal of one address takes the same time whatever the user name.
        let delay = self.broker.access.failed(self.peer.addr.ip());
        tokio::time::sleep(delay).await;
        Err(Refused::ConnAck(connect.protocol, code, Some(why.into())))
    }

    /// Compiles the client's ACL and checks its Will; `Some` refuses the CONNECT.
    fn authorize(&mut self, connect: &Connect, client_id: &MqttString) -> Option<Refused> {
        let max_levels = self.broker.config.limits.max_topic_levels;
        if let Some(will) = &connect.will
            && will.topic.split('/').count() > max_levels
        {
            return Some(Refused::ConnAck(
                connect.protocol,
                ConnectReasonCode::TopicNameInvalid,
                Some(format!(
                    "the Will topic has more than {max_levels} levels (max_topic_levels)"
                )),
            ));
        }
        let (generation, acl) = self
            .broker
            .access
            .client_acl(self.username.as_deref(), client_id);
        if acl.is_unrestricted() {
            return None;
        }
        if let Some(will) = &connect.will
            && !acl.may_publish(&will.topic)
        {
            metrics::counter!(m::ACL_DENIED, "action" => "will").increment(1);
            return Some(Refused::ConnAck(
                connect.protocol,
                ConnectReasonCode::NotAuthorized,
                Some(format!(
                    "the ACL does not allow publishing the Will topic {:?}",
                    will.topic.as_str()
                )),
            ));
        }
        self.extras().acl = Some(ConnAcl {
            generation,
            acl,
            client_id: client_id.as_str().to_owned(),
        });
        None
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

    /// A resumed session under this connection's ACL: its subscriptions are judged again
    /// (deliveries are checked when one reaches denied topics) and queued messages the ACL
    /// keeps from the client are dropped (they may have queued under older rules, or before
    /// a restart, when the session's identity was not known).
    fn filter_resumed(&mut self, slot: &SessionSlot, session: &mut shoal_session::Session) {
        let username = self
            .extras
            .as_ref()
            .is_some_and(|extras| extras.acl.is_some())
            .then(|| self.username.clone());
        slot.set_acl_username(username);
        slot.set_connected_as(Some((self.username.clone(), self.peer.addr.ip())));
        // Connected while the node began to shut down: the sweep may have missed us.
        if *self.broker.shutdown.borrow() {
            slot.kick(DisconnectReasonCode::ServerShuttingDown);
        }
        match self.acl() {
            None => slot.filter_with(None),
            Some(acl) => {
                let acl = acl.clone();
                self.broker.judge_subscriptions(slot, session, &acl);
            }
        }
    }

    /// Reads until a whole CONNECT is decoded.
    async fn read_connect(&mut self) -> Result<Connect, Refused> {
        match self.read_packet().await? {
            Packet::Connect(connect) => Ok(*connect),
            _ => Err(Refused::Close),
        }
    }

    /// Reads one whole packet, before the session is attached.
    async fn read_packet(&mut self) -> Result<Packet, Refused> {
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(packet)) => return Ok(packet),
                Ok(None) => {}
                Err(e) => {
                    count_protocol_error(&e);
                    tracing::debug!(error = %e, "bad CONNECT");
                    return Err(match (&e, self.decoder.version()) {
                        // An unknown level is answered in 3.1.1's form (return code 1), which
                        // every client understands [MQTT-3.1.2-2].
                        (
                            DecodeError::UnsupportedProtocolVersion(_)
                            | DecodeError::InvalidProtocolName(_),
                            _,
                        ) => Refused::ConnAck(
                            ProtocolVersion::V3_1_1,
                            ConnectReasonCode::UnsupportedProtocolVersion,
                            None,
                        ),
                        (_, Some(ProtocolVersion::V5)) => Refused::ConnAck(
                            ProtocolVersion::V5,
                            e.connect_reason_code(),
                            Some(e.to_string()),
                        ),
                        _ => Refused::Close,
                    });
                }
            }
            self.release_idle_buffer();
            if let Ok(0) | Err(_) = self.read_some().await {
                return Err(Refused::Close);
            }
        }
    }

    /// Runs the enhanced authentication exchange a CONNECT asks for (§4.12): AUTH 0x18
    /// steps until the method decides. Returns the method and final data for CONNACK.
    async fn authenticate(
        &mut self,
        connect: &Connect,
        client_id: &MqttString,
    ) -> Result<Option<(MqttString, Option<bytes::Bytes>)>, Refused> {
        let Some(method) = connect.properties.authentication_method.clone() else {
            return Ok(None);
        };
        let version = connect.protocol;
        let Some(hook) = self.broker.hooks.method(&method).cloned() else {
            return Err(Refused::ConnAck(
                version,
                ConnectReasonCode::BadAuthenticationMethod,
                Some(format!("no authentication method {method:?} here (§4.12)")),
            ));
        };
        let mut exchange = hook.begin(client_id);
        let mut data = connect.properties.authentication_data.clone();
        loop {
            match exchange.step(data.as_deref()) {
                AuthStep::Success(data) => return Ok(Some((method, data))),
                AuthStep::Fail(code) => return Err(Refused::ConnAck(version, code, None)),
                AuthStep::Continue(challenge) => {
                    let auth = auth_packet(
                        AuthReasonCode::ContinueAuthentication,
                        &method,
                        Some(challenge),
                    );
                    let _ = Packet::Auth(auth).encode(version, &mut self.wbuf);
                    if self.write_all().await.is_err() {
                        return Err(Refused::Close);
                    }
                    match self.read_packet().await? {
                        Packet::Auth(reply)
                            if reply.reason_code == AuthReasonCode::ContinueAuthentication
                                && reply.properties.authentication_method.as_ref()
                                    == Some(&method) =>
                        {
                            data = reply.properties.authentication_data;
                        }
                        // Anything else in the middle of an exchange breaks §4.12.
                        _ => {
                            return Err(Refused::ConnAck(
                                version,
                                ConnectReasonCode::ProtocolError,
                                Some("not an AUTH continuing the exchange (§4.12)".into()),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// AUTH after CONNECT: re-authentication with the method of CONNECT (§4.12.1).
    fn reauthenticate(&mut self, slot: &SessionSlot, auth: shoal_codec::Auth) {
        let mut session = slot.lock();
        let Some(method) = session.authentication_method().cloned() else {
            session.close(DisconnectReasonCode::ProtocolError, true);
            return;
        };
        if auth.properties.authentication_method.as_ref() != Some(&method) {
            session.close(DisconnectReasonCode::ProtocolError, true);
            return;
        }
        let waiting = self.extras.as_mut().and_then(|extras| extras.reauth.take());
        let exchange = match (auth.reason_code, waiting) {
            (AuthReasonCode::ReAuthenticate, _) => self
                .broker
                .hooks
                .method(&method)
                .map(|hook| hook.begin(&slot.client_id)),
            (AuthReasonCode::ContinueAuthentication, Some(exchange)) => Some(exchange),
            _ => None,
        };
        let Some(mut exchange) = exchange else {
            session.close(DisconnectReasonCode::ProtocolError, true);
            return;
        };
        match exchange.step(auth.properties.authentication_data.as_deref()) {
            AuthStep::Success(data) => {
                session.send_auth(auth_packet(AuthReasonCode::Success, &method, data))
            }
            AuthStep::Continue(data) => {
                session.send_auth(auth_packet(
                    AuthReasonCode::ContinueAuthentication,
                    &method,
                    Some(data),
                ));
                self.extras().reauth = Some(exchange);
            }
            AuthStep::Fail(_) => session.close(DisconnectReasonCode::NotAuthorized, true),
        }
    }

    async fn refuse(&mut self, refused: Refused) {
        let Refused::ConnAck(version, code, explanation) = refused else {
            metrics::counter!(m::CONNECTS, "result" => "closed").increment(1);
            return;
        };
        metrics::counter!(m::CONNECTS, "result" => format!("{code:?}")).increment(1);
        tracing::debug!(%code, "CONNECT refused");
        let mut connack = ConnAck::new(code, false);
        connack.properties.reason_string =
            explanation.and_then(|text| MqttString::try_from(text).ok());
        let _ = Packet::ConnAck(Box::new(connack)).encode(version, &mut self.wbuf);
        self.write_and_close().await;
    }

    /// Finds or creates the session, taking it over from another connection if one holds
    /// it, and attaches this connection. Returns the slot and Session Present.
    async fn take_session(
        &mut self,
        connect: &Connect,
        client_id: MqttString,
    ) -> (Arc<SessionSlot>, bool) {
        let existing = self.broker.session(&client_id);
        let resume = !connect.clean_start && existing.is_some();
        if let Some(old) = &existing
            && !resume
        {
            // Its connection lets go before the session is replaced.
            take_over(&self.broker, old, 0).await;
        }
        let slot = match existing {
            Some(slot) if resume => slot,
            _ => self.broker.new_session(client_id),
        };
        // A new connection cancels a Will still waiting for its delay (§3.1.3.2.2).
        slot.cancel_will();
        self.attachment = next_attachment();
        take_over(&self.broker, &slot, self.attachment).await;
        (slot, resume)
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
        loop {
            // A QoS 2 message must be known as sent, with its identifier, before it leaves:
            // after a crash it is resent with that identifier and the client drops the copy.
            if self.fill_output(slot, version) {
                Box::pin(flush_store(&self.broker)).await;
            }
            self.release_idle_buffer();
            let woke = std::future::poll_fn(|cx| self.poll_wait(cx, slot)).await;
            let stats = &self.broker.stats;
            match woke {
                Woke::Kicked(reason) => {
                    if reason != DisconnectReasonCode::ServerShuttingDown
                        && reason != DisconnectReasonCode::SessionTakenOver
                    {
                        tracing::info!(%reason, "disconnected by the server");
                    }
                    // Wills are not published on a graceful shutdown.
                    let will = reason != DisconnectReasonCode::ServerShuttingDown;
                    slot.lock().close(reason, will);
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
                Woke::Wake => {}
            }
            let Some((done, needs_flush)) = self.take_events(slot, version, &mut recipients) else {
                continue;
            };
            let done = match needs_flush {
                // Boxed with the flush: the loop's state holds one pointer while it waits.
                true => Box::pin(flush_then(&self.broker, done)).await,
                false => done,
            };
            match self.complete_events(slot, done) {
                Ok(0) => {}
                // This read woke other connections: let them write before reading more,
                // or a flood of publishers starves its subscribers' tasks.
                Ok(_) => tokio::task::yield_now().await,
                Err(reason) => return reason,
            }
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
        loop {
            if published >= limit {
                return published;
            }
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(packet)) => {
                    if let Packet::Publish(p) = &packet {
                        published += 1;
                        Stats::add(&self.broker.stats.messages_received[p.qos() as usize], 1);
                    }
                    session.handle_packet(now, packet);
                    if session.closing().is_some() {
                        return published;
                    }
                }
                Ok(None) => return published,
                Err(e) => {
                    count_protocol_error(&e);
                    tracing::debug!(error = %e, "malformed packet");
                    session.close_explained(e.reason_code(), true, Some(&e.to_string()));
                    return published;
                }
            }
        }
    }

    /// Acts on what the session asked for: dispatches, subscribes, persists. Returns what
    /// is left to do once the store has flushed (`complete_events`) and whether it must
    /// flush first; `None` when there was nothing to do.
    fn take_events(
        &mut self,
        slot: &Arc<SessionSlot>,
        version: ProtocolVersion,
        recipients: &mut Option<Box<Recipients<u64>>>,
    ) -> Option<(Done, bool)> {
        let broker = Arc::clone(&self.broker);
        let events: Vec<Event> = {
            let mut session = slot.lock();
            std::iter::from_fn(|| session.poll_event()).collect()
        };
        if events.is_empty() {
            return None;
        }
        let mut woken = 0;
        let mut needs_flush = false;
        let mut acks: Vec<(PacketId, PubAckReasonCode)> = Vec::new();
        let mut subacks = Vec::new();
        let mut close = None;
        for event in events {
            match event {
                Event::Publish { message, packet_id } => {
                    if let Some(denied) = self.refuse_publish(&message.topic) {
                        if let Some(id) = packet_id {
                            // MQTT 3.1.1 has no reason codes: the message is dropped and
                            // acknowledged, and the connection stays (Mosquitto's way).
                            let reason = if version.is_v5() {
                                denied
                            } else {
                                PubAckReasonCode::Success
                            };
                            acks.push((id, reason));
                        }
                        continue;
                    }
                    let recipients = recipients.get_or_insert_with(|| Box::new(Recipients::new()));
                    let dispatched = broker.dispatch(&message, Some(slot.id), recipients);
                    needs_flush |= dispatched.needs_flush;
                    woken += dispatched.recipients;
                    if let Some(id) = packet_id {
                        let reason = if dispatched.recipients == 0 && version.is_v5() {
                            PubAckReasonCode::NoMatchingSubscribers
                        } else {
                            PubAckReasonCode::Success
                        };
                        acks.push((id, reason));
                    }
                }
                Event::Subscribe {
                    packet_id,
                    requests,
                } => {
                    subacks.push((packet_id, self.subscribe(slot, &requests)));
                }
                Event::Unsubscribed { filters } => {
                    let mut index = write(&broker.index);
                    for filter in &filters {
                        index.remove(slot.id, filter);
                    }
                }
                Event::Auth(auth) => self.reauthenticate(slot, auth),
                Event::Close(reason) => close = Some(reason),
            }
        }
        {
            let mut session = slot.lock();
            needs_flush |= broker.persist(&slot.client_id, &mut session);
        }
        let done = Done {
            acks,
            subacks,
            close,
            woken,
        };
        Some((done, needs_flush))
    }

    /// Answers what `take_events` handled, now that it is durable; returns how many
    /// deliveries it made, or the close reason once the connection ends.
    fn complete_events(&mut self, slot: &SessionSlot, done: Done) -> Result<usize, CloseReason> {
        let Done {
            acks,
            subacks,
            close,
            woken,
        } = done;
        let broker = &self.broker;
        let now = broker.now();
        let mut session = slot.lock();
        for (id, reason) in acks {
            session.handle_publish_done(id, reason);
        }
        for (packet_id, (results, retained)) in subacks {
            session.handle_subscribe_done(packet_id, results);
            for (message, qos, id) in retained {
                let _ = session.deliver(now, message, qos, true, id.into_iter().collect());
            }
        }
        broker.persist(&slot.client_id, &mut session);
        broker.count_drops(slot, &mut session);
        match close {
            Some(reason) => Err(reason),
            None => Ok(woken),
        }
    }

    /// Registers the requested subscriptions; returns the SUBACK results and the retained
    /// messages to send, per Retain Handling.
    fn subscribe(
        &mut self,
        slot: &Arc<SessionSlot>,
        requests: &[Option<SubscribeRequest>],
    ) -> Subscribed {
        let broker = Arc::clone(&self.broker);
        let now = broker.now();
        let mut results = Vec::with_capacity(requests.len());
        let mut retained = Vec::new();
        let limits = &broker.config.limits;
        let (mut existing, mut count) = {
            let session = slot.lock();
            let subs = session.subscriptions();
            let existing: Vec<MqttString> = match limits.max_subscriptions {
                Some(_) => subs.iter().map(|s| s.filter.clone()).collect(),
                None => Vec::new(),
            };
            (existing, subs.len())
        };
        for request in requests {
            let Some(request) = request else {
                results.push(Err(SubAckReasonCode::UnspecifiedError));
                continue;
            };
            let Some(inner) = acl_filter(&request.filter) else {
                results.push(Err(SubAckReasonCode::TopicFilterInvalid));
                continue;
            };
            if inner.split('/').count() > limits.max_topic_levels {
                results.push(Err(SubAckReasonCode::TopicFilterInvalid));
                continue;
            }
            let decision = match self.acl() {
                None => SubscribeDecision::Allow,
                Some(acl) => acl.subscribe(inner),
            };
            if decision == SubscribeDecision::Deny {
                metrics::counter!(m::ACL_DENIED, "action" => "subscribe").increment(1);
                tracing::debug!(filter = %request.filter, "subscription denied by the ACL");
                results.push(Err(SubAckReasonCode::NotAuthorized));
                continue;
            }
            if let Some(max) = limits.max_subscriptions {
                let replaces = existing.contains(&request.filter);
                if !replaces && count >= max {
                    results.push(Err(SubAckReasonCode::QuotaExceeded));
                    continue;
                }
                if !replaces {
                    // A filter repeated in this SUBSCRIBE replaces the first [MQTT-3.8.4-3].
                    existing.push(request.filter.clone());
                    count += 1;
                }
            }
            let filtered = decision == SubscribeDecision::Filtered;
            if filtered {
                slot.filter_with(self.acl().cloned());
            }
            let inserted = write(&broker.index).insert(
                slot.id,
                &request.filter,
                request.options,
                request.identifier,
            );
            match inserted {
                Ok(insertion) => {
                    results.push(Ok(request.options.qos));
                    let is_new = matches!(insertion, Insertion::New { .. });
                    let wanted = match request.options.retain_handling {
                        shoal_codec::RetainHandling::SendOnSubscribe => true,
                        shoal_codec::RetainHandling::SendIfNew => is_new,
                        shoal_codec::RetainHandling::DoNotSend => false,
                    };
                    // Retained messages are not sent for shared subscriptions (§4.8.2).
                    if wanted
                        && let Ok(FilterKind::Plain(filter)) = FilterKind::parse(&request.filter)
                    {
                        for message in broker.retained_for(filter, now) {
                            if filtered && !slot.may_receive(&message.topic) {
                                continue;
                            }
                            retained.push((message, request.options.qos, request.identifier));
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(filter = %request.filter, error = %e, "subscription refused");
                    results.push(Err(SubAckReasonCode::TopicFilterInvalid));
                }
            }
        }
        (results, retained)
    }

    /// Why a PUBLISH on `topic` is refused (too many levels, or the ACL), if it is.
    fn refuse_publish(&mut self, topic: &str) -> Option<PubAckReasonCode> {
        let max_levels = self.broker.config.limits.max_topic_levels;
        if topic.len() >= max_levels && topic.split('/').count() > max_levels {
            return Some(PubAckReasonCode::TopicNameInvalid);
        }
        let acl = self.acl()?;
        if acl.may_publish(topic) {
            return None;
        }
        metrics::counter!(m::ACL_DENIED, "action" => "publish").increment(1);
        tracing::debug!(topic, "publish denied by the ACL");
        Some(PubAckReasonCode::NotAuthorized)
    }

    /// Encodes what the session has to send, up to the high-water mark; returns whether
    /// the store must flush before it leaves (a QoS 2 PUBLISH was recorded as sent).
    fn fill_output(&mut self, slot: &SessionSlot, version: ProtocolVersion) -> bool {
        let broker = &self.broker;
        let mut qos2_sent = false;
        let wrote = {
            let now = broker.now();
            let mut session = slot.lock();
            while self.wbuf.len() < WRITE_HIGH_WATER {
                let Some(packet) = session.poll_transmit(now) else {
                    break;
                };
                if let Packet::Publish(p) = &packet {
                    qos2_sent |= p.qos() == QoS::ExactlyOnce;
                    Stats::add(&broker.stats.messages_sent[p.qos() as usize], 1);
                }
                if let Err(e) = packet.encode(version, &mut self.wbuf) {
                    tracing::warn!(error = %e, "a packet could not be encoded; dropped");
                }
            }
            broker.count_drops(slot, &mut session);
            broker.persist(&slot.client_id, &mut session)
        };
        wrote && qos2_sent
    }

    /// Sends what is left (DISCONNECT), detaches the session, schedules the Will.
    async fn finish(&mut self, slot: &Arc<SessionSlot>, reason: CloseReason) {
        let version = slot.lock().version().unwrap_or(ProtocolVersion::V3_1_1);
        {
            let mut session = slot.lock();
            while let Some(packet) = session.poll_transmit(self.broker.now()) {
                let _ = packet.encode(version, &mut self.wbuf);
            }
        }
        if reason.by != ClosedBy::Network {
            self.write_and_close().await;
        }
        slot.set_connected_as(None);
        let (will, persistent) = {
            let mut session = slot.lock();
            let will = session.detach(self.broker.now(), reason);
            self.broker.persist(&slot.client_id, &mut session);
            (will, session.is_persistent())
        };
        metrics::counter!(m::DISCONNECTS, "reason" => format!("{:?}", reason.reason), "by" => format!("{:?}", reason.by)).increment(1);
        tracing::debug!(reason = %reason.reason, by = ?reason.by, "disconnected");
        if let Some(will) = will {
            self.broker.schedule_will(slot, will);
        }
        // Still ours (not taken over)? Then a session that does not outlive its connection
        // ends here.
        if slot.detach(self.attachment) && !persistent {
            self.broker.discard(slot);
        }
    }
}

/// Hands a session to the connection numbered `attachment` (0: to none): the connection
/// serving it sees that it was taken over and ends. Waits until it has let go
/// (`TAKEOVER_TIMEOUT` at most), then attaches `attachment`.
///
/// Connections that let go signal `Broker::detached`, one notification for the whole node:
/// takeovers are rare, and a session then holds no signal of its own.
async fn take_over(broker: &Broker, slot: &SessionSlot, attachment: u32) {
    slot.hand_over(attachment);
    let deadline = tokio::time::Instant::now() + TAKEOVER_TIMEOUT;
    loop {
        let detached = broker.detached.notified();
        tokio::pin!(detached);
        detached.as_mut().enable();
        if slot.try_attach(attachment, false) {
            return;
        }
        if tokio::time::timeout_at(deadline, detached).await.is_err() {
            tracing::warn!("a taken-over connection did not let go of its session in time");
            slot.try_attach(attachment, true);
            return;
        }
    }
}

/// A number for a new attachment of a connection to a session: never 0, and unique among
/// the connections of one session (it wraps after 4 billion connections to the node).
fn next_attachment() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        if n != 0 {
            return n;
        }
    }
}

fn auth_packet(
    reason_code: AuthReasonCode,
    method: &MqttString,
    data: Option<bytes::Bytes>,
) -> shoal_codec::Auth {
    shoal_codec::Auth {
        reason_code,
        properties: shoal_codec::AuthProperties {
            authentication_method: Some(method.clone()),
            authentication_data: data,
            ..Default::default()
        },
    }
}

fn count_protocol_error(e: &DecodeError) {
    metrics::counter!(m::PROTOCOL_ERRORS, "rule" => e.rule()).increment(1);
}

/// Checks a CONNECT beyond the codec: client identifier rules, features the Will needs. Returns the client identifier to use and whether the server
/// assigned it.
fn check_connect(
    broker: &Broker,
    connect: &Connect,
) -> Result<(MqttString, bool), (ConnectReasonCode, &'static str)> {
    let config = &broker.config.session;
    if let Some(will) = &connect.will {
        if will.qos > config.maximum_qos {
            return Err((
                ConnectReasonCode::QosNotSupported,
                "Will QoS above the Maximum QoS",
            ));
        }
        if will.retain && !config.retain_available {
            return Err((
                ConnectReasonCode::RetainNotSupported,
                "Will Retain set but retain is not available",
            ));
        }
        if validate_topic_name(&will.topic).is_err() {
            return Err((
                ConnectReasonCode::TopicNameInvalid,
                "invalid Will topic (§4.7)",
            ));
        }
    }
    if connect.client_id.is_empty() {
        return match connect.protocol {
            // 3.1 needs an identifier of 1 to 23 characters; 3.1.1 allows an empty one with
            // a clean session only [MQTT-3.1.3-8].
            ProtocolVersion::V3_1 => Err((
                ConnectReasonCode::ClientIdentifierNotValid,
                "MQTT 3.1 needs a client identifier",
            )),
            ProtocolVersion::V3_1_1 if !connect.clean_start => Err((
                ConnectReasonCode::ClientIdentifierNotValid,
                "an empty client identifier needs a clean session [MQTT-3.1.3-8]",
            )),
            _ => Ok((assign_client_id(broker), true)),
        };
    }
    if connect.protocol == ProtocolVersion::V3_1 && connect.client_id.len() > 23 {
        return Err((
            ConnectReasonCode::ClientIdentifierNotValid,
            "MQTT 3.1 allows 23 characters of client identifier",
        ));
    }
    Ok((connect.client_id.clone(), false))
}

/// A client identifier that no client chose: unique on this node.
fn assign_client_id(broker: &Broker) -> MqttString {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = format!("shoal-{:x}-{n:x}", broker.clock.now().as_millis());
    MqttString::try_from(id).expect("hex digits and a dash are a valid MQTT string")
}

/// The filter the ACL judges: a shared subscription's inner filter; `None` if invalid.
fn acl_filter(filter: &str) -> Option<&str> {
    match FilterKind::parse(filter).ok()? {
        FilterKind::Plain(filter) => Some(filter),
        FilterKind::Shared { filter, .. } => Some(filter),
    }
}

/// The SUBACK results of one SUBSCRIBE and the retained messages to send after it.
type Subscribed = (
    Vec<Result<QoS, SubAckReasonCode>>,
    Vec<(
        Arc<shoal_session::Message>,
        QoS,
        Option<std::num::NonZeroU32>,
    )>,
);

/// What a batch of session events leaves to do once the store has flushed.
struct Done {
    acks: Vec<(PacketId, PubAckReasonCode)>,
    subacks: Vec<(PacketId, Subscribed)>,
    close: Option<CloseReason>,
    woken: usize,
}

/// A connection's compiled ACL, for its client id and `Conn::username`.
struct ConnAcl {
    generation: u64,
    acl: ClientAcl,
    client_id: String,
}

/// The per-client publish rate: token buckets of packets and bytes, each holding one
/// second's worth. When one runs dry the connection stops reading until it has refilled,
/// so TCP pushes back on the client instead of the broker dropping its messages.
struct Throttle {
    packets: Option<Bucket>,
    bytes: Option<Bucket>,
    /// While reading is paused: when it resumes.
    resume: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Throttle {
    fn new(limits: &crate::config::ClientLimits) -> Option<Self> {
        let packets = limits.publish_rate.map(|r| Bucket::new(f64::from(r)));
        let bytes = limits.publish_bytes_rate.map(|r| Bucket::new(r as f64));
        (packets.is_some() || bytes.is_some()).then_some(Self {
            packets,
            bytes,
            resume: None,
        })
    }

    /// How many PUBLISH packets may be handled now (at least one when not paused).
    fn allowance(&mut self, now: tokio::time::Instant) -> usize {
        match &mut self.packets {
            Some(bucket) => bucket.available(now).max(0.0) as usize,
            None => usize::MAX,
        }
    }

    /// Accounts for `published` PUBLISH packets and `bytes` read; pauses reading until both
    /// buckets allow at least one more packet.
    fn take(&mut self, now: tokio::time::Instant, published: usize, bytes: usize) {
        let wait = [
            self.packets.as_mut().map(|b| b.take(now, published as f64)),
            self.bytes.as_mut().map(|b| b.take(now, bytes as f64)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default();
        if !wait.is_zero() {
            self.resume = Some(Box::pin(tokio::time::sleep_until(now + wait)));
        }
    }
}

struct Bucket {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: rate,
            at: tokio::time::Instant::now(),
        }
    }

    /// The tokens there are now.
    fn available(&mut self, now: tokio::time::Instant) -> f64 {
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        self.tokens
    }

    /// Takes `n` tokens (going into debt if need be); returns how long until the bucket
    /// holds a whole token again.
    fn take(&mut self, now: tokio::time::Instant, n: f64) -> Duration {
        self.available(now);
        self.tokens -= n;
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

/// Waits for the store to flush, then hands `done` back.
async fn flush_then(broker: &Broker, done: Done) -> Done {
    flush_store(broker).await;
    done
}

/// Waits for the store to make everything written so far durable.
async fn flush_store(broker: &Broker) {
    match broker.store.flush().await {
        Ok(receipt) => {
            metrics::histogram!(m::STORE_FLUSH_SECONDS).record(receipt.duration.as_secs_f64());
        }
        Err(e) => {
            tracing::error!(error = %e, "store flush failed: acknowledgements are not durable")
        }
    }
}
