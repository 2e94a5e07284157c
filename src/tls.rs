//! TLS for `wss://` (rustls with the ring provider, through futures-rustls).
//!
//! Roots: the system store (`rustls-native-certs`, /etc/ssl/certs). Corporate networks that
//! intercept TLS install their own CA there, which webpki's built-in roots would reject with
//! "unknown issuer"; `--ca FILE` adds a private CA on top. `--insecure` turns verification off.

use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use futures_rustls::rustls::crypto::{CryptoProvider, ring};
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use futures_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use futures_rustls::{TlsAcceptor, TlsConnector};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A TLS setup problem (files, keys, roots), reported at startup or on reload.
#[derive(Debug)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The relay's certificate and key, reloadable (SIGHUP) without dropping sessions: new
/// connections use the new pair, established ones keep theirs.
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<TlsAcceptor>,
}

impl ServerTls {
    /// Loads `cert` (PEM chain) and `key` (PEM private key).
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let acceptor = acceptor(cert, key)?;
        Ok(ServerTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(acceptor),
        })
    }

    /// Re-reads the files; on failure the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = acceptor(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Runs the server side of a handshake with the current certificate.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> io::Result<futures_rustls::server::TlsStream<S>> {
        let acceptor = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        acceptor.accept(stream).await
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerTls({})", self.cert.display())
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|e| {
            TlsError(format!(
                "cannot read certificates from {}: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!("no certificate in {}", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        TlsError(format!(
            "cannot read a private key from {}: {e}",
            key.display()
        ))
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("certificate and key do not fit together: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How the client verifies the relay's certificate.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsOptions {
    /// extra trusted CA certificates (PEM), on top of the system store
    pub ca: Option<PathBuf>,
    /// no verification at all
    pub insecure: bool,
}

/// A client TLS setup, built once per client.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds the root store (system roots plus `--ca`), or a verifier that trusts anything.
    pub fn new(opts: &ClientTlsOptions) -> Result<ClientTls, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?;
        let config = if opts.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                log::debug!("system certificate store: {e}");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            log::debug!("{added} system root certificates");
            if let Some(ca) = &opts.ca {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                    .and_then(|it| it.collect())
                    .map_err(|e| TlsError(format!("cannot read --ca {}: {e}", ca.display())))?;
                if certs.is_empty() {
                    return Err(TlsError(format!("no certificate in --ca {}", ca.display())));
                }
                for c in certs {
                    roots.add(c).map_err(|e| {
                        TlsError(format!("bad certificate in --ca {}: {e}", ca.display()))
                    })?;
                }
            }
            if roots.is_empty() {
                return Err(TlsError(
                    "no trusted root certificates (system store empty and no --ca)".into(),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Runs the client side of a handshake; SNI and verification use `host`.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        host: &str,
        stream: S,
    ) -> Result<futures_rustls::client::TlsStream<S>, HandshakeFailure> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            HandshakeFailure::Rejected(format!("{host:?} is not a valid TLS server name"))
        })?;
        self.connector
            .connect(name, stream)
            .await
            .map_err(|e| classify(host, e))
    }
}

/// A failed client handshake.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The relay's name or certificate was refused; the message names the cause. Retrying
    /// will not help.
    Rejected(String),
    /// The connection failed during the handshake (or did not finish in time).
    Failed(String),
}

impl HandshakeFailure {
    /// True when retrying cannot succeed (stop instead of looping).
    pub fn is_fatal(&self) -> bool {
        matches!(self, HandshakeFailure::Rejected(_))
    }
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::Rejected(why) | HandshakeFailure::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for HandshakeFailure {}

fn classify(host: &str, e: io::Error) -> HandshakeFailure {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return HandshakeFailure::Failed(format!("TLS handshake failed: {e}"));
    };
    let why = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "the relay's certificate has expired".to_string(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "the relay's certificate is not valid yet".to_string(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the relay's certificate is not valid for the name {host:?}")
            }
            CertificateError::UnknownIssuer => {
                "the relay's certificate is signed by an unknown issuer (trust a private CA with --ca FILE)".to_string()
            }
            other => format!("the relay's certificate was refused: {other:?}"),
        },
        other => return HandshakeFailure::Failed(format!("TLS handshake failed: {other}")),
    };
    HandshakeFailure::Rejected(format!("TLS: {why}"))
}

/// `--insecure`: accepts any certificate (signatures are still checked for the handshake).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
