//! `[tls]`: the certificates of SIP over TLS (SPEC section 7).

use serde::Deserialize;

/// `[tls]`: certificates for SIP over TLS (SPEC section 7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// siplb's certificate chain, PEM.
    pub certificate: Option<String>,
    /// Its private key, PEM.
    pub private_key: Option<String>,
    /// CAs for destinations' (and with `verify_client` callers') certificates; the
    /// system's when absent.
    pub ca_certificates: Option<String>,
    /// Callers over TLS must show a certificate signed by `ca_certificates`.
    pub verify_client: bool,
}
