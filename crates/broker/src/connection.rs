//! The connection driver: one task per client connection. It reads and decodes packets,
//! feeds them to the session, acts on the session's events (dispatch, subscriptions,
//! durability), and writes what the session has to send, all in one `select!` loop.

use std::sync::Arc;
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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::auth::{AuthExchange, AuthStep};
use crate::broker::{Broker, write};
use crate::listener::Peer;
use crate::metrics as m;
use crate::slot::{Attachment, SessionSlot};
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

/// The read half of a connection.
pub(crate) trait Source: AsyncRead + Unpin + Send {
    /// Whether the transport can wait for data without a buffer: then an idle connection
    /// holds no read buffer at all.
    const WAITS_WITHOUT_BUFFER: bool;

    /// Reads into `buf`, first making room for `want` more bytes (once data is ready, when
    /// the transport can tell); returns the bytes read and the room there was.
    fn read_into<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
        want: usize,
    ) -> impl Future<Output = std::io::Result<(usize, usize)>> + Send + 'a;
}

/// Makes room for `want` more bytes; returns the room there is.
fn make_room(buf: &mut BytesMut, want: usize) -> usize {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    buf.capacity() - buf.len()
}

impl Source for tokio::net::tcp::OwnedReadHalf {
    const WAITS_WITHOUT_BUFFER: bool = true;

