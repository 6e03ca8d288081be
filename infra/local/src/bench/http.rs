//! A keep-alive HTTP/1.1 client over loopback (hyper, already in the tree for axum).

use super::BenchError;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use std::net::SocketAddr;

pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    token: String,
    host: String,
}

fn failed(e: impl std::fmt::Display) -> BenchError {
    BenchError::Other(format!("HTTP client: {e}"))
}

impl Client {
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Self, BenchError> {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(failed)?;
        stream.set_nodelay(true).map_err(failed)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(failed)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Client {
            sender,
            token: token.to_string(),
            host: addr.to_string(),
        })
    }

    /// One call: the status and the body as text.
    pub async fn call(&mut self, method: &str, path: &str, body: Option<String>) -> Result<(u16, String), BenchError> {
        self.sender.ready().await.map_err(failed)?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(failed)?;
        let response = self.sender.send_request(request).await.map_err(failed)?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map_err(failed)?.to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }
}
