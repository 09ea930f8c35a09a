//! The enhanced-authentication hook (MQTT 5 §4.12): the AUTH exchanges of a CONNECT, and
//! re-authentication, pass through an [`EnhancedAuth`] method chosen by name. A CONNECT
//! naming a method that no registered hook handles is refused with 0x8C.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use shoal_codec::ConnectReasonCode;

/// What an authentication method decides at one step of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// The client is authenticated; the data (if any) goes back with CONNACK (or with AUTH
    /// 0x00 for a re-authentication).
    Success(Option<Bytes>),
    /// Send AUTH 0x18 (continue authentication) with this data, and wait for the client's
    /// next AUTH.
    Continue(Bytes),
    /// The client is refused with this reason (CONNACK, or DISCONNECT on a
    /// re-authentication).
    Fail(ConnectReasonCode),
}

/// One exchange in progress: its state between steps.
pub trait AuthExchange: Send + Sync {
    /// The next step, given the Authentication Data the client sent (in CONNECT for the
    /// first step, in AUTH for the next ones).
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}

/// An enhanced authentication method, registered with the node (`Hooks`).
pub trait EnhancedAuth: Send + Sync + 'static {
    /// The Authentication Method it handles, as clients name it (`SCRAM-SHA-256`, ...).
    fn method(&self) -> &str;
    /// Starts an exchange for `client_id`.
    fn begin(&self, client_id: &str) -> Box<dyn AuthExchange>;
}

/// Extensions a node runs with.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Enhanced authentication methods, by the name they handle.
    pub enhanced_auth: Vec<Arc<dyn EnhancedAuth>>,
}

impl Hooks {
    /// The method registered under `name`.
    pub(crate) fn method(&self, name: &str) -> Option<&Arc<dyn EnhancedAuth>> {
        self.enhanced_auth.iter().find(|m| m.method() == name)
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let methods: Vec<&str> = self.enhanced_auth.iter().map(|m| m.method()).collect();
        f.debug_struct("Hooks")
            .field("enhanced_auth", &methods)
            .finish()
    }
}
