//! A raw HTTP/1.1 client for the harness's local servers: one request at a
//! time on a keep-alive connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// The status line, the headers (lowercased names) and the body of a response.
pub type Response = (String, Vec<(String, String)>, String);

/// One request on `stream`; its response.
#[allow(dead_code)] // Not every test file sends headers of its own.
pub fn request(stream: &mut TcpStream, method: &str, path: &str, body: &str) -> Response {
    request_with_headers(stream, method, path, &[], body)
}

/// One request on `stream` with `headers` besides Host and Content-Length; its response.
pub fn request_with_headers(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).expect("write request");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("header name");
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().expect("length"))
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).expect("body");
    (
        status.trim_end().to_string(),
        headers,
        String::from_utf8(body).expect("utf-8"),
    )
}

/// The value of the header `name` (lowercase) of a response.
#[allow(dead_code)]
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}
