//! Writes that a later write of the same run undoes: a message queued for a session and
//! removed again (its subscriber acknowledged it) before either write reached the store.
//!
//! Under load, a persistent subscriber that is online gets a message at once and answers
//! it (PUBACK, or PUBCOMP at QoS 2) while the message's first write still waits for the
//! session shard's next proposal. Both then travel in one entry: the message, payload and
//! all, written to the log and applied on every replica, only to be removed again. Here
//! the first write goes and the removal stays: the outcome is the same, since the removal
//! deletes whatever is at that sequence number, and a run applied twice (a replica that
//! crashed before its applied log id moved) ends the same way too, which would not hold
//! if the removal went as well (a message written by the first, partial application would
//! stay for ever).

use std::collections::{HashMap, HashSet};

use shoal_codec::MqttString;

use crate::batch::{Op, WriteBatch};

/// Drops from `batches`, one run of writes in order, each queued message's first write
/// ([`WriteBatch::enqueue`]) and its state changes when a later write of the run removes
/// the message ([`WriteBatch::remove_outbound`]); the removal stays. Only where both come
/// from the same owner epoch of the client ([`WriteBatch::fence`]; batches without fences
/// count as one epoch): a command refused for a newer owner must not take the other's
/// write with it. Returns how many messages were dropped.
pub fn skip_delivered(batches: &mut [WriteBatch]) -> usize {
    let epoch = |batch: &WriteBatch, client: &MqttString| {
        batch
            .fences()
            .iter()
            .find(|(c, _)| c == client)
            .map(|(_, e)| *e)
    };
    // Each message's first write: its epoch, or `None` once it is written twice.
    let mut enqueued: HashMap<(MqttString, u64), Option<Option<u64>>> = HashMap::new();
    let mut skipped: HashSet<(MqttString, u64)> = HashSet::new();
    for batch in batches.iter() {
        for op in &batch.ops {
            match op {
                Op::Enqueue { client_id, seq, .. } => {
                    let key = (client_id.clone(), *seq);
                    // Written again (a number used twice in one run): left alone.
                    skipped.remove(&key);
                    enqueued
                        .entry(key)
                        .and_modify(|e| *e = None)
                        .or_insert(Some(epoch(batch, client_id)));
                }
                Op::RemoveOutbound { client_id, seq } => {
                    let key = (client_id.clone(), *seq);
                    if let Some(Some(at)) = enqueued.get(&key)
                        && *at == epoch(batch, client_id)
                    {
                        skipped.insert(key);
                    }
                }
                _ => {}
            }
        }
    }
    if skipped.is_empty() {
        return 0;
    }
    for batch in batches.iter_mut() {
        batch.ops.retain(|op| match op {
            Op::Enqueue { client_id, seq, .. } | Op::SetOutboundState { client_id, seq, .. } => {
                !skipped.contains(&(client_id.clone(), *seq))
            }
            _ => true,
        });
    }
    skipped.len()
}
