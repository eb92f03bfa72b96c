//! Durations written the way operators write them: `"30s"`, `"500ms"`, `"12h"`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration like \"30s\" or \"500ms\": {e}"
        ))
    })
}
