//! `siplb ctl`: one management call, printed; and `lb_drain --wait`, which then watches
//! `lb_list` until the destination carries no call.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::run::runtime;

/// Where and how to call the management interface.
pub struct Ctl<'a> {
    pub url: &'a str,
    pub token: Option<&'a str>,
    /// Print results on one line.
    pub compact: bool,
}

/// Spelled out so that the token never reaches a log line.
impl std::fmt::Debug for Ctl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctl")
            .field("url", &self.url)
            .field("token", &self.token.map(|_| "<redacted>"))
            .field("compact", &self.compact)
            .finish()
    }
}

/// Why `--wait` did not return a drained destination.
#[derive(Debug)]
pub enum WaitError {
    /// The command could not run (bad use, unreachable server, error reply).
    Usage(String),
    /// The wait ran out, or the drain was ended, with calls still up.
    NotDrained(String),
}

/// How often `--wait` reads the loads.
const POLL: Duration = Duration::from_millis(200);

impl Ctl<'_> {
    async fn request(&self, method: &str, params: &[String]) -> Result<Value, String> {
        siplb_mi::call_with_token(self.url, method, params, self.token)
            .await
            .map_err(|e| e.to_string())
    }

    fn print(&self, result: &Value) -> Result<(), String> {
        let text = if self.compact {
            serde_json::to_string(result)
        } else {
            serde_json::to_string_pretty(result)
        }
        .map_err(|e| e.to_string())?;
        crate::out(&text)
    }

    /// Calls `method` and prints its result.
    pub fn call(&self, method: &str, params: &[String]) -> Result<(), String> {
        let result = runtime()?.block_on(self.request(method, params))?;
        self.print(&result)
    }

    /// `lb_drain ID --wait`: starts the drain, then returns once the destination's
    /// loads are all 0. Fails when `timeout` runs out first or an operator ends the
    /// drain, saying what load is left.
    pub fn drain_and_wait(
        &self,
        method: &str,
        params: &[String],
        timeout: Duration,
    ) -> Result<(), WaitError> {
        if !matches!(method, "lb_drain" | "load_balancer:drain") {
            return Err(WaitError::Usage(format!(
                "--wait goes with lb_drain, not {method}"
            )));
        }
        let id = drained_id(params).ok_or_else(|| {
            WaitError::Usage("lb_drain takes one destination id (ID or destination_id=ID)".into())
        })?;
        let rt = runtime().map_err(WaitError::Usage)?;
        rt.block_on(async {
            self.request(method, params)
                .await
                .map_err(WaitError::Usage)?;
            let deadline = Instant::now() + timeout;
            loop {
                let list = self
                    .request("lb_list", &[])
                    .await
                    .map_err(WaitError::Usage)?;
                let Some(d) = destination(&list, id) else {
                    return Err(WaitError::NotDrained(format!(
                        "destination {id} left the table (lb_reload) while draining"
                    )));
                };
                let left = load_left(d);
                if left.is_empty() {
                    return crate::out(&format!("destination {id} drained"))
                        .map_err(WaitError::Usage);
                }
                let calls = left.join(", ");
                if d.get("draining") != Some(&Value::Bool(true)) {
                    return Err(WaitError::NotDrained(format!(
                        "destination {id}: the drain was ended with load left: {calls}"
                    )));
                }
                if Instant::now() >= deadline {
                    return Err(WaitError::NotDrained(format!(
                        "destination {id} not drained after {}: load left: {calls}",
                        humantime::format_duration(timeout)
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        })
    }
}

/// The destination id of `lb_drain`'s arguments, positional or named.
fn drained_id(params: &[String]) -> Option<u32> {
    match params {
        [one] => one
            .strip_prefix("destination_id=")
            .unwrap_or(one)
            .trim()
            .parse()
            .ok(),
        _ => None,
    }
}

fn destination(list: &Value, id: u32) -> Option<&Value> {
    list.get("Destinations")?
        .as_array()?
        .iter()
        .find(|d| d.get("id").and_then(Value::as_u64) == Some(u64::from(id)))
}

/// `name=load` of each resource still loaded.
fn load_left(destination: &Value) -> Vec<String> {
    destination
        .get("Resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let load = r.get("load").and_then(Value::as_u64)?;
            let name = r.get("name").and_then(Value::as_str)?;
            (load > 0).then(|| format!("{name}={load}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drained_id_is_read_either_way() {
        assert_eq!(drained_id(&["4".into()]), Some(4));
        assert_eq!(drained_id(&["destination_id=4".into()]), Some(4));
        assert_eq!(drained_id(&["x".into()]), None);
        assert_eq!(drained_id(&[]), None);
        assert_eq!(drained_id(&["1".into(), "2".into()]), None);
    }

    #[test]
    fn load_left_names_each_loaded_resource() {
        let list: Value = serde_json::from_str(
            r#"{"Destinations":[{"id":2,"Resources":[{"name":"vm","max":5,"load":0},{"name":"pstn","max":5,"load":3}],"draining":true}]}"#,
        )
        .unwrap_or_default();
        let d = destination(&list, 2);
        assert_eq!(d.map(load_left), Some(vec!["pstn=3".to_owned()]));
        assert!(destination(&list, 3).is_none());
    }
}
