//! TLS for the Kafka tests. tansu 0.6.0 has no TLS listener (its `--cert` and `--key` options
//! cannot be given together, and the broker never wraps a connection in TLS), so a test puts this
//! TLS-terminating proxy in front of it and has tansu advertise the proxy's port: every client
//! connection, bootstrap and metadata-advertised alike, is TLS from librdkafka (OpenSSL) to the
//! proxy (rustls), then plain TCP on loopback to tansu.
//!
//! The certificates are made per test: a CA, a server certificate it signs for `127.0.0.1` and
//! `localhost`, and a client certificate it signs for mutual TLS.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// A test CA, the server certificate it signed, and a client certificate it signed (for mutual
/// TLS), the client's files in PEM.
pub struct TestPki {
    /// PEM file of the CA certificate (what a client's `ca_file` names).
    pub ca_file: PathBuf,
    /// PEM file of the client certificate (`cert_file`).
    pub client_cert_file: PathBuf,
    /// PEM file of the client's private key (`key_file`).
    pub client_key_file: PathBuf,
    ca: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "switchyard test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "switchyard test client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = params.signed_by(&client_key, &ca, &ca_key).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca_file: write("ca.pem", ca.pem()),
            client_cert_file: write("client.pem", client_cert.pem()),
            client_key_file: write("client.key", client_key.serialize_pem()),
            ca: ca.der().clone(),
            server_cert: server_cert.der().clone(),
            server_key: server_key.serialize_der(),
            _dir: dir,
        }
    }

    /// The proxy's rustls configuration; with `client_auth`, clients must present a certificate
    /// the test CA signed.
    fn server_config(&self, client_auth: bool) -> ServerConfig {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder =
            ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions().unwrap();
        let builder = if client_auth {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.clone()).unwrap();
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        builder.with_single_cert(vec![self.server_cert.clone()], key).unwrap()
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
    /// plaintext to `upstream`. With `client_auth`, only clients with a certificate from `pki`'s
    /// CA get through (mutual TLS).
    pub fn forward_to(listener: std::net::TcpListener, pki: &TestPki, client_auth: bool, upstream: SocketAddr) -> Self {
        let port = listener.local_addr().unwrap().port();
        let acceptor = TlsAcceptor::from(Arc::new(pki.server_config(client_auth)));
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
