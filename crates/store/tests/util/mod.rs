//! Records and a store in a temporary folder, for the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use shoal_codec::{MqttString, PacketId, PublishProperties, QoS, SubscriptionOptions};
use shoal_session::{
    Message, OutboundMessage, OutboundState, SessionRecord, SubscriptionRecord, Timestamp,
    WillRecord,
};
use shoal_store::{Store, StoreConfig};

pub fn open(path: &Path) -> Store {
    Store::open(path, StoreConfig::default()).expect("the store opens")
}

/// sled's own database at `path`, bypassing the store (to leave what a crash leaves). A
/// store just dropped may hold the folder's lock a moment longer (its flush thread lets go
/// of its handle last): tried again for up to 10 s.
#[allow(dead_code)]
pub fn raw_sled(path: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("sled opens: {e}"),
        }
    }
}

pub fn id(s: &str) -> MqttString {
    MqttString::try_from(s).expect("a valid MQTT string")
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

pub fn message(topic: &str, payload: &[u8], expires_at: Option<u64>) -> Message {
    Message {
        topic: id(topic),
        payload: Bytes::copy_from_slice(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties {
            content_type: Some(id("text/plain")),
            user_properties: vec![(id("k"), id("v"))],
            ..PublishProperties::default()
        },
        expires_at: expires_at.map(Timestamp),
        received_at: Timestamp(1),
    }
}

pub fn outbound(message: Message, state: OutboundState) -> OutboundMessage {
    OutboundMessage {
        message: Arc::new(message),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![NonZeroU32::MIN],
        state,
    }
}

/// A queued message whose payload says where it is.
pub fn queued(client: &str, seq: u64, expires_at: Option<u64>) -> OutboundMessage {
    let payload = format!("{client}:{seq}");
    outbound(
        message("q/t", payload.as_bytes(), expires_at),
        OutboundState::Queued,
    )
}

/// A session that expires `interval` seconds after `disconnected_at` (ms), if given.
pub fn session(client: &str, interval: u32, disconnected_at: Option<u64>) -> SessionRecord {
    SessionRecord {
        client_id: id(client),
        expiry_interval: interval,
        subscriptions: vec![SubscriptionRecord {
            filter: id("a/+/c"),
            options: SubscriptionOptions::with_qos(QoS::ExactlyOnce),
            identifier: NonZeroU32::new(7),
        }],
        will: Some(Box::new(WillRecord {
            message: message("will/topic", b"gone", None),
            delay: 5,
        })),
        disconnected_at: disconnected_at.map(Timestamp),
        incoming_qos2: vec![pid(3), pid(4)],
    }
}
