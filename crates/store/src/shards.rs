//! Session shards: which of the session groups (`sessions/0..S`) a client's session
//! belongs to, how a batch of writes splits between them, and which shard each entry of
//! the session trees belongs to (a snapshot of a shard carries its own entries only).
//!
//! Every replica applies every shard's writes to the one set of session trees; a shard
//! owns the entries of its clients, and the marks written through it (a mark names a
//! client or a shared group, so the shard it was written in is kept in its value).

use crate::batch::{Op, WriteBatch};
use crate::keys::{Kind, parse_index_key, parse_queue_key};
use crate::replica::SessionTree;

/// The session shard of `client_id` among `shards` (FNV-1a of its bytes). Every node must
/// agree: the function and the number of shards never change for a data folder.
pub fn session_shard(client_id: &[u8], shards: u16) -> u16 {
    if shards <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in client_id {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(shards)) as u16
}

/// The shard an entry of the session trees belongs to.
pub(crate) fn entry_shard(tree: SessionTree, key: &[u8], value: &[u8], shards: u16) -> u16 {
    if shards <= 1 {
        return 0;
    }
    let client = match tree {
        SessionTree::Sessions => Some(key),
        SessionTree::Queues => parse_queue_key(key).map(|(client, _, _)| client),
        SessionTree::Expiry => match parse_index_key(key) {
            Some((_, Kind::Session, client)) => Some(client),
            Some((_, Kind::Queued, queue_key)) => {
                parse_queue_key(queue_key).map(|(client, _, _)| client)
            }
            // Not a session's: the first shard carries it.
            Some((_, Kind::Retained, _)) | None => None,
        },
        SessionTree::Marks => return mark_shard(value),
    };
    client.map_or(0, |client| session_shard(client, shards))
}

/// The shard a mark was written through, from its stored value (empty: an older mark,
/// written when there was one shard).
pub(crate) fn mark_shard(value: &[u8]) -> u16 {
    value
        .first_chunk::<2>()
        .map_or(0, |b| u16::from_be_bytes(*b))
}

impl Op {
    /// The client whose session the write changes, if it is one's.
    fn client(&self) -> Option<&[u8]> {
        match self {
            Self::PutSession { client_id, .. }
            | Self::RemoveSession { client_id }
            | Self::Enqueue { client_id, .. }
            | Self::SetOutboundState { client_id, .. }
            | Self::RemoveOutbound { client_id, .. }
            | Self::PutReceipt { client_id, .. }
            | Self::RemoveReceipt { client_id, .. }
            | Self::PutSubscription { client_id, .. }
            | Self::RemoveSubscription { client_id, .. } => Some(client_id.as_bytes()),
            // A mark of a shared group, a released tag, a retained message: they go with
            // the writes around them.
            Self::PutMark { .. } | Self::ReleaseTag { .. } => None,
            Self::PutRetained { .. } | Self::RemoveRetained { .. } => None,
        }
    }
}

