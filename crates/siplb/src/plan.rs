//! What a configuration compiles to, once, for `run` and `check` alike: the core's
//! settings (routes, timers, limits, listeners), the database and the tables, the
//! bounds of the transports. Whatever `check` accepts, `run` starts with.

use siplb_config::Config;
use siplb_net::TcpLimits;
use siplb_proxy::Settings;
use siplb_store::{Backend, TableName};

#[derive(Debug)]
pub struct Plan {
    pub config: Config,
    pub settings: Settings,
    pub dialog_table: TableName,
    pub tcp: TcpLimits,
}

impl Plan {
    pub fn new(config: Config) -> Result<Plan, String> {
        let settings = config.settings();
        TableName::new(&config.database.table).map_err(|e| format!("database.table: {e}"))?;
        Backend::from_url(&config.database.url).map_err(|e| format!("database.url: {e}"))?;
        let dialog_table =
            TableName::new(&config.dialog.table).map_err(|e| format!("dialog.table: {e}"))?;
        let t = &config.tcp;
        let tcp = TcpLimits {
            max_connections: t.max_connections,
            max_connections_per_source: t.max_connections_per_source,
            idle_timeout: t.idle_timeout,
            message_timeout: t.message_timeout,
        };
        Ok(Plan {
            config,
            settings,
            dialog_table,
            tcp,
        })
    }
}
