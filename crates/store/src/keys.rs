//! The key layouts of the trees.
//!
//! ```text
//! sessions   client id
//! queues     u16 length, client id, u64 sequence          a queued message
//!            u16 length, client id, u64 sequence, 0x01    its delivery state, if changed
//! retained   topic
//! expiry     u64 expires at (ms), u8 kind, key in its tree  (empty value)
//! ```
//!
//! Integers are big-endian so that byte order is numeric order: a prefix scan of a client's
//! queue returns its messages by sequence, each state right after its message, and a range
//! scan of `expiry` up to a time returns what has expired by then. The length in front of
//! the client id keeps one client's prefix from being the start of another's ("a" and
//! "ab").

use shoal_codec::MqttString;
use shoal_session::Timestamp;

/// The last byte of a delivery-state key.
const STATE_SUFFIX: u8 = 0x01;

/// The prefix of every `queues` key of a client.
pub(crate) fn queue_prefix(client_id: &MqttString) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + client_id.len() + 9);
    // An `MqttString` is at most 65,535 bytes: its length fits.
    key.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    key.extend_from_slice(client_id.as_bytes());
    key
}

/// The key of a queued message.
pub(crate) fn queue_key(client_id: &MqttString, seq: u64) -> Vec<u8> {
    let mut key = queue_prefix(client_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The key of the delivery state of the message at `queue_key`.
pub(crate) fn state_key(queue_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(queue_key.len() + 1);
    key.extend_from_slice(queue_key);
    key.push(STATE_SUFFIX);
    key
}

/// What a `queues` key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueEntry {
    /// A queued message.
    Message,
    /// The delivery state of the message with the same sequence number.
    State,
    /// A QoS 2 receipt of the client (a packet identifier awaiting PUBREL), kept in the
    /// queues tree so that it is written in one atomic batch with the copies that its
    /// message queued for subscribers.
    Receipt(u16),
    /// A subscription of the client (its filter follows the marker): each is an entry of
    /// its own, so a SUBSCRIBE writes what it adds, not the session's whole list.
    Subscription,
}

/// The sequence-number position of receipts: after every message (sequence numbers count
/// up from 0 and never reach it).
const RECEIPT_SEQ: u64 = u64::MAX;
/// The byte after `RECEIPT_SEQ` that marks a receipt.
const RECEIPT_SUFFIX: u8 = 0x02;
/// The byte after `RECEIPT_SEQ` that marks a subscription.
const SUBSCRIPTION_SUFFIX: u8 = 0x03;

/// The prefix of every subscription of `client_id`.
pub(crate) fn subscription_prefix(client_id: &MqttString) -> Vec<u8> {
    let mut key = queue_key(client_id, RECEIPT_SEQ);
    key.push(SUBSCRIPTION_SUFFIX);
    key
}

/// The key of the subscription of `client_id` to `filter`.
pub(crate) fn subscription_key(client_id: &MqttString, filter: &str) -> Vec<u8> {
    let mut key = subscription_prefix(client_id);
    key.extend_from_slice(filter.as_bytes());
    key
}

/// The prefix of every receipt of `client_id`.
pub(crate) fn receipt_prefix(client_id: &MqttString) -> Vec<u8> {
    let mut key = queue_key(client_id, RECEIPT_SEQ);
    key.push(RECEIPT_SUFFIX);
    key
}

/// The key of the receipt of packet identifier `packet_id` of `client_id`.
pub(crate) fn receipt_key(client_id: &MqttString, packet_id: u16) -> Vec<u8> {
    let mut key = receipt_prefix(client_id);
    key.extend_from_slice(&packet_id.to_be_bytes());
    key
}

/// A `queues` key taken apart: client id bytes, sequence number, entry.
pub(crate) fn parse_queue_key(key: &[u8]) -> Option<(&[u8], u64, QueueEntry)> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let client_id = rest.get(..len)?;
    let rest = &rest[len..];
    let (seq, entry) = match rest.len() {
        8 => (rest, QueueEntry::Message),
        9 if rest[8] == STATE_SUFFIX => (&rest[..8], QueueEntry::State),
        11 if rest[8] == RECEIPT_SUFFIX => (
            &rest[..8],
            QueueEntry::Receipt(u16::from_be_bytes([rest[9], rest[10]])),
        ),
        n if n >= 9 && rest[8] == SUBSCRIPTION_SUFFIX => (&rest[..8], QueueEntry::Subscription),
        _ => return None,
    };
    let seq = u64::from_be_bytes(seq.try_into().ok()?);
    Some((client_id, seq, entry))
}

