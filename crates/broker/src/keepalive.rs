//! Keep alive for every connection of the node, on one wheel instead of a timer per
//! connection: an idle connection's task then holds no timer.
//!
//! A session is filed under the tick (`TICK_MS`) of its keep-alive deadline when its
//! connection attaches. When the tick comes, the session's deadline is read again: past, the
//! connection is closed (DISCONNECT 0x8D, the Will) and its task woken; moved on by packets
//! that came in since, the session is filed again under the new deadline. So a connection
//! costs the wheel one entry and one look per keep-alive period, whatever its traffic.
//!
//! A session filed twice (its client reconnected) keeps only its latest entry:
//! `SessionSlot::keep_alive_tick` names the tick that counts, and others are skipped.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use shoal_session::Timestamp;

use crate::broker::{Broker, lock};
use crate::slot::SessionSlot;

/// The wheel's resolution: a connection is closed at most this much after its deadline.
const TICK_MS: u64 = 100;

/// Sessions by the tick of their keep-alive deadline (session ids, looked up when due).
#[derive(Debug, Default)]
pub(crate) struct KeepAlive {
    ticks: Mutex<BTreeMap<u64, Vec<u64>>>,
}

impl KeepAlive {
    /// Files `slot` under its session's keep-alive deadline, if it has one.
    pub(crate) fn watch(&self, slot: &SessionSlot, deadline: Option<Timestamp>) {
        let Some(deadline) = deadline else {
            slot.keep_alive_tick.store(0, Ordering::Release);
            return;
        };
        let tick = deadline.as_millis().div_ceil(TICK_MS).max(1);
        slot.keep_alive_tick.store(tick, Ordering::Release);
        lock(&self.ticks).entry(tick).or_default().push(slot.id);
    }

    /// When the next session is due, if any is filed.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        let ticks = lock(&self.ticks);
        let (&tick, _) = ticks.first_key_value()?;
        Some(Timestamp(tick * TICK_MS))
    }

    /// Looks at every session due by `now`: closes the connections silent past their keep
    /// alive and files the others again.
    pub(crate) fn run_due(&self, broker: &Broker, now: Timestamp) {
        loop {
            let due = {
                let mut ticks = lock(&self.ticks);
                match ticks.first_entry() {
                    Some(entry) if *entry.key() * TICK_MS <= now.as_millis() => {
                        let tick = *entry.key();
                        (tick, entry.remove())
                    }
                    _ => return,
                }
            };
            let (tick, ids) = due;
            for id in ids {
                let Some(slot) = broker.slot_by_id(id) else {
                    continue;
                };
                // Under the session's lock, as attaching is: a connection attaching now
                // files itself after this look or is seen by it.
                let mut session = slot.lock();
                if slot.keep_alive_tick.load(Ordering::Acquire) != tick {
                    continue;
                }
                session.handle_timeout(now);
                let next = session.poll_timeout();
                self.watch(&slot, next);
                drop(session);
                if next.is_none() {
                    // Closed (or detached): its connection acts on it when woken.
                    slot.notify();
                }
            }
        }
    }
}
