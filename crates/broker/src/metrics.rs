//! The metrics a node exports (Prometheus, on the admin listener's `/metrics`): every name
//! is here, following Prometheus conventions (`_total` counters, `_bytes`, `_seconds`).

/// Gauge: client connections open now.
pub const CONNECTIONS: &str = "shoal_connections";
/// Counter: CONNECT outcomes, by `result` (the CONNACK reason, `success` for accepted).
pub const CONNECTS: &str = "shoal_connects_total";
/// Counter: connections ended, by `reason` (the MQTT 5 reason name) and `by`
/// (client, server, network).
pub const DISCONNECTS: &str = "shoal_disconnects_total";
/// Counter: protocol violations and malformed packets, by `rule` (the statement broken).
pub const PROTOCOL_ERRORS: &str = "shoal_protocol_errors_total";
/// Counter: PUBLISH received from clients, by `qos`.
pub const MESSAGES_RECEIVED: &str = "shoal_messages_received_total";
/// Counter: PUBLISH sent to clients, by `qos`.
pub const MESSAGES_SENT: &str = "shoal_messages_sent_total";
/// Counter: bytes read from clients.
pub const BYTES_RECEIVED: &str = "shoal_received_bytes_total";
/// Counter: bytes written to clients.
pub const BYTES_SENT: &str = "shoal_sent_bytes_total";
/// Counter: messages dropped, by `cause` (queue_full, expired, too_large, qos0_offline,
/// no_subscribers).
pub const MESSAGES_DROPPED: &str = "shoal_messages_dropped_total";
/// Gauge: messages waiting in session queues (sampled).
pub const QUEUED_MESSAGES: &str = "shoal_queued_messages";
/// Gauge: sessions held, connected or not.
pub const SESSIONS: &str = "shoal_sessions";
/// Gauge: subscriptions held.
pub const SUBSCRIPTIONS: &str = "shoal_subscriptions";
/// Gauge: retained messages held.
pub const RETAINED_MESSAGES: &str = "shoal_retained_messages";
/// Counter: store writes and flushes that failed (each answered with failure codes).
pub const STORE_FAILURES: &str = "shoal_store_failures_total";
/// Counter: acknowledgements answered with a failure because what they confirm is not
/// durable (`kind`: puback, pubrec, suback, connack).
pub const ACKS_FAILED: &str = "shoal_acks_failed_total";
/// Counter: retained PUBLISH refused (PUBACK 0x97) because the node holds
/// `max_retained_messages` or `max_retained_bytes`.
pub const RETAINED_REFUSED: &str = "shoal_retained_refused_total";
/// Counter: connections closed because a started packet did not complete within
/// `packet_timeout`.
pub const PACKET_TIMEOUTS: &str = "shoal_packet_timeouts_total";
/// Histogram: how long a durable flush of the store took.
pub const STORE_FLUSH_SECONDS: &str = "shoal_store_flush_seconds";
/// Counter: Wills published.
pub const WILLS_PUBLISHED: &str = "shoal_wills_published_total";
/// Counter: sessions removed because their expiry interval passed.
pub const SESSIONS_EXPIRED: &str = "shoal_sessions_expired_total";
/// Counter: connections closed before MQTT, by `listener` and `cause` (max_connections,
/// banned, handshake_queue).
pub const CONNECTIONS_REFUSED: &str = "shoal_connections_refused_total";
/// Histogram: how long handshakes (PROXY, TLS, WebSocket, QUIC) took, by `listener`.
pub const HANDSHAKE_SECONDS: &str = "shoal_handshake_seconds";
/// Counter: handshakes that failed or timed out, by `listener`.
pub const HANDSHAKES_FAILED: &str = "shoal_handshakes_failed_total";
/// Counter: authentication failures, by `reason`: bad_credentials, not_authorized,
/// banned, client_id_owner, and refusals without a password check: user_limit,
/// address_limit (`auth_failures_per_*`), hash_queue_full (`auth_hash_queue`).
pub const AUTH_FAILURES: &str = "shoal_auth_failures_total";
/// Counter: password verifications that needed a hash (PBKDF2) and ran, within
/// `auth_max_concurrent_hashes`.
pub const AUTH_HASHES: &str = "shoal_auth_hashes_total";
/// Counter: ACL denials, by `action` (publish, subscribe, will, deliver).
pub const ACL_DENIED: &str = "shoal_acl_denied_total";
/// Counter: client ids banned for flapping.
pub const FLAPPING_BANS: &str = "shoal_flapping_bans_total";
/// Counter: times this node lost its cluster membership lease (cut off from the majority) and
/// disconnected its clients.
pub const CLUSTER_LEASE_LOST: &str = "shoal_cluster_lease_lost_total";
/// Counter, label `qos`: publications forwarded to another node of the cluster (one per
/// destination node).
pub const CLUSTER_FORWARDED: &str = "shoal_cluster_forwarded_total";
/// Histogram: how long a forwarded QoS 1/2 publication took from being queued for another
/// node to that node's acceptance (queued and flushed there): what a PUBACK across nodes
/// waits for.
pub const CLUSTER_FORWARD_SECONDS: &str = "shoal_cluster_forward_seconds";
/// Counter: messages queued for persistent sessions of this node's clients and removed
/// again (delivered and acknowledged) before this node proposed them to their session
/// shard: left out of the proposal but for their removal.
pub const SESSION_WRITES_SKIPPED: &str = "shoal_session_writes_skipped_total";
/// Gauge, label `state` (`up`, `down`): members of the cluster as this node's `meta` says.
pub const CLUSTER_NODES: &str = "shoal_cluster_nodes";
/// Gauge: 1 while this node's membership lease holds (it serves clients), else 0.
pub const CLUSTER_LEASE: &str = "shoal_cluster_lease";
/// Gauge, label `group`: 1 for each Raft group this node leads, else 0.
pub const RAFT_LEADER: &str = "shoal_raft_leader";
/// Gauge, label `group`: entries of the group's log on this node not yet applied.
pub const RAFT_COMMIT_LAG: &str = "shoal_raft_commit_lag";
