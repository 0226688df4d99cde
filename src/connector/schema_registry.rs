//! A Confluent schema registry client, just enough for Avro sources: the writer schema of a
//! schema id, `GET <registry>/schemas/ids/<id>`, over plain HTTP/1.1.
//!
//! A registry is a small HTTP service, usually on the same network as the brokers; one
//! request per new schema id does not justify an HTTP client stack in the binary.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a schema could not be fetched (the registry is unreachable or answered oddly; an id the
/// registry does not know is `Ok(None)` instead).
#[derive(Debug, thiserror::Error)]
#[error("schema registry {url}: {reason}")]
pub struct RegistryError {
    /// The registry.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// The schema of `id` from the registry at `url` (`http://host:port[/prefix]`); `None` when the
/// registry has no such id.
pub fn fetch_schema(url: &str, id: u32) -> Result<Option<String>, RegistryError> {
    let error = |reason: String| RegistryError {
        url: url.to_string(),
        reason,
    };
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        error("only http:// registries are supported (put a TLS proxy in front for https)".into())
    })?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let socket = address
        .to_socket_addrs()
        .map_err(|e| error(format!("resolving {address}: {e}")))?
        .next()
        .ok_or_else(|| error(format!("{address} resolves to nothing")))?;
    let mut stream = TcpStream::connect_timeout(&socket, TIMEOUT)
        .map_err(|e| error(format!("connecting: {e}")))?;
    let io = |e: std::io::Error| error(e.to_string());
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "GET {prefix}/schemas/ids/{id} HTTP/1.1\r\nHost: {authority}\r\n\
         Accept: application/vnd.schemaregistry.v1+json, application/json\r\n\
         Connection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(io)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| error("no end of headers in the response".into()))?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let mut body = response[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            error(format!(
                "bad status line: {}",
                head.lines().next().unwrap_or("")
            ))
        })?;
    if head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| error("bad chunked body".into()))?;
    }
    match status {
        200 => {}
        404 => return Ok(None),
        other => {
            return Err(error(format!(
                "HTTP {other}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| error(format!("bad JSON: {e}")))?;
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(schema) => Ok(Some(schema.to_string())),
        None => Err(error("the response has no \"schema\"".into())),
    }
}

/// A `Transfer-Encoding: chunked` body, joined.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_join_and_bad_urls_are_refused() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"9\r\nabc"), None);
        assert!(fetch_schema("https://registry:8081", 1).is_err());
        // Nothing listens on port 1: an error, not a missing id.
        assert!(fetch_schema("http://127.0.0.1:1", 1).is_err());
    }
}
