//! Where the client commands find the gRPC APIs. `--query` and `--ingest`
//! take `HOST:PORT`, as `baton hl7 send --to` does, or a URL.

/// `address` as the URL tonic connects to: `127.0.0.1:50052` is
/// `http://127.0.0.1:50052`; a URL (`http://…`, `https://…`) is kept.
pub(crate) fn grpc_url(address: &str) -> String {
    let address = address.trim();
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_or_a_url() {
        assert_eq!(grpc_url("127.0.0.1:50052"), "http://127.0.0.1:50052");
        assert_eq!(grpc_url(" query.local:9 "), "http://query.local:9");
        assert_eq!(grpc_url("http://127.0.0.1:50052"), "http://127.0.0.1:50052");
        assert_eq!(
            grpc_url("https://query.example:443"),
            "https://query.example:443"
        );
    }
}
