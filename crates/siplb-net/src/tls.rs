//! SIP over TLS (RFC 3261 26.2, RFC 5630): siplb's certificate for callers, and the
//! verification of destinations' certificates, with rustls. Both configurations sit
//! behind swaps, so that new certificates (read again on `lb_reload` and SIGHUP) serve
//! new connections while established ones go on with what they agreed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// Where the certificates are (`[tls]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// siplb's certificate chain (PEM), shown to callers and, when they ask, to
    /// destinations.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// CAs that sign destinations' (and, with `verify_client`, callers')
    /// certificates; the system's when absent.
    pub ca_certificates: Option<PathBuf>,
    /// Callers over TLS must show a certificate signed by `ca_certificates`.
    pub verify_client: bool,
}

/// The host name a destination's certificate must carry, by the address siplb
/// connects to: the name in its URI, or `None` for an IP address (then the
/// certificate must name that address).
pub type ServerNames = Arc<dyn Fn(SocketAddr) -> Option<String> + Send + Sync>;

/// The TLS configurations in force.
pub struct Tls {
    server: ArcSwapOption<ServerConfig>,
    client: ArcSwap<ClientConfig>,
    pub(crate) names: ServerNames,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("serves", &self.server.load().is_some())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certificates(path: &PathBuf, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("tls.{what}: {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.{what}: {}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "tls.{what}: {}: no certificate in it",
            path.display()
        ));
    }
    Ok(certificates)
}

fn roots(files: &TlsFiles) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match &files.ca_certificates {
        Some(path) => {
            for certificate in read_certificates(path, "ca_certificates")? {
                roots
                    .add(certificate)
                    .map_err(|e| format!("tls.ca_certificates: {}: {e}", path.display()))?;
            }
        }
        None => {
            for certificate in rustls_native_certs::load_native_certs().certs {
                // A system store may hold certificates rustls refuses; the rest serve.
                let _ = roots.add(certificate);
            }
        }
    }
    Ok(roots)
}

fn configs(files: &TlsFiles) -> Result<(Option<ServerConfig>, ClientConfig), String> {
    let roots = Arc::new(roots(files)?);
    let identity = match (&files.certificate, &files.private_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert, "certificate")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls.private_key: {}: {e}", key.display()))?;
            Some((chain, key))
        }
        (None, None) => None,
        _ => return Err("tls: certificate and private_key go together".to_owned()),
    };
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(Arc::clone(&roots));
    let client = match &identity {
        // Destinations that ask for a client certificate get siplb's.
        Some((chain, key)) => client
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("tls.certificate: {e}"))?,
        None => client.with_no_client_auth(),
    };
    let server = match identity {
        None => None,
        Some((chain, key)) => {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("tls: {e}"))?;
            let builder = if files.verify_client {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| format!("tls.verify_client: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_no_client_auth()
            };
            Some(
                builder
                    .with_single_cert(chain, key)
                    .map_err(|e| format!("tls.certificate: {e}"))?,
            )
        }
    };
    Ok((server, client))
}

impl Tls {
    /// Reads the certificates; an error names the key and the file.
    pub fn load(files: &TlsFiles, names: ServerNames) -> Result<Tls, String> {
        let (server, client) = configs(files)?;
        Ok(Tls {
            server: ArcSwapOption::from(server.map(Arc::new)),
            client: ArcSwap::from_pointee(client),
            names,
        })
    }

    /// Reads the certificates again for new connections; on error the ones in force
    /// stay.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), String> {
        let (server, client) = configs(files)?;
        self.server.store(server.map(Arc::new));
        self.client.store(Arc::new(client));
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.server.load_full().map(tokio_rustls::TlsAcceptor::from)
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.load_full())
    }

    /// The name a certificate at `addr` must carry.
    pub(crate) fn server_name(&self, addr: SocketAddr) -> Option<ServerName<'static>> {
        match (self.names)(addr) {
            Some(name) => ServerName::try_from(name).ok(),
            None => Some(ServerName::IpAddress(addr.ip().into())),
        }
    }
}