    async fn read_into(
        &mut self,
        buf: &mut BytesMut,
        want: usize,
    ) -> std::io::Result<(usize, usize)> {
        loop {
            self.readable().await?;
            let room = make_room(buf, want);
            match self.try_read_buf(buf) {
                Ok(n) => return Ok((n, room)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<T: AsyncRead + Send> Source for tokio::io::ReadHalf<T> {
    const WAITS_WITHOUT_BUFFER: bool = false;

    async fn read_into(
        &mut self,
        buf: &mut BytesMut,
        want: usize,
    ) -> std::io::Result<(usize, usize)> {
        let room = make_room(buf, want);
        self.read_buf(buf).await.map(|n| (n, room))
    }
}

/// A connection's stream, split into halves that the driver reads and writes on its own.
pub(crate) trait Halves: Send {
    /// The read half.
    type Read: Source;
    /// The write half.
    type Write: AsyncWrite + Unpin + Send;
    /// Splits the stream.
    fn halves(self) -> (Self::Read, Self::Write);
}

/// Plain TCP splits without a lock: each half holds the socket, and reads and writes need
/// no coordination (tokio's generic `split` takes a lock on every read and write).
impl Halves for tokio::net::TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;

    fn halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

/// Every other transport (TLS, WebSocket, QUIC, PROXY) is one state machine that both
/// halves share.
impl<'a> Halves for Box<dyn crate::listener::Io + 'a> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;

    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// Serves one client connection until it ends.
pub(crate) async fn serve<S: Halves>(broker: Arc<Broker>, stream: S, peer: Peer) {
    let span = tracing::debug_span!("conn", peer = %peer.addr, listener = %peer.listener().name, client_id = tracing::field::Empty);
    async move {
        let (reader, writer) = stream.halves();
        let mut conn = Conn {
            broker,
            reader,
            writer,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            read_size: MIN_READ,
            decoder: Decoder::new(0),
            reauth: None,
            throttle: None,
            username: None,
            peer,
            acl: None,
        };
        conn.decoder = Decoder::new(conn.broker.config.session.maximum_packet_size);
        conn.throttle = Throttle::new(&conn.broker.config.limits).map(Box::new);
        conn.run().await;
    }
    .instrument(span)
    .await;
}

struct Conn<R, W> {
    broker: Arc<Broker>,
    reader: R,
    writer: W,
    rbuf: BytesMut,
    wbuf: BytesMut,
    decoder: Decoder,
    /// A re-authentication exchange waiting for the client's next AUTH.
    reauth: Option<Box<dyn AuthExchange>>,
    /// Who is connected, through which listener.
    peer: Peer,
    /// The client's ACL, once authenticated (`None`: the node has no ACL).
    acl: Option<Box<ConnAcl>>,
    /// The publish rate limit, when configured.
    throttle: Option<Box<Throttle>>,
    /// The username the client was authenticated as.
    username: Option<String>,
    /// How much the next read asks for: grows while reads fill it, shrinks when they do
    /// not, so an idle connection holds a small buffer and a busy one reads in bulk.
    read_size: usize,
}

/// Why the CONNECT phase ended without a session.
enum Refused {
    /// Answer with this CONNACK, in this version (MQTT 5: with this Reason String), then
    /// close.
    ConnAck(ProtocolVersion, ConnectReasonCode, Option<String>),
    /// Just close.
    Close,
}

impl<R, W> Conn<R, W>
where
    R: Source,
    W: AsyncWrite + Unpin + Send,
{
    async fn run(&mut self) {
        // The CONNECT phase and the close are boxed: their futures are large and short-lived,
        // and an idle connection's task should hold only the serving loop's state.
        let Some((slot, version, kick, detached)) = Box::pin(self.open()).await else {
            return;
        };
        let reason = self.serve_session(&slot, version, kick).await;
        Box::pin(self.finish(&slot, reason)).await;
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
        self.broker
            .stats
            .connected
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let _ = detached.send(());
    }

    /// CONNECT: reads and checks it, authenticates, authorizes, takes the session and
    /// attaches; `None` when the connection was refused or closed.
    #[allow(clippy::type_complexity)]
    async fn open(
        &mut self,
    ) -> Option<(
        Arc<SessionSlot>,
        ProtocolVersion,
        oneshot::Receiver<DisconnectReasonCode>,
        oneshot::Sender<()>,
    )> {
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
        let (slot, kick, detached, present) =
            self.take_session(&connect, client_id.clone()).await?;
        let now = self.broker.now();
        {
            let mut session = slot.lock();
            let options = AttachOptions {
                session_present: present,
                assigned_client_id: assigned.then(|| client_id.clone()),
                authentication,
            };
            session.attach(now, &connect, options);
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
        Some((slot, version, kick, detached))
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
        self.acl = Some(Box::new(ConnAcl {
            generation,
            acl,
            client_id: client_id.as_str().to_owned(),
        }));
        None
    }

    /// The client's ACL, recompiled if the ACL file was reloaded; `None` when unrestricted.
    fn acl(&mut self) -> Option<&ClientAcl> {
        let conn = self.acl.as_mut()?;
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
        let username = self.acl.as_ref().map(|_| self.username.clone());
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
            self.reserve_read();
            match self.reader.read_buf(&mut self.rbuf).await {
                Ok(0) | Err(_) => return Err(Refused::Close),
                Ok(n) => Stats::add(&self.broker.stats.bytes_received, n as u64),
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
                    if self.writer.write_all_buf(&mut self.wbuf).await.is_err() {
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
        let exchange = match (auth.reason_code, self.reauth.take()) {
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
                self.reauth = Some(exchange);
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
        let _ = tokio::time::timeout(
            CLOSE_FLUSH_TIMEOUT,
            self.writer.write_all_buf(&mut self.wbuf),
        )
        .await;
        let _ = self.writer.shutdown().await;
    }

    /// Finds or creates the session, taking it over from another connection if one holds
    /// it. Returns the slot, the kick receiver, the detach signal and Session Present.
    async fn take_session(
        &mut self,
        connect: &Connect,
        client_id: MqttString,
    ) -> Option<(
        Arc<SessionSlot>,
        oneshot::Receiver<DisconnectReasonCode>,
        oneshot::Sender<()>,
        bool,
    )> {
        let existing = self.broker.session(&client_id);
        if let Some(old) = &existing {
            release(old).await;
        }
        let resume = !connect.clean_start && existing.is_some();
        let slot = match existing {
            Some(slot) if resume => slot,
            _ => self.broker.new_session(client_id),
        };
        // A new connection cancels a Will still waiting for its delay (§3.1.3.2.2).
        slot.cancel_will();
        let (kick_tx, kick_rx) = oneshot::channel();
        let (detached_tx, detached_rx) = oneshot::channel();
        let previous = crate::broker::lock(&slot.attachment).replace(Attachment {
            kick: kick_tx,
            detached: detached_rx,
        });
        if let Some(previous) = previous {
            // Another connection got in between: it goes.
            kick_and_wait(previous).await;
        }
        Some((slot, kick_rx, detached_tx, resume))
    }

    /// The main loop: returns why the connection ends.
    async fn serve_session(
        &mut self,
        slot: &Arc<SessionSlot>,
        version: ProtocolVersion,
        mut kick: oneshot::Receiver<DisconnectReasonCode>,
    ) -> CloseReason {
        let broker = Arc::clone(&self.broker);
        // Made on the first PUBLISH: a client that only listens never needs it.
        let mut recipients: Option<Box<Recipients<u64>>> = None;
        // One timer for the connection, moved when the keep-alive deadline moves.
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let timer = tokio::time::sleep_until(far());
        tokio::pin!(timer);
        let mut armed: Option<std::time::Instant> = None;
        loop {
            let deadline = self
                .fill_output(slot, version)
                .await
                .map(|at| broker.clock.instant(at));
            if deadline != armed {
                timer.as_mut().reset(deadline.map_or_else(far, Into::into));
                armed = deadline;
            }
            let mut network_gone = false;
            self.release_idle_buffer();
            let paused = self.throttle.as_ref().and_then(|t| t.paused_until);
            let resume = async move {
                match paused {
                    Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                reason = &mut kick => {
                    let reason = reason.unwrap_or(DisconnectReasonCode::SessionTakenOver);
                    slot.lock().close(reason, reason == DisconnectReasonCode::SessionTakenOver);
                }
                read = self.reader.read_into(&mut self.rbuf, self.read_size), if paused.is_none() => match read {
                    Ok((0, _)) | Err(_) => network_gone = true,
                    Ok((n, room)) => {
                        Stats::add(&broker.stats.bytes_received, n as u64);
                        self.adapt_read(n, room);
                        self.handle_throttled(slot, n);
                    }
                },
                () = resume => {
                    if let Some(throttle) = &mut self.throttle {
                        throttle.paused_until = None;
                    }
                    // Packets held back by the rate come first.
                    self.handle_throttled(slot, 0);
                }
                written = self.writer.write_buf(&mut self.wbuf), if !self.wbuf.is_empty() => match written {
                    Ok(0) | Err(_) => network_gone = true,
                    Ok(n) => {
                        Stats::add(&broker.stats.bytes_sent, n as u64);
                        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_WRITE_BUFFER {
                            self.wbuf = BytesMut::new();
                        }
                    }
                },
                () = slot.wake.notified() => {
                    // The node shutting down, or a ban: both arrive as a kick, so the loop
                    // has no per-turn wait on a channel shared by every connection.
                    if let Some(reason) = slot.take_kick() {
                        let shutting_down = reason == DisconnectReasonCode::ServerShuttingDown;
                        if !shutting_down {
                            tracing::info!(%reason, "disconnected by the server");
                        }
                        // Wills are not published on a graceful shutdown.
                        slot.lock().close(reason, !shutting_down);
                    }
                }
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    slot.lock().handle_timeout(broker.now());
                }
            }
            if network_gone {
                return CloseReason {
                    reason: DisconnectReasonCode::UnspecifiedError,
                    publish_will: true,
                    by: ClosedBy::Network,
                };
            }
            match self.handle_events(slot, version, &mut recipients).await {
                Ok(0) => {}
                // This read woke other connections: let them write before reading more,
                // or a flood of publishers starves its subscribers' tasks.
                Ok(_) => tokio::task::yield_now().await,
                Err(reason) => return reason,
            }
        }
    }

    /// Makes room for the next read; returns how much there is.
    fn reserve_read(&mut self) -> usize {
        self.release_idle_buffer();
        make_room(&mut self.rbuf, self.read_size)
    }

    /// Gives back an empty read buffer that the connection does not need while it waits:
    /// what a busy spell left it, and, where the transport can wait without one, the whole
    /// buffer of a connection reading little (an idle client holds none).
    fn release_idle_buffer(&mut self) {
        if !self.rbuf.is_empty() || self.rbuf.capacity() == 0 {
            return;
        }
        let quiet = R::WAITS_WITHOUT_BUFFER && self.read_size == MIN_READ;
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
        let Some(throttle) = &mut self.throttle else {
            self.handle_input(slot, usize::MAX);
            return;
        };
        let now = tokio::time::Instant::now();
        let allowance = throttle.allowance(now);
        let published = self.handle_input(slot, allowance);
        if let Some(throttle) = &mut self.throttle {
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

    /// Acts on what the session asked for; returns how many deliveries it made, or the
    /// close reason once the connection ends.
    async fn handle_events(
        &mut self,
        slot: &Arc<SessionSlot>,
        version: ProtocolVersion,
        recipients: &mut Option<Box<Recipients<u64>>>,
    ) -> Result<usize, CloseReason> {
        let broker = Arc::clone(&self.broker);
        let events: Vec<Event> = {
            let mut session = slot.lock();
            std::iter::from_fn(|| session.poll_event()).collect()
        };
        if events.is_empty() {
            return Ok(0);
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
        if needs_flush {
            Box::pin(flush_store(&self.broker)).await;
        }
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
    #[allow(clippy::type_complexity)]
    fn subscribe(
        &mut self,
        slot: &Arc<SessionSlot>,
        requests: &[Option<SubscribeRequest>],
    ) -> (
        Vec<Result<QoS, SubAckReasonCode>>,
        Vec<(
            Arc<shoal_session::Message>,
            QoS,
            Option<std::num::NonZeroU32>,
        )>,
    ) {
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

    /// Encodes what the session has to send, up to the high-water mark; returns when the
    /// session next needs `handle_timeout`.
    async fn fill_output(
        &mut self,
        slot: &Arc<SessionSlot>,
        version: ProtocolVersion,
    ) -> Option<shoal_session::Timestamp> {
        let broker = Arc::clone(&self.broker);
        let mut qos2_sent = false;
        let (wrote, deadline) = {
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
            (
                broker.persist(&slot.client_id, &mut session),
                session.poll_timeout(),
            )
        };
        // A QoS 2 message must be known as sent, with its identifier, before it leaves:
        // after a crash it is resent with that identifier and the client drops the copy.
        if wrote && qos2_sent {
            Box::pin(flush_store(&self.broker)).await;
        }
        deadline
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
            let _ = tokio::time::timeout(
                CLOSE_FLUSH_TIMEOUT,
                self.writer.write_all_buf(&mut self.wbuf),
            )
            .await;
            let _ = self.writer.shutdown().await;
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
        let ours = crate::broker::lock(&slot.attachment).take();
        if ours.is_some() && !persistent {
            self.broker.discard(slot);
        }
    }
}

/// Takes a session's connection away: kicks it and waits for it to let go.
async fn release(slot: &SessionSlot) {
    let attachment = crate::broker::lock(&slot.attachment).take();
    if let Some(attachment) = attachment {
        kick_and_wait(attachment).await;
    }
}

async fn kick_and_wait(attachment: Attachment) {
    let _ = attachment.kick.send(DisconnectReasonCode::SessionTakenOver);
    if tokio::time::timeout(TAKEOVER_TIMEOUT, attachment.detached)
        .await
        .is_err()
    {
        tracing::warn!("a taken-over connection did not let go of its session in time");
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
    paused_until: Option<tokio::time::Instant>,
}

impl Throttle {
    fn new(limits: &crate::config::ClientLimits) -> Option<Self> {
        let packets = limits.publish_rate.map(|r| Bucket::new(f64::from(r)));
        let bytes = limits.publish_bytes_rate.map(|r| Bucket::new(r as f64));
        (packets.is_some() || bytes.is_some()).then_some(Self {
            packets,
            bytes,
            paused_until: None,
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
            self.paused_until = Some(now + wait);
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
