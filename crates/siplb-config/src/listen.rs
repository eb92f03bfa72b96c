//! SIP listeners as the file writes them: `"udp:127.0.0.1:5060"`, `"tcp:[::1]:5060"`,
//! read straight into the core's [`Peer`].

use serde::{Deserialize, Deserializer};
use siplb_proxy::Peer;

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Peer>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}
