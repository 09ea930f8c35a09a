//! One MQTT connection: the handshake (CONNECT, SUBSCRIBE, on-connect messages) and the event
//! loop that reads, writes, publishes on schedule and keeps the connection alive.
//!
//! Reads go into one growing buffer and are decoded in place ([`Decoder`]); writes are
//! encoded into one buffer and written in as few syscalls as the socket allows, so that
//! thousands of messages a second cost no allocation per message.

use std::time::Duration;

use bytes::BytesMut;
use shoal_codec::{
    Decoder, Disconnect, DisconnectReasonCode, Packet, PacketId, ProtocolVersion, PubAck,
    PubAckReasonCode, PubComp, PubRec, PubRel, Publish, QoS, QosPid, ReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use crate::client::ClientState;
use crate::client::error::ClientError;
use crate::client::inflight::{Pending, Stage};
use crate::client::shared::{Phase, Shared};
use crate::payload::now_ns;
use crate::scenario::ClientPlan;
use crate::transport::BoxedIo;

/// Stop encoding new messages while this much waits to be written.
const HIGH_WATER: usize = 64 * 1024;
/// Smallest room kept free in the read buffer before a read.
const MIN_READ: usize = 512;
/// Largest read at once.
const MAX_READ: usize = 64 * 1024;
/// The flow index of unmeasured publications (on-connect messages) in the window.
const UNMEASURED: u32 = u32::MAX;
/// How long closing may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// An established connection.
pub(crate) struct Connection {
    reader: ReadHalf<BoxedIo>,
    writer: WriteHalf<BoxedIo>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    read_chunk: usize,
    decoder: Decoder,
    version: ProtocolVersion,
    window: usize,
    keep_alive: Option<Duration>,
    last_write: Instant,
    needs_flush: bool,
}

impl Connection {
    /// Connects, sends CONNECT and waits for CONNACK, subscribes and waits for SUBACK, and
    /// publishes the on-connect messages; all within the connect timeout.
    pub(crate) async fn establish(
        plan: &ClientPlan,
        shared: &Shared,
        state: &mut ClientState,
    ) -> Result<Self, ClientError> {
        let started = Instant::now();
        let deadline = started + shared.options.connect_timeout;
        // Boxed: TLS and WebSocket handshakes are large futures, and this one is live only
        // while connecting; it must not size every idle connection's task.
        let io = timeout_at(
            deadline,
            Box::pin(shared.connector.connect(plan.broker, plan.source)),
        )
        .await
        .map_err(|_| ClientError::Timeout("transport connect"))??;
        let (reader, writer) = tokio::io::split(io);
        let version = plan.connect.protocol;
        let mut conn = Self {
            reader,
            writer,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            read_chunk: MIN_READ,
            decoder: Decoder::with_version(version, shared.options.max_packet_size),
            version,
            window: usize::from(shared.options.inflight.max(1)),
            keep_alive: None,
            last_write: started,
            needs_flush: false,
        };
        Packet::Connect(Box::new(plan.connect.clone())).encode(version, &mut conn.wbuf)?;
        conn.write_all(deadline).await?;
        let connack = match conn.next_packet(deadline, "connack").await? {
            Packet::ConnAck(c) => c,
            other => return Err(ClientError::Unexpected(other.packet_type())),
        };
        if connack.reason_code.is_error() {
            return Err(ClientError::Refused(connack.reason_code));
        }
        shared
            .collector
            .connected(started.elapsed().as_micros() as u64);
        if let Some(max) = connack.properties.receive_maximum {
            conn.window = conn.window.min(usize::from(max.get()));
        }
        let keep_alive = connack
            .properties
            .server_keep_alive
            .unwrap_or(plan.connect.keep_alive);
        if keep_alive > 0 {
            conn.keep_alive = Some(Duration::from_secs(u64::from(keep_alive)));
        }
        let lost = !plan.connect.clean_start && state.connected_before && !connack.session_present;
        state.connected_before = true;
        if let Some(r) = state.recorder.as_mut() {
            r.connected(lost);
        }
        if connack.session_present {
            conn.resend_inflight(state)?;
        } else {
            // A new session: nothing of the old one is to be completed [MQTT-4.4.0-1].
            state.inflight.clear();
            state.incoming_qos2.clear();
        }
        if let Some(subscribe) = &plan.subscribe {
            Packet::Subscribe(subscribe.clone()).encode(version, &mut conn.wbuf)?;
            conn.write_all(deadline).await?;
            loop {
                match conn.next_packet(deadline, "suback").await? {
                    Packet::SubAck(ack) => {
                        for code in ack.reason_codes.iter().filter(|c| c.is_error()) {
                            shared.collector.error(&format!("suback: {code}"));
                        }
                        break;
                    }
                    other => conn.handle(other, state, shared)?,
                }
            }
        }
        for message in &plan.on_connect {
            conn.publish_unmeasured(message, state)?;
        }
        conn.write_all(deadline).await?;
        Ok(conn)
    }

    /// Re-sends what was in flight, as the resumed session requires [MQTT-4.4.0-1].
    fn resend_inflight(&mut self, state: &mut ClientState) -> Result<(), ClientError> {
        let now = now_ns();
        let pending: Vec<Pending> = state.inflight.iter().copied().collect();
        for p in pending {
            let Some(id) = PacketId::new(p.pid) else {
                continue;
            };
            match p.stage {
                Stage::PubComp => {
                    Packet::PubRel(PubRel::new(id)).encode(self.version, &mut self.wbuf)?;
                }
                Stage::PubAck | Stage::PubRec => {
                    let qos = if p.stage == Stage::PubAck {
                        QoS::AtLeastOnce
                    } else {
                        QoS::ExactlyOnce
                    };
                    if let Some(publisher) =
                        state.publisher.as_mut().filter(|_| p.flow != UNMEASURED)
                    {
                        publisher.encode_again(
                            p.flow,
                            p.seq,
                            QosPid::from_parts(qos, id),
                            now,
                            self.version,
                            &mut self.wbuf,
                        )?;
                    } else {
                        // An on-connect message: it is published again below anyway.
                        state.inflight.complete(p.pid, p.stage);
                    }
                }
            }
        }
        Ok(())
    }

    fn publish_unmeasured(
        &mut self,
        message: &Publish,
        state: &mut ClientState,
    ) -> Result<(), ClientError> {
        let mut p = message.clone();
        p.qos_pid = match message.qos() {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            qos => {
                let pid = state.inflight.allocate();
                let stage = if qos == QoS::AtLeastOnce {
                    Stage::PubAck
                } else {
                    Stage::PubRec
                };
                state.inflight.push(Pending {
                    pid,
                    stage,
                    flow: UNMEASURED,
                    seq: 0,
                });
                QosPid::from_parts(qos, PacketId::new(pid).expect("allocate never returns 0"))
            }
        };
        Packet::Publish(p).encode(self.version, &mut self.wbuf)?;
        Ok(())
    }

    /// Writes the whole write buffer, then flushes.
    async fn write_all(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let write = async {
            while !self.wbuf.is_empty() {
                self.writer.write_buf(&mut self.wbuf).await?;
            }
            self.writer.flush().await
        };
        timeout_at(deadline, write)
            .await
            .map_err(|_| ClientError::Timeout("write"))??;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Reads until one whole packet is decoded.
    async fn next_packet(
        &mut self,
        deadline: Instant,
        step: &'static str,
    ) -> Result<Packet, ClientError> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.rbuf)? {
                return Ok(packet);
            }
            self.reserve_read();
            let n = timeout_at(deadline, self.reader.read_buf(&mut self.rbuf))
                .await
                .map_err(|_| ClientError::Timeout(step))??;
            if n == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    fn reserve_read(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_READ {
            self.rbuf.reserve(self.read_chunk);
        }
    }

    /// Handles one packet from the broker.
    fn handle(
        &mut self,
        packet: Packet,
        state: &mut ClientState,
        shared: &Shared,
    ) -> Result<(), ClientError> {
        match packet {
            Packet::Publish(p) => self.on_publish(&p, state)?,
            Packet::PubAck(ack) => {
                let measured = self.complete(
                    ack.packet_id,
                    Stage::PubAck,
                    ack.reason_code.is_error(),
                    state,
                );
                // Informational codes (No matching subscribers) matter for measured messages
                // only; a retained status nobody subscribes to is normal.
                if ack.reason_code.is_error()
                    || (measured && ack.reason_code != PubAckReasonCode::Success)
                {
                    shared
                        .collector
                        .error(&format!("puback: {}", ack.reason_code));
                }
            }
            Packet::PubRec(rec) => {
                let pid = rec.packet_id;
                if rec.reason_code.is_error() {
                    shared
                        .collector
                        .error(&format!("pubrec: {}", rec.reason_code));
                    if let Some(p) = state.inflight.find(pid.get(), Stage::PubRec)
                        && p.flow != UNMEASURED
                        && let Some(r) = state.recorder.as_mut()
                    {
                        r.failed(p.flow, p.seq);
                    }
                    state.inflight.complete(pid.get(), Stage::PubRec);
                } else {
                    // PUBREC is the broker taking the message over: acknowledged.
                    if let Some(p) = state.inflight.find(pid.get(), Stage::PubRec) {
                        p.stage = Stage::PubComp;
                        if p.flow != UNMEASURED
                            && let Some(r) = state.recorder.as_mut()
                        {
                            r.acked(p.flow, p.seq);
                        }
                    }
                    Packet::PubRel(PubRel::new(pid)).encode(self.version, &mut self.wbuf)?;
                }
            }
            Packet::PubComp(comp) => {
                if comp.reason_code.is_error() {
                    shared
                        .collector
                        .error(&format!("pubcomp: {}", comp.reason_code));
                }
                // Acknowledged at PUBREC already; PUBCOMP only ends the flow.
                self.complete(comp.packet_id, Stage::PubComp, false, state);
            }
            Packet::PubRel(rel) => {
                state
                    .incoming_qos2
                    .retain(|&pid| pid != rel.packet_id.get());
                Packet::PubComp(PubComp::new(rel.packet_id))
                    .encode(self.version, &mut self.wbuf)?;
            }
            Packet::SubAck(ack) => {
                for code in ack.reason_codes.iter().filter(|c| c.is_error()) {
                    shared.collector.error(&format!("suback: {code}"));
                }
            }
            Packet::UnsubAck(_) | Packet::PingResp => {}
            Packet::Disconnect(d) => return Err(ClientError::Disconnected(d.reason_code)),
            other => return Err(ClientError::Unexpected(other.packet_type())),
        }
        Ok(())
    }

    /// Completes a publication (`refused`: with a reason code of 0x80 or above); whether it
    /// was a measured one. A QoS 1 publication is recorded as acknowledged or refused here.
    fn complete(
        &mut self,
        pid: PacketId,
        stage: Stage,
        refused: bool,
        state: &mut ClientState,
    ) -> bool {
        let pending = state
            .inflight
            .iter()
            .find(|p| p.pid == pid.get() && p.stage == stage)
            .copied();
        let measured = pending.is_some_and(|p| p.flow != UNMEASURED);
        if let Some(p) = pending.filter(|p| p.flow != UNMEASURED && stage == Stage::PubAck)
            && let Some(r) = state.recorder.as_mut()
        {
            if refused {
                r.failed(p.flow, p.seq);
            } else {
                r.acked(p.flow, p.seq);
            }
        }
        if state.inflight.complete(pid.get(), stage)
            && measured
            && let Some(stream) = state.publisher.as_ref().map(|p| p.stream())
            && let Some(s) = state.stats.stream(stream)
        {
            s.counters.acked += 1;
        }
        measured
    }

    fn on_publish(&mut self, p: &Publish, state: &mut ClientState) -> Result<(), ClientError> {
        let deliver = |state: &mut ClientState| {
            let now = now_ns();
            state.receiver.on_message(&p.payload, now, &mut state.stats);
            if let Some(r) = state.recorder.as_mut() {
                r.delivered(&p.payload, p.retain, now);
            }
        };
        match p.qos_pid {
            QosPid::AtMostOnce => deliver(state),
            QosPid::AtLeastOnce(id) => {
                deliver(state);
                Packet::PubAck(PubAck::new(id)).encode(self.version, &mut self.wbuf)?;
            }
            QosPid::ExactlyOnce(id) => {
                if !state.incoming_qos2.contains(&id.get()) {
                    state.incoming_qos2.push(id.get());
                    deliver(state);
                }
                Packet::PubRec(PubRec::new(id)).encode(self.version, &mut self.wbuf)?;
            }
        }
        Ok(())
    }

    /// Encodes as many measured messages as the schedule, the window and the write buffer
    /// allow.
    fn produce(&mut self, state: &mut ClientState, now: Instant) -> Result<(), ClientError> {
        let Some(publisher) = state.publisher.as_mut() else {
            return Ok(());
        };
        let mut allowance = publisher.allowance(now);
        if allowance == 0 {
            return Ok(());
        }
        let qos = publisher.qos();
        let stamp = now_ns();
        while allowance > 0 && self.wbuf.len() < HIGH_WATER && !publisher.done() {
            let qos_pid = if qos == QoS::AtMostOnce {
                QosPid::AtMostOnce
            } else {
                if state.inflight.len() >= self.window {
                    break;
                }
                let pid = state.inflight.allocate();
                QosPid::from_parts(qos, PacketId::new(pid).expect("allocate never returns 0"))
            };
            let (flow, seq) = publisher.encode_next(
                self.version,
                qos_pid,
                stamp,
                &mut self.wbuf,
                &mut state.stats,
            )?;
            if let Some(pid) = qos_pid.packet_id() {
                let stage = if qos == QoS::AtLeastOnce {
                    Stage::PubAck
                } else {
                    Stage::PubRec
                };
                state.inflight.push(Pending {
                    pid: pid.get(),
                    stage,
                    flow,
                    seq,
                });
            }
            allowance -= 1;
        }
        Ok(())
    }

    /// Runs the connection until the run stops it (`Ok`) or it fails.
    pub(crate) async fn run(
        &mut self,
        state: &mut ClientState,
        shared: &Shared,
        phase_rx: &mut watch::Receiver<Phase>,
    ) -> Result<(), ClientError> {
        let mut phase = *phase_rx.borrow_and_update();
        if let Some(p) = state.publisher.as_mut() {
            p.resume(Instant::now());
        }
        let far = Duration::from_secs(3600);
        let sleep = tokio::time::sleep(far);
        tokio::pin!(sleep);
        let mut armed = Instant::now() + far;
        loop {
            let now = Instant::now();
            let flush_every = if phase >= Phase::Draining {
                shared.options.flush_every.min(Duration::from_millis(50))
            } else {
                shared.options.flush_every
            };
            if state.stats.flush_due(now.into_std(), flush_every) {
                shared.collector.flush(&mut state.stats, now.into_std());
            }
            if phase == Phase::Running {
                self.produce(state, now)?;
                state.report_done(shared);
            }
            if let Some(ka) = self.keep_alive
                && now >= self.last_write + ka
            {
                Packet::PingReq.encode(self.version, &mut self.wbuf)?;
                self.last_write = now;
            }
            let mut deadline = now + far;
            if phase == Phase::Running
                && let Some(due) = state.publisher.as_ref().and_then(|p| p.next_due())
                && self.wbuf.len() < HIGH_WATER
            {
                deadline = deadline.min(due);
            }
            if let Some(ka) = self.keep_alive {
                deadline = deadline.min(self.last_write + ka);
            }
            if let Some(due) = state.stats.flush_at(flush_every) {
                deadline = deadline.min(Instant::from_std(due));
            }
            if deadline != armed {
                sleep.as_mut().reset(deadline);
                armed = deadline;
            }
            self.reserve_read();
            let spare = self.rbuf.capacity() - self.rbuf.len();
            tokio::select! {
                biased;
                changed = phase_rx.changed() => {
                    phase = match changed {
                        Ok(()) => *phase_rx.borrow_and_update(),
                        Err(_) => Phase::Stopping,
                    };
                    match phase {
                        Phase::Running => {
                            if let Some(p) = state.publisher.as_mut() {
                                p.resume(Instant::now());
                            }
                        }
                        Phase::Stopping => return self.close().await,
                        _ => {}
                    }
                }
                read = self.reader.read_buf(&mut self.rbuf) => {
                    let n = read?;
                    if n == 0 {
                        return Err(ClientError::Closed);
                    }
                    if n == spare && self.read_chunk < MAX_READ {
                        self.read_chunk *= 2;
                    }
                    while let Some(packet) = self.decoder.decode(&mut self.rbuf)? {
                        self.handle(packet, state, shared)?;
                    }
                }
                io = async {
                    if self.wbuf.is_empty() {
                        self.writer.flush().await.map(|()| false)
                    } else {
                        self.writer.write_buf(&mut self.wbuf).await.map(|_| true)
                    }
                }, if !self.wbuf.is_empty() || self.needs_flush => {
                    if io? {
                        self.last_write = Instant::now();
                        self.needs_flush = true;
                    } else {
                        self.needs_flush = false;
                    }
                }
                () = &mut sleep => {}
            }
        }
    }

    /// Sends DISCONNECT and closes.
    async fn close(&mut self) -> Result<(), ClientError> {
        Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection))
            .encode(self.version, &mut self.wbuf)?;
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        self.write_all(deadline).await?;
        let _ = timeout_at(deadline, self.writer.shutdown()).await;
        Ok(())
    }
}
