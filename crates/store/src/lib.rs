//! shoal-store: a node's persistent state on sled — sessions, their outbound queues and
//! retained messages — written through by the broker and read back at start.
//!
//! - One sled database per node, one tree per purpose: `sessions` (by client id), `queues`
//!   (by client id and sequence number, so a prefix scan returns a queue in order),
//!   `retained` (by topic), and `expiry`, an index by expiry time that lets
//!   [`Store::remove_expired`] read only what has expired.
//! - Records are in a versioned binary format of our own; a message is stored as its
//!   MQTT 5 PUBLISH encoding behind a small header.
//! - Durability is explicit: writes are in memory until [`Store::flush`], which many
//!   callers share (group commit) and which runs the fsync on a thread of its own. When
//!   a flush returns `Ok`, every write that returned before it was called survives a
//!   process crash and, with the syncs that sled 0.34 leaves out added, a power loss.
//!
//! What it never does: keep live state (the broker holds that in memory and writes
//! changes through), decide expiry by its own clock (time is an input), rely on a
//! background flush for data that someone acknowledges, or panic on bytes read back (a
//! record that does not decode is reported with its tree and key).
//!
//! Main types: [`Store`], [`StoreConfig`], [`WriteBatch`], [`FlushReceipt`],
//! [`ExpiredReport`], [`Loaded`], [`StoreError`].

mod batch;
mod config;
mod delivered;
mod disk_sync;
mod error;
mod expiry;
mod group_commit;
mod keys;
mod loaded;
mod queue;
mod record;
mod replica;
mod retained;
mod sessions;
mod shards;
mod store;

pub use batch::{ReceiptTag, WriteBatch};
pub use config::StoreConfig;
pub use delivered::skip_delivered;
pub use error::{CorruptRecord, DecodeRecordError, EncodeRecordError, RecordKey, StoreError};
pub use expiry::ExpiredReport;
pub use group_commit::{FlushReceipt, FlushStats};
pub use loaded::Loaded;
pub use record::{message_from_bytes, message_to_bytes};
pub use replica::{SessionTree, TreeEntry};
pub use shards::session_shard;
pub use store::Store;
