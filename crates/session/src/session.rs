//! `Session`: the state machine of one client's session: its persistent part (subscriptions,
//! queue, QoS flows) and, while a client is connected, its link (keep alive, topic aliases,
//! flow control). Sans-IO: packets and time in, packets, events and changes out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroU16;
use std::sync::Arc;

use shoal_codec::{
    ConnAck, ConnAckProperties, Connect, ConnectReasonCode, Disconnect, DisconnectProperties,
    DisconnectReasonCode, MqttString, Packet, PacketId, ProtocolVersion, PubRel, QoS,
    SubAckReasonCode,
};

use crate::config::SessionConfig;
use crate::event::{Change, CloseReason, ClosedBy, Event, SubscribeRequest};
use crate::message::Message;
use crate::record::{NEVER_EXPIRES, OutboundMessage, OutboundState, SessionRecord, WillRecord};
use crate::time::Timestamp;

/// Counts of messages a session dropped, by cause, since the last `take_drops`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// The queue was at its message or byte limit.
    pub queue_full: u32,
    /// The message expired before it could be sent.
    pub expired: u32,
    /// The message was larger than the client's Maximum Packet Size [MQTT-3.1.2-25].
    pub too_large: u32,
    /// QoS 0 for an offline session, which does not queue them.
    pub qos0_offline: u32,
}

impl DropCounts {
    /// The total.
    pub fn total(&self) -> u64 {
        [
            self.queue_full,
            self.expired,
            self.too_large,
            self.qos0_offline,
        ]
        .into_iter()
        .map(u64::from)
        .sum()
    }
}

/// What `Session::deliver` did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued to send (now, or when the client is back or has room).
    Queued,
    /// Dropped: the queue is full.
    QueueFull,
    /// Dropped: QoS 0 to an offline session that does not queue them.
    Offline,
    /// Dropped: already expired.
    Expired,
}

/// Decisions the broker took about a CONNECT, for `Session::attach`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// Whether an existing session is resumed (Session Present).
    pub session_present: bool,
    /// The identifier the server assigned, when the client sent an empty one.
    pub assigned_client_id: Option<MqttString>,
    /// Authentication Method and Data to return in CONNACK (enhanced authentication).
    pub authentication: Option<(MqttString, Option<bytes::Bytes>)>,
}

/// The state of one connected client, dropped when its connection ends.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) version: ProtocolVersion,
    /// The keep alive in force, seconds (0: none).
    pub(crate) keep_alive: u16,
    pub(crate) last_received: Timestamp,
    /// The client's Receive Maximum: QoS 1/2 messages we may have unacknowledged.
    pub(crate) receive_maximum: u16,
    /// The client's Maximum Packet Size.
    pub(crate) maximum_packet_size: u32,
    /// Topic aliases we may use towards the client.
    pub(crate) outbound_alias_max: u16,
    /// The topic aliases in use, once one is (most clients never use them).
    pub(crate) aliases: Option<Box<Aliases>>,
    /// QoS 1/2 messages from the client that we have not acknowledged yet, with their QoS.
    pub(crate) unacked: IdMap<QoS>,
    /// How many of `unacked` are QoS 2 (they are in `Session::incoming_qos2` too).
    pub(crate) unacked_qos2: u16,
    /// Whether the CONNECT had Session Expiry Interval 0 ([MQTT-3.14.2-2]).
    pub(crate) connected_with_zero_expiry: bool,
    /// The Authentication Method of CONNECT, for re-authentication.
    pub(crate) authentication_method: Option<Box<MqttString>>,
}

/// The topic aliases of a connection, both ways.
#[derive(Debug, Default)]
pub(crate) struct Aliases {
    /// Topic aliases we use towards the client.
    pub(crate) outbound: HashMap<MqttString, NonZeroU16>,
    /// Topic aliases the client set towards us.
    pub(crate) inbound: HashMap<u16, MqttString>,
}

