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

    /// One call with the bearer token: the status and the body as text.
    pub async fn call(&mut self, method: &str, path: &str, body: Option<String>) -> Result<(u16, String), BenchError> {
        let authorization = format!("Bearer {}", self.token);
        self.call_with(method, path, body, &authorization).await
    }

    /// One call with this `authorization` header (an ingestion source's
    /// write key, [`basic`]): the status and the body as text.
    pub async fn call_with(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
        authorization: &str,
    ) -> Result<(u16, String), BenchError> {
        self.sender.ready().await.map_err(failed)?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", authorization);
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

/// HTTP Basic with `user` and an empty password, as Segment's libraries
/// send a write key (`Basic base64("<key>:")`).
pub fn basic(user: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:").into_bytes();
    let mut out = String::with_capacity(6 + bytes.len().div_ceil(3) * 4);
    out.push_str("Basic ");
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_is_the_write_key_and_an_empty_password_in_base64() {
        assert_eq!(super::basic("key"), "Basic a2V5Og==");
        assert_eq!(super::basic("ab"), "Basic YWI6");
        assert_eq!(super::basic("abcd"), "Basic YWJjZDo=");
    }
}
