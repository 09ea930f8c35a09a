//! CONNECT: reading and checking it, authentication (the chain and enhanced
//! authentication), authorization of the Will, refusals.

use std::sync::Arc;

use shoal_access::chain::{Busy, Credentials, Rejection, Verdict};
use shoal_codec::{
    AuthReasonCode, ConnAck, Connect, ConnectReasonCode, DecodeError, DisconnectReasonCode,
    MqttString, Packet, ProtocolVersion,
};
use shoal_session::AttachOptions;
use shoal_topic::validate_topic_name;

use super::{Conn, ConnAcl, Refused, Transport, count_protocol_error};
use crate::auth::AuthStep;
use crate::broker::Broker;
use crate::metrics as m;
use crate::slot::SessionSlot;
use crate::stats::Stats;

/// How long a new connection has to send CONNECT.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl<T: Transport> Conn<T> {
    /// CONNECT: reads and checks it, authenticates, authorizes, takes the session and
    /// attaches; `None` when the connection was refused or closed.
    pub(super) async fn open(&mut self) -> Option<(Arc<SessionSlot>, ProtocolVersion)> {
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
            .or_else(|| self.broker.flapped(&client_id));
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
        if let Some(refused) = self.check_owner(&connect, &client_id) {
            self.refuse(refused).await;
            return None;
        }
        if self.broker.is_isolated() {
            const WHY: &str = "this node is cut off from its cluster: connect to another node";
            let refused = match self.broker.cluster().and_then(|c| c.server_reference()) {
                Some(server) => Refused::Redirect(version, server, WHY),
                None => Refused::ConnAck(version, ConnectReasonCode::ServerBusy, Some(WHY.into())),
            };
            self.refuse(refused).await;
            return None;
        }
        // In a cluster, the client id is claimed cluster-wide first: a connection holding it
        // on another node is closed (0x8E) before this CONNACK.
        // A persistent session another node held is taken up from this node's replica of
        // the session group (`broker/moves.rs`).
        let epoch = match self.broker.cluster() {
            Some(cluster) => {
                match claim_in_cluster(&self.broker, cluster, connect.clean_start, &client_id).await
                {
                    Ok(epoch) => epoch,
                    Err(why) => {
                        tracing::warn!(error = %why, "the cluster did not register the client id");
                        self.refuse(Refused::ConnAck(
                            version,
                            ConnectReasonCode::ServerUnavailable,
                            Some("the cluster did not register the client id".into()),
                        ))
                        .await;
                        return None;
                    }
                }
            }
            None => 0,
        };
        let Some((slot, present)) = self.take_session(&connect, client_id.clone()).await else {
            self.taken_over_at_once(version).await;
            return None;
        };
        slot.set_epoch(epoch);
        if !present || slot.owner().is_none() {
            slot.set_owner(self.username.as_deref());
        }
        let now = self.broker.now();
        {
            let mut session = slot.lock();
            let options = AttachOptions {
                session_present: present,
                assigned_client_id: assigned.then(|| client_id.clone()),
                authentication,
            };
            // Judged before `attach` queues the resends of what is in flight: a session
            // that changes hands sends nothing the new client may not receive.
            self.filter_resumed(&slot, &mut session);
            session.attach(now, &connect, options);
            self.broker.keep_alive.watch(&slot, session.poll_timeout());
            // CONNACK confirms a stored session: `fill_output` waits before it leaves.
            self.unflushed = self.broker.persist(&slot, &mut session);
        }
        // Checked after `filter_resumed` (which clears earlier kicks of the slot): another
        // node that claimed the client id after this CONNECT did recorded its epoch before
        // it asked this node to close the connection, so either the check sees it or the
        // kick comes after and stays.
        if let Some(cluster) = self.broker.cluster()
            && cluster.overtaken(&client_id, epoch)
        {
            // This connection ends as a taken-over one, right after its CONNACK.
            slot.kick(DisconnectReasonCode::SessionTakenOver);
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
    pub(super) async fn check_credentials(
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
            Rejection::Busy(busy) => {
                let (label, why) = match busy {
                    Busy::UserLimit => (
                        "user_limit",
                        "too many failed logins for this user name: try again later",
                    ),
                    Busy::AddressLimit => (
                        "address_limit",
                        "too many failed logins from this address: try again later",
                    ),
                    // Refused at once: the node is busy, this client did nothing wrong.
                    Busy::HashQueueFull => {
                        metrics::counter!(m::AUTH_FAILURES, "reason" => "hash_queue_full")
                            .increment(1);
                        tracing::debug!("authentication refused: hashing queue full");
                        return Err(Refused::ConnAck(
                            connect.protocol,
                            ConnectReasonCode::ServerBusy,
                            Some("too many logins being checked: try again later".into()),
                        ));
                    }
                };
                (ConnectReasonCode::ServerBusy, label, why)
            }
        };
        metrics::counter!(m::AUTH_FAILURES, "reason" => label).increment(1);
        if code == ConnectReasonCode::ServerBusy {
            // A guessing flood must not flood the log: counted, logged at debug.
            tracing::debug!(by = decision.by, reason = label, "authentication refused");
        } else {
            tracing::info!(by = decision.by, reason = label, "authentication failed");
        }
        // Each failure from an address makes its next answers slower: guessing gets slow,
        // and every refusal of one address takes the same time whatever the user name.
        // Guesses refused by their bounds wait too: a guesser learns nothing sooner.
        let delay = self.broker.access.failed(self.peer.addr.ip());
        tokio::time::sleep(delay).await;
        Err(Refused::ConnAck(connect.protocol, code, Some(why.into())))
    }

    /// Compiles the client's ACL and checks its Will; `Some` refuses the CONNECT.
    pub(super) fn authorize(
        &mut self,
        connect: &Connect,
        client_id: &MqttString,
    ) -> Option<Refused> {
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
            // Without ACL rules, `$` topics stay the broker's: no Will there either.
            if let Some(will) = &connect.will
                && crate::limits::is_reserved(&will.topic)
            {
                metrics::counter!(m::ACL_DENIED, "action" => "will").increment(1);
                return Some(Refused::ConnAck(
                    connect.protocol,
                    ConnectReasonCode::NotAuthorized,
                    Some(format!(
                        "the Will topic {:?} is reserved to the broker",
                        will.topic.as_str()
                    )),
                ));
            }
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

    /// With `bind_client_id_to_username`, refuses a client whose username is not the one
    /// that created the session of its client id (CONNACK 0x87, 3.1.1 return code 5),
    /// whether it resumes the session or starts clean: another user may neither read the
    /// session nor throw its owner off.
    pub(super) fn check_owner(&self, connect: &Connect, client_id: &MqttString) -> Option<Refused> {
        if !self.broker.config.bind_client_id_to_username {
            return None;
        }
        let owner = self.broker.session(client_id)?.owner()?;
        if owner == self.username {
            return None;
        }
        metrics::counter!(m::AUTH_FAILURES, "reason" => "client_id_owner").increment(1);
        tracing::info!("CONNECT refused: the client id belongs to another user");
        Some(Refused::ConnAck(
            connect.protocol,
            ConnectReasonCode::NotAuthorized,
            Some("this client identifier belongs to another user".into()),
        ))
    }

    /// A resumed session under this connection's ACL: its subscriptions are judged again
    /// (deliveries are checked when one reaches denied topics) and queued messages the ACL
    /// keeps from the client are dropped (they may have queued under older rules, or before
    /// a restart, when the session's identity was not known).
    pub(super) fn filter_resumed(
        &mut self,
        slot: &SessionSlot,
        session: &mut shoal_session::Session,
    ) {
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
    pub(super) async fn read_connect(&mut self) -> Result<Connect, Refused> {
        match self.read_packet().await? {
            Packet::Connect(connect) => Ok(*connect),
            _ => Err(Refused::Close),
        }
    }

    /// Reads one whole packet, before the session is attached.
    pub(super) async fn read_packet(&mut self) -> Result<Packet, Refused> {
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
    pub(super) async fn authenticate(
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
    pub(super) fn reauthenticate(&mut self, slot: &SessionSlot, auth: shoal_codec::Auth) {
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

    /// A later CONNECT with the same client id claimed the session before this one could
    /// attach: this connection is taken over before it began. It is answered as a taken-over
    /// connection is (CONNACK, then DISCONNECT 0x8E where MQTT 5 allows), and closed.
    async fn taken_over_at_once(&mut self, version: ProtocolVersion) {
        metrics::counter!(m::CONNECTS, "result" => "taken_over").increment(1);
        tracing::debug!("taken over by a concurrent CONNECT before it attached");
        let connack = ConnAck::new(ConnectReasonCode::Success, false);
        let _ = Packet::ConnAck(Box::new(connack)).encode(version, &mut self.wbuf);
        if version.is_v5() {
            let disconnect = shoal_codec::Disconnect::new(DisconnectReasonCode::SessionTakenOver);
            let _ = Packet::Disconnect(disconnect).encode(version, &mut self.wbuf);
        }
        self.write_and_close().await;
    }

    pub(super) async fn refuse(&mut self, refused: Refused) {
        let (version, code, explanation, server) = match refused {
            Refused::ConnAck(version, code, explanation) => (version, code, explanation, None),
            Refused::Redirect(version, server, why) => (
                version,
                ConnectReasonCode::UseAnotherServer,
                Some(why.to_owned()),
                Some(server),
            ),
            Refused::Close => {
                metrics::counter!(m::CONNECTS, "result" => "closed").increment(1);
                return;
            }
        };
        metrics::counter!(m::CONNECTS, "result" => format!("{code:?}")).increment(1);
        tracing::debug!(%code, "CONNECT refused");
        let mut connack = ConnAck::new(code, false);
        connack.properties.reason_string =
            explanation.and_then(|text| MqttString::try_from(text).ok());
        connack.properties.server_reference =
            server.and_then(|server| MqttString::try_from(server).ok());
        let _ = Packet::ConnAck(Box::new(connack)).encode(version, &mut self.wbuf);
        self.write_and_close().await;
    }
}

pub(super) fn auth_packet(
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

/// Checks a CONNECT beyond the codec: client identifier rules, features the Will needs. Returns the client identifier to use and whether the server
/// assigned it.
pub(super) fn check_connect(
    broker: &Broker,
    connect: &Connect,
) -> Result<(MqttString, bool), (ConnectReasonCode, &'static str)> {
    let config = &broker.config.session;
    if let Some(cap) = config.max_keep_alive
        && !connect.protocol.is_v5()
        && (connect.keep_alive == 0 || connect.keep_alive > cap)
    {
        // MQTT 3.1.1 has no Server Keep Alive to tell the client the cap (Mosquitto's
        // answer).
        return Err((
            ConnectReasonCode::ClientIdentifierNotValid,
            "keep alive above max_keep_alive (or 0), which MQTT 3.1.1 cannot be told",
        ));
    }
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
pub(super) fn assign_client_id(broker: &Broker) -> MqttString {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = format!("shoal-{:x}-{n:x}", broker.clock.now().as_millis());
    MqttString::try_from(id).expect("hex digits and a dash are a valid MQTT string")
}

/// Claims `client_id` cluster-wide (a connection holding it on another node is closed,
/// 0x8E, before this CONNACK) and takes its session up if another node held it;
/// returns the claim's epoch.
async fn claim_in_cluster(
    broker: &Broker,
    cluster: &shoal_cluster::Cluster,
    clean_start: bool,
    client_id: &MqttString,
) -> Result<u64, String> {
    let timeout = broker.config.cluster.route_timeout;
    let (placeholder, held) = broker.hold_routes(cluster, client_id);
    if !crate::broker::wait_all(held, timeout).await {
        tracing::debug!(%client_id, "a route of a session on its way here was not confirmed");
    }
    let taken = async {
        let (epoch, previous) = cluster
            .claim_owner(client_id)
            .await
            .map_err(|e| e.to_string())?;
        let routes = broker
            .take_up(cluster, client_id, clean_start, epoch, previous, false)
            .await?;
        if !crate::broker::wait_all(routes, timeout).await {
            return Err("the routes of a session taken up were not confirmed".to_owned());
        }
        Ok(epoch)
    }
    .await;
    broker.drop_placeholder(placeholder);
    taken
}