/// Hashes a packet identifier by multiplying it (Fibonacci hashing): identifiers are small
/// distinct integers, and maps keyed by them then need no random state, which would cost
/// each map 16 bytes in every session.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n);
    }
}

/// A map keyed by packet identifier.
pub(crate) type IdMap<V> = HashMap<PacketId, V, std::hash::BuildHasherDefault<IdHasher>>;
/// A set of packet identifiers.
pub(crate) type IdSet =
    std::collections::HashSet<PacketId, std::hash::BuildHasherDefault<IdHasher>>;

/// A set of packet identifiers made on first use: most sessions never hold one (a QoS 2
/// receipt), and an idle session then carries one pointer instead of a table.
#[derive(Debug, Default)]
pub(crate) struct IdSetBox(Option<Box<IdSet>>);

impl IdSetBox {
    pub(crate) fn contains(&self, id: &PacketId) -> bool {
        self.0.as_ref().is_some_and(|set| set.contains(id))
    }

    pub(crate) fn insert(&mut self, id: PacketId) -> bool {
        self.0.get_or_insert_with(Default::default).insert(id)
    }

    /// Removes `id`; the table goes once empty.
    pub(crate) fn remove(&mut self, id: &PacketId) -> bool {
        let Some(set) = self.0.as_mut() else {
            return false;
        };
        let removed = set.remove(id);
        if set.is_empty() {
            self.0 = None;
        }
        removed
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |set| set.len())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &PacketId> + '_ {
        self.0.iter().flat_map(|set| set.iter())
    }
}

impl FromIterator<PacketId> for IdSetBox {
    fn from_iter<I: IntoIterator<Item = PacketId>>(iter: I) -> Self {
        let set: IdSet = iter.into_iter().collect();
        Self((!set.is_empty()).then(|| Box::new(set)))
    }
}

