//! Raw HTTP responders for the source tests that misbehave on purpose (hang, cut a body
//! short), and a TLS variant with client authentication.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a raw responder does with one connection.
pub enum Reply {
    /// Write these bytes, then close.
    Bytes(Vec<u8>),
    /// Write these bytes, then keep the connection open without another byte.
    BytesThenHang(Vec<u8>),
    /// Accept and never answer.
    Hang,
}

/// A complete `200 OK` response with a body and a content type.
pub fn ok(content_type: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// The request heads a raw server received (request line and headers).
pub type Heads = Arc<Mutex<Vec<String>>>;

/// A TCP server on 127.0.0.1:0 answering every connection with `reply(request head)`.
pub async fn raw_server(
    reply: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> (SocketAddr, Heads) {
    serve(None, reply).await
}

/// The same over TLS, with the given acceptor (see [`tls_acceptor`]).
pub async fn raw_tls_server(
    acceptor: tokio_rustls::TlsAcceptor,
    reply: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> (SocketAddr, Heads) {
    serve(Some(acceptor), reply).await
}

async fn serve(
    tls: Option<tokio_rustls::TlsAcceptor>,
    reply: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> (SocketAddr, Heads) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads: Heads = Arc::default();
    let reply = Arc::new(reply);
    let h = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let (reply, heads, tls) = (reply.clone(), h.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => answer(sock, &*reply, &heads).await,
                    Some(acc) => {
                        // A failed handshake (no client certificate, unknown CA) just ends.
                        if let Ok(s) = acc.accept(sock).await {
                            answer(s, &*reply, &heads).await;
                        }
                    }
                }
            });
        }
    });
    (addr, heads)
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    reply: &(dyn Fn(&str) -> Reply + Send + Sync),
    heads: &Heads,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    heads.lock().unwrap().push(head.clone());
    match reply(&head) {
        Reply::Bytes(b) => {
            let _ = s.write_all(&b).await;
            let _ = s.shutdown().await;
        }
        Reply::BytesThenHang(b) => {
            let _ = s.write_all(&b).await;
            let _ = s.flush().await;
            std::future::pending::<()>().await;
        }
        Reply::Hang => std::future::pending::<()>().await,
    }
}

/// The value of header `name` in a raw request head (case-insensitive name).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Path of the test TLS material (`tests/data/tls`).
pub fn tls_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tls")
        .join(name)
}

/// A TLS acceptor with the test server certificate that requires a client certificate signed
/// by the test CA.
pub fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    rollguard::net::install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(tls_file("server.pem"))
        .expect("server.pem")
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(tls_file("server.key")).expect("server.key");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(tls_file("ca.pem")).expect("ca.pem") {
        roots.add(c.expect("ca")).expect("add ca");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("verifier");
    let cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}