/// The kind of record an expiry index entry points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A session in `sessions`, key = client id.
    Session = 0,
    /// A queued message in `queues`, key = its queue key.
    Queued = 1,
    /// A retained message in `retained`, key = topic.
    Retained = 2,
}

/// The key of an expiry index entry.
pub(crate) fn index_key(at: Timestamp, kind: Kind, key: &[u8]) -> Vec<u8> {
    let mut index = Vec::with_capacity(9 + key.len());
    index.extend_from_slice(&at.as_millis().to_be_bytes());
    index.push(kind as u8);
    index.extend_from_slice(key);
    index
}

/// An expiry index key taken apart.
pub(crate) fn parse_index_key(index: &[u8]) -> Option<(Timestamp, Kind, &[u8])> {
    let (at, rest) = index.split_first_chunk::<8>()?;
    let (&kind, key) = rest.split_first()?;
    let kind = match kind {
        0 => Kind::Session,
        1 => Kind::Queued,
        2 => Kind::Retained,
        _ => return None,
    };
    Some((Timestamp(u64::from_be_bytes(*at)), kind, key))
}

/// The first index key after every entry that expires at `now` or before.
pub(crate) fn index_end(now: Timestamp) -> Option<[u8; 8]> {
    now.as_millis().checked_add(1).map(u64::to_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &'static str) -> MqttString {
        MqttString::from_static(s)
    }

    #[test]
    fn one_client_prefix_is_never_the_start_of_another_key() {
        let a = queue_prefix(&id("a"));
        for key in [
            queue_key(&id("ab"), 0),
            queue_key(&id("ab"), u64::MAX),
            queue_key(&id(""), 0x0161),
        ] {
            assert!(!key.starts_with(&a), "{key:?}");
        }
        assert!(queue_key(&id("a"), 7).starts_with(&a));
    }

    #[test]
    fn queue_keys_sort_by_sequence_with_states_after_their_message() {
        let c = id("c");
        let mut keys = [
            queue_key(&c, 256),
            state_key(&queue_key(&c, 1)),
            queue_key(&c, 2),
            queue_key(&c, 1),
        ];
        keys.sort();
        let parsed: Vec<_> = keys
            .iter()
            .map(|k| parse_queue_key(k).expect("parses"))
            .collect();
        assert_eq!(
            parsed,
            [
                (&b"c"[..], 1, QueueEntry::Message),
                (&b"c"[..], 1, QueueEntry::State),
                (&b"c"[..], 2, QueueEntry::Message),
                (&b"c"[..], 256, QueueEntry::Message),
            ]
        );
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        assert_eq!(parse_queue_key(&[]), None);
        assert_eq!(parse_queue_key(&[0, 5, b'a']), None);
        assert_eq!(parse_queue_key(&[0, 0, 1, 2, 3]), None);
        assert_eq!(parse_queue_key(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 9]), None);
        assert_eq!(parse_index_key(&[0; 8]), None);
        assert_eq!(parse_index_key(&[0, 0, 0, 0, 0, 0, 0, 0, 3]), None);
    }

    #[test]
    fn index_keys_sort_by_time_first() {
        let early = index_key(Timestamp(255), Kind::Retained, b"zzz");
        let late = index_key(Timestamp(256), Kind::Session, b"a");
        assert!(early < late);
        assert!(late.as_slice() < &index_end(Timestamp(256)).expect("not the end of time")[..]);
        assert!(late.as_slice() >= &index_end(Timestamp(255)).expect("not the end of time")[..]);
        assert_eq!(
            parse_index_key(&late),
            Some((Timestamp(256), Kind::Session, &b"a"[..]))
        );
        assert_eq!(index_end(Timestamp(u64::MAX)), None);
    }
}
