//! The WebSocket upgrade (MQTT §6): the configured path, subprotocol `mqtt` (or the older
//! `mqttv3.1`) chosen in the response, binary frames carrying the byte stream.

use shoal_transport::WsIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The subprotocols MQTT clients offer, in our order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Answers the upgrade request on `stream`: refuses another path (404) or a request that
/// offers no MQTT subprotocol (400), with a body saying why.
pub(crate) async fn accept<S>(
    stream: S,
    path: &str,
    max_packet_size: u32,
) -> Result<WsIo<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let expected = path.to_owned();
    // The callback's type is tungstenite's: its error is an HTTP response, large by nature.
    #[allow(clippy::result_large_err)]
    let check =
        move |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
            if request.uri().path() != expected {
                return Err(refusal(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no MQTT endpoint at {}; it is at {expected}\n",
                        request.uri().path()
                    ),
                ));
            }
            let offered = request
                .headers()
                .get_all("sec-websocket-protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect::<Vec<_>>();
            let Some(chosen) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "the Sec-WebSocket-Protocol header must offer mqtt (or mqttv3.1)\n".into(),
                ));
            };
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
            Ok(response)
        };
    // Small buffers: an idle WebSocket costs little; a message holds at most one packet of
    // the largest size plus whatever else shares its frame.
    let limit = max_packet_size as usize + 64 * 1024;
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(limit * 4)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config))
        .await
        .map(WsIo::new)
        .map_err(|e| e.to_string())
}

fn refusal(status: StatusCode, body: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    response
}
