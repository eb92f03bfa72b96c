//! SIP over TLS: `[tls]` read into the driver's certificates, and the host names
//! destinations' certificates must carry (SPEC section 7).

use std::sync::Arc;

use siplb_balance::Balancer;

/// `[tls]` as the driver takes it.
pub(crate) fn tls_files(tls: &siplb_config::Tls) -> siplb_net::TlsFiles {
    siplb_net::TlsFiles {
        certificate: tls.certificate.as_ref().map(Into::into),
        private_key: tls.private_key.as_ref().map(Into::into),
        ca_certificates: tls.ca_certificates.as_ref().map(Into::into),
        verify_client: tls.verify_client,
    }
}

/// Reads the certificates; a destination's certificate must carry the host name its
/// URI gives (the name whose resolution holds the address siplb connects to), or, for
/// an IP address, that address.
pub(crate) fn start_tls(
    balancer: &Arc<Balancer>,
    files: &siplb_net::TlsFiles,
) -> Result<Arc<siplb_net::Tls>, String> {
    let balancer = Arc::clone(balancer);
    let names: siplb_net::ServerNames = Arc::new(move |addr| {
        balancer
            .names()
            .iter()
            .find(|cell| cell.resolution().addresses.contains(&addr))
            .map(|cell| cell.name().host.trim_end_matches('.').to_owned())
    });
    siplb_net::Tls::load(files, names).map(Arc::new)
}
