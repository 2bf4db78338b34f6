//! TLS for the Kafka tests. tansu 0.6.0 has no TLS listener (its `--cert` and `--key` options
//! cannot be given together, and the broker never wraps a connection in TLS), so a test puts this
//! TLS-terminating proxy in front of it and has tansu advertise the proxy's port: every client
//! connection, bootstrap and metadata-advertised alike, is TLS from librdkafka (OpenSSL) to the
//! proxy (rustls), then plain TCP on loopback to tansu.
//!
//! The certificates are made per test: a CA, and a server certificate it signs for `127.0.0.1`
//! and `localhost`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// A test CA and the server certificate it signed, with the CA's PEM in a file.
pub struct TestPki {
    /// PEM file of the CA certificate (what a client's `ca_file` names).
    pub ca_file: PathBuf,
    server: ServerConfig,
    _dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "switchyard test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        Self { ca_file, server, _dir: dir }
    }
}

/// A TLS-terminating TCP proxy on its own thread; stopped on drop.
pub struct TlsProxy {
    /// The port it accepts TLS connections on (on 127.0.0.1).
    pub port: u16,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsProxy {
    /// Binds a free port on 127.0.0.1; [`TlsProxy::forward_to`] starts serving. Split in two so
    /// the broker behind it can be started knowing the port it must advertise.
    pub fn bind() -> std::net::TcpListener {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    }

    /// Serves TLS with `pki`'s server certificate on `listener`, relaying each connection's
    /// plaintext to `upstream`.
    pub fn forward_to(listener: std::net::TcpListener, pki: &TestPki, upstream: SocketAddr) -> Self {
        let port = listener.local_addr().unwrap().port();
        let acceptor = TlsAcceptor::from(Arc::new(pki.server.clone()));
        let stop = CancellationToken::new();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    loop {
                        let (tcp, _) = tokio::select! {
                            () = stop.cancelled() => return,
                            accepted = listener.accept() => accepted.unwrap(),
                        };
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            // A client that fails the handshake (say, it does not trust the CA)
                            // just gets its connection closed, as a TLS broker would do.
                            let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                            let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else { return };
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        });
                    }
                });
            })
        };
        Self { port, stop, thread: Some(thread) }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
