//! Measuring idle connections: a global allocator that counts live bytes and blocks by size
//! class, and a client that connects and then stays idle. Shared by `tests/idle_memory.rs`
//! and `examples/idle_bytes.rs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BYTES: [AtomicIsize; 64] = [const { AtomicIsize::new(0) }; 64];
static BLOCKS: [AtomicIsize; 64] = [const { AtomicIsize::new(0) }; 64];

/// The power-of-two class of a size: `n < 1 << class`.
fn class(n: usize) -> usize {
    (usize::BITS - n.leading_zeros()) as usize
}

fn count(size: usize, sign: isize) {
    let bytes = size as isize * sign;
    LIVE.fetch_add(bytes, Ordering::Relaxed);
    BYTES[class(size)].fetch_add(bytes, Ordering::Relaxed);
    BLOCKS[class(size)].fetch_add(sign, Ordering::Relaxed);
}

/// `System`, counting live bytes and blocks by size class.
pub(crate) struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is the one `System::alloc` needs.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        count(layout.size(), -1);
    }
}

/// The live heap: bytes in all, and (bytes, blocks) by power-of-two size class.
pub(crate) fn snapshot() -> (isize, Vec<(isize, isize)>) {
    let classes = (0..64)
        .map(|i| {
            (
                BYTES[i].load(Ordering::Relaxed),
                BLOCKS[i].load(Ordering::Relaxed),
            )
        })
        .collect();
    (LIVE.load(Ordering::Relaxed), classes)
}

/// A minimal MQTT 5 CONNECT, clean start, keep alive 60 s.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut packet = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0];
    packet.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    packet.extend_from_slice(client_id.as_bytes());
    packet[1] = (packet.len() - 2) as u8;
    packet
}

/// Connects with `client_id`, reads CONNACK, and returns the idle connection.
pub(crate) async fn open(addr: std::net::SocketAddr, client_id: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&connect_packet(client_id))
        .await
        .expect("CONNECT");
    let mut connack = [0u8; 64];
    let n = stream.read(&mut connack).await.expect("CONNACK");
    assert!(n > 0 && connack[0] == 0x20, "expected CONNACK");
    stream
}

/// A node with the defaults on loopback ports, its data in `dir`.
pub(crate) async fn node(dir: &std::path::Path) -> shoal_broker::Node {
    let raw = shoal_broker::RawConfig {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
        data_dir: Some(dir.into()),
        sys_interval: Some(0),
        ..Default::default()
    };
    let config = shoal_broker::Config::from_raw(raw).expect("config");
    shoal_broker::Node::start(config, None)
        .await
        .expect("node starts")
}