/// One client's session. See the crate documentation for how a driver uses it.
#[derive(Debug)]
pub struct Session {
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) record: SessionRecord,
    /// Messages not sent yet, in order.
    pub(crate) pending: VecDeque<(u64, OutboundMessage)>,
    /// QoS 1/2 messages sent and not completed, by sequence number (send order).
    pub(crate) inflight: BTreeMap<u64, OutboundMessage>,
    /// The sequence number of each packet identifier in flight.
    pub(crate) inflight_ids: IdMap<u64>,
    pub(crate) next_seq: u64,
    pub(crate) next_packet_id: u16,
    /// Weight (`Message::weight`) of everything pending or in flight.
    pub(crate) queued_bytes: usize,
    pub(crate) link: Option<Link>,
    /// Packets other than new publications, sent first.
    pub(crate) control: VecDeque<Packet>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) changes: VecDeque<Change>,
    /// SUBSCRIBE requests waiting for the broker's decision.
    pub(crate) pending_subscribes: IdMap<Vec<Result<SubscribeRequest, SubAckReasonCode>>>,
    pub(crate) drops: DropCounts,
    pub(crate) closing: Option<CloseReason>,
    /// Whether the store holds this session (it was persistent when last changed).
    pub(crate) stored: bool,
    /// QoS 2 receipts: packet identifiers received from the client and acknowledged (or
    /// being acknowledged) with PUBREC, whose PUBREL has not come yet [MQTT-4.3.3-10].
    pub(crate) incoming_qos2: IdSetBox,
    /// The dedup tags of QoS 2 messages received from the client that went (or go) to
    /// other nodes of a cluster, by packet identifier, until PUBREL (the broker keeps and
    /// writes them: docs/ARCHITECTURE.md, "QoS 2 across nodes"). Boxed: rarely present,
    /// and an empty map is 48 bytes where the box is 8 (idle sessions are many).
    #[allow(clippy::box_collection)]
    pub(crate) qos2_tags: Option<Box<HashMap<PacketId, u64>>>,
    /// Where each subscription sits in `record.subscriptions`, by filter.
    pub(crate) filters: crate::filters::FilterIndex,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: MqttString, config: Arc<SessionConfig>) -> Self {
        let record = SessionRecord {
            client_id: client_id.detached(),
            expiry_interval: 0,
            subscriptions: Vec::new(),
            will: None,
            disconnected_at: None,
            incoming_qos2: Vec::new(),
        };
        Self::restore(record, Vec::new(), config)
    }

    /// A session as the store kept it: its record and queue (in sequence order).
    pub fn restore(
        mut record: SessionRecord,
        queue: Vec<(u64, OutboundMessage)>,
        config: Arc<SessionConfig>,
    ) -> Self {
        let incoming_qos2 = std::mem::take(&mut record.incoming_qos2)
            .into_iter()
            .collect();
        let mut session = Self {
            config,
            record,
            pending: VecDeque::new(),
            inflight: BTreeMap::new(),
            inflight_ids: IdMap::default(),
            next_seq: 0,
            next_packet_id: 1,
            queued_bytes: 0,
            link: None,
            control: VecDeque::new(),
            events: VecDeque::new(),
            changes: VecDeque::new(),
            pending_subscribes: IdMap::default(),
            drops: DropCounts::default(),
            closing: None,
            stored: false,
            incoming_qos2,
            qos2_tags: None,
            filters: Default::default(),
        };
        session.stored = session.is_persistent();
        session.filters.rebuild(&session.record.subscriptions);
        for (seq, message) in queue {
            session.next_seq = session.next_seq.max(seq + 1);
            session.queued_bytes += message.message.weight();
            match message.state {
                OutboundState::Queued => session.pending.push_back((seq, message)),
                OutboundState::Sent(id) | OutboundState::Released(id) => {
                    session.next_packet_id = id.get().wrapping_add(1).max(1);
                    session.inflight_ids.insert(id, seq);
                    session.inflight.insert(seq, message);
                }
            }
        }
        session
    }

    /// The client identifier.
    pub fn client_id(&self) -> &MqttString {
        &self.record.client_id
    }

    /// The persistent part of the session.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// Whether a client is attached.
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// The protocol version of the attached client.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.link.as_ref().map(|l| l.version)
    }

    /// Whether the store holds the session: its changes are logged (`poll_change`).
    pub fn is_stored(&self) -> bool {
        self.stored
    }

    /// Whether the session outlives its connection (Session Expiry Interval above 0).
    pub fn is_persistent(&self) -> bool {
        self.record.expiry_interval > 0
    }

    /// Messages pending and in flight.
    pub fn queued(&self) -> usize {
        self.pending.len() + self.inflight.len()
    }

    /// Why the connection is ending, once it is.
    pub fn closing(&self) -> Option<CloseReason> {
        self.closing
    }

    /// Attaches a connecting client whose CONNECT the broker accepted: sets the expiry and
    /// Will from CONNECT, queues CONNACK, then resends what was in flight (PUBLISH with DUP,
    /// PUBREL) in the original order [MQTT-4.4.0-1].
    pub fn attach(&mut self, now: Timestamp, connect: &Connect, options: AttachOptions) {
        let config = Arc::clone(&self.config);
        let v5 = connect.protocol.is_v5();
        let requested_expiry = if v5 {
            connect.properties.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            NEVER_EXPIRES
        };
        let expiry = requested_expiry.min(config.max_session_expiry);
        let keep_alive = if v5 {
            config.keep_alive_for(connect.keep_alive)
        } else {
            connect.keep_alive
        };
        self.record.expiry_interval = expiry;
        self.record.disconnected_at = None;
        self.record.will = connect.will.as_ref().map(|will| {
            // Detached: the CONNECT's read buffer must not live as long as the session.
            let properties = &will.properties;
            Box::new(WillRecord {
                message: Message {
                    topic: will.topic.clone(),
                    payload: will.payload.clone(),
                    qos: will.qos.min(config.maximum_qos),
                    retain: will.retain,
                    properties: shoal_codec::PublishProperties {
                        payload_format_indicator: properties.payload_format_indicator,
                        content_type: properties.content_type.clone(),
                        response_topic: properties.response_topic.clone(),
                        correlation_data: properties.correlation_data.clone(),
                        user_properties: properties.user_properties.clone(),
                        message_expiry_interval: properties.message_expiry_interval,
                        ..Default::default()
                    },
                    // The Message Expiry Interval counts from when the Will is published
                    // (§3.1.3.2.4): it stays an interval until then.
                    expires_at: None,
                    received_at: now,
                },
                delay: properties.will_delay_interval.unwrap_or(0),
            })
        });
        if let Some(will) = &mut self.record.will {
            will.message = will.message.detached();
        }
        let client_props = &connect.properties;
        self.link = Some(Link {
            version: connect.protocol,
            keep_alive,
            last_received: now,
            receive_maximum: client_props
                .receive_maximum
                .map_or(u16::MAX, |n| n.get())
                .min(self.config.max_inflight.get()),
            maximum_packet_size: client_props
                .maximum_packet_size
                .map_or(u32::MAX, |n| n.get()),
            outbound_alias_max: client_props
                .topic_alias_maximum
                .unwrap_or(0)
                .min(config.outbound_topic_aliases),
            aliases: None,
            unacked: IdMap::default(),
            unacked_qos2: 0,
            connected_with_zero_expiry: requested_expiry == 0,
            authentication_method: client_props.authentication_method.clone().map(Box::new),
        });
        self.closing = None;
        self.control.clear();
        let mut connack = ConnAck::new(ConnectReasonCode::Success, options.session_present);
        if v5 {
            connack.properties =
                self.connack_properties(requested_expiry, expiry, connect, options);
        }
        push(&mut self.control, Packet::ConnAck(Box::new(connack)));
        // Resend in order what the previous connection left in flight.
        let resend: Vec<Packet> = self
            .inflight
            .values()
            .map(|m| match m.state {
                OutboundState::Sent(id) => {
                    let mut publish = self.publish_packet(m, id, now);
                    publish.dup = true;
                    Packet::Publish(publish)
                }
                OutboundState::Released(id) => Packet::PubRel(PubRel::new(id)),
                OutboundState::Queued => unreachable!("in flight means sent"),
            })
            .collect();
        self.control.extend(resend);
        self.record_changed();
    }

    fn connack_properties(
        &self,
        requested_expiry: u32,
        expiry: u32,
        connect: &Connect,
        options: AttachOptions,
    ) -> ConnAckProperties {
        let config = &self.config;
        let mut props = ConnAckProperties {
            receive_maximum: Some(config.receive_maximum),
            maximum_packet_size: std::num::NonZeroU32::new(config.maximum_packet_size),
            topic_alias_maximum: Some(config.topic_alias_maximum),
            assigned_client_identifier: options.assigned_client_id,
            server_keep_alive: Some(config.keep_alive_for(connect.keep_alive))
                .filter(|&keep_alive| keep_alive != connect.keep_alive),
            ..Default::default()
        };
        if expiry != requested_expiry {
            props.session_expiry_interval = Some(expiry);
        }
        if config.maximum_qos != QoS::ExactlyOnce {
            props.maximum_qos = Some(config.maximum_qos);
        }
        if !config.retain_available {
            props.retain_available = Some(false);
        }
        if !config.wildcard_subscription_available {
            props.wildcard_subscription_available = Some(false);
        }
        if !config.shared_subscription_available {
            props.shared_subscription_available = Some(false);
        }
        if !config.subscription_identifiers_available {
            props.subscription_identifiers_available = Some(false);
        }
        if let Some((method, data)) = options.authentication {
            props.authentication_method = Some(method);
            props.authentication_data = data;
        } else if connect.properties.authentication_method.is_some() {
            props.authentication_method = connect.properties.authentication_method.clone();
        }
        props
    }

    /// The connection is gone (after a `Close` event, or when the network broke): the link
    /// is dropped, what was in flight stays for the next connection.
    ///
    /// The Will: dropped when the connection ended in a way that does not publish it
    /// (DISCONNECT 0x00). Otherwise it is due when the Will Delay Interval has passed or
    /// the session ends, whichever is first (§3.1.3.2.2): returned to publish now when
    /// that is now (no delay, or a session that ends with its connection); else it stays
    /// in the record, and `SessionRecord::will_due_at` says when it is due, unless a new
    /// connection resumes the session before.
    pub fn detach(&mut self, now: Timestamp, reason: CloseReason) -> Option<WillRecord> {
        self.link = None;
        self.control.clear();
        self.pending_subscribes.clear();
        self.record.disconnected_at = Some(now);
        self.closing = Some(reason);
        if !reason.publish_will {
            self.record.will = None;
        }
        let will = match self.record.will_due_at() {
            Some(due) if due <= now => self.record.will.take().map(|will| *will),
            _ => None,
        };
        self.record_changed();
        will
    }

    /// Takes the Will out of the record if it is due at `now` (see `detach`), to publish.
    pub fn take_due_will(&mut self, now: Timestamp) -> Option<WillRecord> {
        if self.is_connected() || self.record.will_due_at().is_none_or(|due| due > now) {
            return None;
        }
        let will = self.record.will.take().map(|will| *will);
        self.record_changed();
        will
    }

    /// Ends the connection from the server's side: queues DISCONNECT with `reason` where
    /// the protocol allows (MQTT 5, after CONNACK) and emits `Event::Close`.
    pub fn close(&mut self, reason: DisconnectReasonCode, publish_will: bool) {
        self.close_explained(reason, publish_will, None);
    }

    /// `close`, with a Reason String on the DISCONNECT saying what the client did wrong
    /// (allowed on DISCONNECT whatever Request Problem Information says, §3.1.2.11.7).
    pub fn close_explained(
        &mut self,
        reason: DisconnectReasonCode,
        publish_will: bool,
        explanation: Option<&str>,
    ) {
        let properties = DisconnectProperties {
            reason_string: explanation.and_then(|text| MqttString::try_from(text).ok()),
            ..Default::default()
        };
        self.close_with(reason, publish_will, properties);
    }

    /// `close`, with the DISCONNECT's properties (MQTT 5 only; e.g. a Server Reference with
    /// 0x9C, Use another server).
    pub fn close_with(
        &mut self,
        reason: DisconnectReasonCode,
        publish_will: bool,
        properties: DisconnectProperties,
    ) {
        if self.closing.is_some() {
            return;
        }
        if self.link.as_ref().is_some_and(|l| l.version.is_v5()) {
            let mut disconnect = Disconnect::new(reason);
            disconnect.properties = properties;
            push(&mut self.control, Packet::Disconnect(disconnect));
        }
        let close = CloseReason {
            reason,
            publish_will,
            by: ClosedBy::Server,
        };
        self.closing = Some(close);
        push(&mut self.events, Event::Close(close));
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let link = self.link.as_ref()?;
        if link.keep_alive == 0 || self.closing.is_some() {
            return None;
        }
        // The server allows one and a half times the keep alive [MQTT-3.1.2-22].
        Some(
            link.last_received
                + std::time::Duration::from_millis(u64::from(link.keep_alive) * 1500),
        )
    }

    /// Acts on time passing: closes a connection that was silent past its keep alive.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            self.close(DisconnectReasonCode::KeepAliveTimeout, true);
        }
    }

    /// The next event for the broker.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next change to persist (persistent sessions only).
    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    /// The messages dropped since the last call, by cause.
    pub fn take_drops(&mut self) -> DropCounts {
        std::mem::take(&mut self.drops)
    }

    /// The Authentication Method the attached client authenticated with (enhanced
    /// authentication, MQTT 5).
    pub fn authentication_method(&self) -> Option<&MqttString> {
        self.link.as_ref()?.authentication_method.as_deref()
    }

    /// Queues an AUTH packet of the broker's authentication hook (re-authentication).
    pub fn send_auth(&mut self, auth: shoal_codec::Auth) {
        if self.link.is_some() && self.closing.is_none() {
            push(&mut self.control, Packet::Auth(auth));
        }
    }

    /// Replaces the Will (the broker clears it when it publishes or cancels it).
    pub fn set_will(&mut self, will: Option<WillRecord>) {
        self.record.will = will.map(Box::new);
        self.record_changed();
    }

    /// Records that the persistent record changed.
    pub(crate) fn record_changed(&mut self) {
        if self.is_persistent() {
            let newly = !self.stored;
            self.stored = true;
            // The fields only: subscriptions and receipts are entries of their own.
            let fields = SessionRecord {
                client_id: self.record.client_id.clone(),
                expiry_interval: self.record.expiry_interval,
                subscriptions: Vec::new(),
                will: self.record.will.clone(),
                disconnected_at: self.record.disconnected_at,
                incoming_qos2: Vec::new(),
            };
            self.changes.push_back(Change::Record(Box::new(fields)));
            if newly {
                // What the session held before it was stored goes with it from now on.
                for sub in &self.record.subscriptions {
                    self.changes.push_back(Change::Subscribed(sub.clone()));
                }
                let receipts: Vec<PacketId> = self.incoming_qos2.iter().copied().collect();
                for packet_id in receipts {
                    self.changes.push_back(Change::Received { packet_id });
                }
            }
        } else if self.stored {
            // A session that stops being persistent leaves the store.
            self.stored = false;
            self.changes.clear();
            push(&mut self.changes, Change::Discarded);
        }
    }

    /// Records a QoS 2 receipt (`Change::Received` or `Released`), for persistent sessions.
    pub(crate) fn receipt_changed(&mut self, change: Change) {
        if self.stored {
            push(&mut self.changes, change);
        }
    }

    /// The dedup tag of the QoS 2 message received with `packet_id`, if it has one.
    pub fn qos2_tag(&self, packet_id: PacketId) -> Option<u64> {
        self.qos2_tags.as_ref()?.get(&packet_id).copied()
    }

    /// Gives the QoS 2 message received with `packet_id` its dedup tag.
    pub fn set_qos2_tag(&mut self, packet_id: PacketId, tag: u64) {
        self.qos2_tags
            .get_or_insert_with(Default::default)
            .insert(packet_id, tag);
    }

    /// Removes the dedup tag of `packet_id` (its PUBREL came, or its PUBREC failed).
    pub fn take_qos2_tag(&mut self, packet_id: PacketId) -> Option<u64> {
        let tags = self.qos2_tags.as_mut()?;
        let tag = tags.remove(&packet_id);
        if tags.is_empty() {
            self.qos2_tags = None;
        }
        tag
    }

    /// The QoS 2 receipts awaiting PUBREL, in no particular order.
    pub fn incoming_qos2(&self) -> impl Iterator<Item = PacketId> + '_ {
        self.incoming_qos2.iter().copied()
    }

    /// Records a change to the queue, for persistent sessions and QoS 1/2 messages.
    pub(crate) fn queue_changed(&mut self, qos: QoS, change: Change) {
        if self.stored && qos != QoS::AtMostOnce {
            push(&mut self.changes, change);
        }
    }
}

/// Appends to one of the session's output queues. An empty queue first gets room for one
/// element only (the standard growth would make it four): an idle connection's session
/// then holds one CONNACK-sized slot, not four, and a busy one grows as usual.
pub(crate) fn push<T>(queue: &mut VecDeque<T>, value: T) {
    if queue.capacity() == 0 {
        queue.reserve_exact(1);
    }
    queue.push_back(value);
}
