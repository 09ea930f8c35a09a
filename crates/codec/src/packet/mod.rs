//! The control packets (§3): one struct per packet, and [`Packet`], their sum.

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod subscribe;
mod unsubscribe;

use bytes::{BufMut, BytesMut};

pub use ack::{Ack, PubAck, PubComp, PubRec, PubRel};
pub use auth::Auth;
pub use connack::ConnAck;
pub(crate) use connect::peek_version;
pub use connect::{Connect, LastWill};
pub use disconnect::Disconnect;
pub use publish::Publish;
pub use subscribe::{SubAck, Subscribe};
pub use unsubscribe::{UnsubAck, Unsubscribe};

use crate::decoder::FixedHeader;
use crate::error::{DecodeError, EncodeError};
use crate::wire::{self, MAX_VARINT, Reader};
use crate::{PacketType, ProtocolVersion};

/// Any control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (boxed: it is large and rare).
    Connect(Box<Connect>),
    /// CONNACK (boxed: it is large and rare).
    ConnAck(Box<ConnAck>),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PubAck),
    /// PUBREC.
    PubRec(PubRec),
    /// PUBREL.
    PubRel(PubRel),
    /// PUBCOMP.
    PubComp(PubComp),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// The type of the packet.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }

    /// Appends the packet, as `version` writes it, to `buf`. Fields the version does not
    /// have (properties and reason codes before MQTT 5) are left out. On error nothing is
    /// written.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Self::Connect(p) => p.encode(buf),
            Self::ConnAck(p) => p.encode(version, buf),
            Self::Publish(p) => p.encode(version, buf),
            Self::PubAck(p) => p.encode(PacketType::PubAck, version, buf),
            Self::PubRec(p) => p.encode(PacketType::PubRec, version, buf),
            Self::PubRel(p) => p.encode(PacketType::PubRel, version, buf),
            Self::PubComp(p) => p.encode(PacketType::PubComp, version, buf),
            Self::Subscribe(p) => p.encode(version, buf),
            Self::SubAck(p) => p.encode(version, buf),
            Self::Unsubscribe(p) => p.encode(version, buf),
            Self::UnsubAck(p) => p.encode(version, buf),
            Self::PingReq => put_header(buf, PacketType::PingReq, 0, 0),
            Self::PingResp => put_header(buf, PacketType::PingResp, 0, 0),
            Self::Disconnect(p) => p.encode(version, buf),
            Self::Auth(p) => p.encode(version, buf),
        }
    }

    /// The size of the whole packet as `version` writes it, without encoding it: what a
    /// Maximum Packet Size check compares.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let remaining = match self {
            Self::Connect(p) => p.remaining_len()?,
            Self::ConnAck(p) => p.sizes(version)?.0,
            Self::Publish(p) => p.sizes(version)?.0,
            Self::PubAck(p) => p.sizes(version)?.0,
            Self::PubRec(p) => p.sizes(version)?.0,
            Self::PubRel(p) => p.sizes(version)?.0,
            Self::PubComp(p) => p.sizes(version)?.0,
            Self::Subscribe(p) => p.sizes(version)?.0,
            Self::SubAck(p) => p.sizes(version)?.0,
            Self::Unsubscribe(p) => p.sizes(version)?.0,
            Self::UnsubAck(p) => p.sizes(version)?.0,
            Self::PingReq | Self::PingResp => 0,
            Self::Disconnect(p) => p.sizes(version)?.0,
            Self::Auth(p) => p.sizes(version)?.0,
        };
        total_len(remaining)
    }

    /// Decodes the body of a packet whose fixed header has been read and checked.
    pub(crate) fn decode(
        header: FixedHeader,
        reader: Reader,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let mut r = reader;
        let packet = match header.packet_type {
            PacketType::Connect => Self::Connect(Box::new(Connect::decode(&mut r)?)),
            PacketType::ConnAck => Self::ConnAck(Box::new(ConnAck::decode(&mut r, version)?)),
            PacketType::Publish => Self::Publish(Publish::decode(&mut r, header.flags, version)?),
            PacketType::PubAck => Self::PubAck(Ack::decode(&mut r, version)?),
            PacketType::PubRec => Self::PubRec(Ack::decode(&mut r, version)?),
            PacketType::PubRel => Self::PubRel(Ack::decode(&mut r, version)?),
            PacketType::PubComp => Self::PubComp(Ack::decode(&mut r, version)?),
            PacketType::Subscribe => Self::Subscribe(Subscribe::decode(&mut r, version)?),
            PacketType::SubAck => Self::SubAck(SubAck::decode(&mut r, version)?),
            PacketType::Unsubscribe => Self::Unsubscribe(Unsubscribe::decode(&mut r, version)?),
            PacketType::UnsubAck => Self::UnsubAck(UnsubAck::decode(&mut r, version)?),
            PacketType::PingReq => Self::PingReq,
            PacketType::PingResp => Self::PingResp,
            PacketType::Disconnect => Self::Disconnect(Disconnect::decode(&mut r, version)?),
            PacketType::Auth => Self::Auth(Auth::decode(&mut r)?),
        };
        r.finish()?;
        Ok(packet)
    }
}

/// The size of a whole packet with this remaining length, checking the largest one.
pub(crate) fn total_len(remaining: usize) -> Result<usize, EncodeError> {
    let rem = u32::try_from(remaining)
        .ok()
        .filter(|&r| r <= MAX_VARINT)
        .ok_or(EncodeError::PacketTooLarge(remaining))?;
    Ok(1 + wire::varint_len(rem) + remaining)
}

/// Checks the remaining length, reserves room for the packet and writes its fixed header.
pub(crate) fn put_header(
    buf: &mut BytesMut,
    packet: PacketType,
    flags: u8,
    remaining: usize,
) -> Result<(), EncodeError> {
    let total = total_len(remaining)?;
    buf.reserve(total);
    buf.put_u8((packet as u8) << 4 | flags);
    wire::put_varint(buf, remaining as u32);
    Ok(())
}
