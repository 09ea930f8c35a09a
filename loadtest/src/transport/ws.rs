//! WebSocket (and WebSocket over TLS): the upgrade with subprotocol `mqtt`; the byte stream
//! over binary messages is shoal-transport's `WsIo`.

use shoal_transport::WsIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::transport::{BrokerUrl, TransportError};

/// Upgrades `stream` to a WebSocket carrying MQTT.
pub(crate) async fn handshake<S>(url: &BrokerUrl, stream: S) -> Result<WsIo<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url
        .to_string()
        .into_client_request()
        .map_err(|e| TransportError::WebSocket(e.to_string()))?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let (ws, _response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| TransportError::WebSocket(e.to_string()))?;
    Ok(WsIo::new(ws))
}