impl WriteBatch {
    /// Splits the batch between `shards` session shards, keeping the order of each shard's
    /// writes: each client's writes (and fences) go to its shard. A mark goes to its
    /// client's shard if it names one, else with the client writes before it (a copy and
    /// the mark of its shared group are one atomic write); a released tag goes with the
    /// writes around it too (its apply removes every mark of the tag, in whichever shard
    /// they were written: only dedup state, of a message no resend can come for).
    pub fn split(&self, shards: u16) -> Vec<(u16, Self)> {
        let mut parts: Vec<(u16, Self)> = Vec::new();
        let mut context = self
            .fences()
            .first()
            .map_or(0, |(client, _)| session_shard(client.as_bytes(), shards));
        for op in &self.ops {
            let shard = match op {
                Op::PutMark { name, .. } if name.first().is_some_and(|b| *b != 0) => {
                    session_shard(name, shards)
                }
                op => op
                    .client()
                    .map_or(context, |client| session_shard(client, shards)),
            };
            context = shard;
            let mut op = op.clone();
            if let Op::PutMark { shard: kept, .. } = &mut op {
                *kept = shard;
            }
            let at = match parts.iter().position(|(s, _)| *s == shard) {
                Some(at) => at,
                None => {
                    parts.push((shard, Self::new()));
                    parts.len() - 1
                }
            };
            parts[at].1.ops.push(op);
        }
        for (client, epoch) in self.fences() {
            let shard = session_shard(client.as_bytes(), shards);
            if let Some((_, part)) = parts.iter_mut().find(|(s, _)| *s == shard) {
                part.fence(client, *epoch);
            }
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_codec::{MqttString, PacketId};

    fn id(s: &str) -> MqttString {
        MqttString::try_from(s.to_owned()).expect("client id")
    }

    /// Two client ids of different shards among 4.
    fn two_shards() -> (MqttString, MqttString) {
        let a = id("a");
        let b = (0..100)
            .map(|i| id(&format!("b{i}")))
            .find(|b| session_shard(b.as_bytes(), 4) != session_shard(a.as_bytes(), 4))
            .expect("another shard");
        (a, b)
    }

    #[test]
    fn one_shard_takes_everything_and_shards_spread() {
        assert_eq!(session_shard(b"anything", 1), 0);
        let seen: std::collections::BTreeSet<u16> = (0..64)
            .map(|i| session_shard(format!("client-{i}").as_bytes(), 3))
            .collect();
        assert_eq!(seen.len(), 3, "64 client ids fall in every one of 3 shards");
    }

    #[test]
    fn a_batch_splits_by_client_and_marks_follow_their_copy() {
        let (a, b) = two_shards();
        let (sa, sb) = (
            session_shard(a.as_bytes(), 4),
            session_shard(b.as_bytes(), 4),
        );
        let mut batch = WriteBatch::new();
        batch.fence(&a, 3);
        batch.fence(&b, 5);
        batch.put_receipt(&a, PacketId::new(1).expect("id"));
        batch.remove_outbound(&b, 7);
        // A shared group's mark (its name starts with 0) goes with b's write before it.
        batch.put_mark(9, b"\0group");
        // A client's mark goes to that client's shard wherever it stands.
        batch.put_mark(9, a.as_bytes());
        let parts = batch.split(4);
        assert_eq!(parts.len(), 2);
        let part = |s: u16| &parts.iter().find(|(p, _)| *p == s).expect("part").1;
        assert_eq!(part(sa).fences(), &[(a.clone(), 3)]);
        assert_eq!(part(sb).fences(), &[(b.clone(), 5)]);
        assert_eq!(part(sa).len(), 2, "a's receipt and a's mark");
        assert_eq!(part(sb).len(), 2, "b's write and the group's mark");
        let marks: Vec<u16> = part(sb)
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::PutMark { shard, .. } => Some(*shard),
                _ => None,
            })
            .collect();
        assert_eq!(
            marks,
            vec![sb],
            "the mark keeps the shard it is written through"
        );
        // One shard: the batch as it is.
        let whole = batch.split(1);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].1.len(), batch.len());
    }

    #[test]
    fn entries_belong_to_their_clients_shard_and_marks_to_theirs() {
        let (a, _) = two_shards();
        let sa = session_shard(a.as_bytes(), 4);
        assert_eq!(entry_shard(SessionTree::Sessions, a.as_bytes(), &[], 4), sa);
        let queue = crate::keys::queue_key(&a, 12);
        assert_eq!(entry_shard(SessionTree::Queues, &queue, &[], 4), sa);
        let index = crate::keys::index_key(shoal_session::Timestamp(5), Kind::Queued, &queue);
        assert_eq!(entry_shard(SessionTree::Expiry, &index, &[], 4), sa);
        assert_eq!(
            entry_shard(SessionTree::Marks, b"x", &3u16.to_be_bytes(), 4),
            3
        );
        assert_eq!(
            entry_shard(SessionTree::Marks, b"x", &[], 4),
            0,
            "an older mark"
        );
        // Garbage keys fall to the first shard, never a panic.
        assert_eq!(entry_shard(SessionTree::Queues, &[0xff], &[], 4), 0);
        assert_eq!(entry_shard(SessionTree::Expiry, &[1, 2], &[], 4), 0);
    }
}
