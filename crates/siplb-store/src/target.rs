//! Which database a URL names, and the URL as it may appear in messages.

use crate::error::StoreError;

/// The database behind a [`Store`](crate::Store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `sqlite://PATH` or `sqlite::memory:`.
    Sqlite,
    /// `mysql://` or `mariadb://`: MySQL and MariaDB.
    MySql,
    /// `postgres://` or `postgresql://`.
    Postgres,
}

impl Backend {
    /// The backend a URL's scheme names, compared case-insensitively.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme);
        match scheme.map(str::to_ascii_lowercase).as_deref() {
            Some("sqlite") => Ok(Self::Sqlite),
            Some("mysql" | "mariadb") => Ok(Self::MySql),
            Some("postgres" | "postgresql") => Ok(Self::Postgres),
            _ => Err(StoreError::InvalidUrl {
                url: redact(url),
                reason: "the scheme must be sqlite://, mysql://, mariadb://, postgres:// or \
                         postgresql://"
                    .to_owned(),
            }),
        }
    }

    /// The short name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::MySql => "mysql",
            Self::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A connection URL, parsed once: the backend, the URL handed to sqlx, and the form that
/// goes into messages.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) backend: Backend,
    /// What sqlx connects to; may carry a password, so it is never printed.
    pub(crate) sqlx_url: String,
    pub(crate) shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("backend", &self.backend)
            .field("url", &self.shown)
            .finish()
    }
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, StoreError> {
        let backend = Backend::from_url(url)?;
        let sqlx_url = match backend {
            Backend::Sqlite => sqlite_create_if_missing(url),
            Backend::MySql | Backend::Postgres => url.to_owned(),
        };
        Ok(Self {
            backend,
            // As configured: the added `mode=rwc` would only puzzle the reader.
            shown: redact(url),
            sqlx_url,
        })
    }

    pub(crate) fn is_sqlite_memory(&self) -> bool {
        self.backend == Backend::Sqlite
            && (self.sqlx_url.contains(":memory:")
                || query_has(&self.sqlx_url, "mode", Some("memory")))
    }

    /// The SQLite file a connection of its own may write, as sqlx reads the URL: none for
    /// an in-memory database (it lives in the pool's connection), nor for a URL with
    /// parameters beyond `mode=rw`/`mode=rwc` (read-only, immutable, another VFS or a
    /// shared cache), which the pool alone honours.
    pub(crate) fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        if self.backend != Backend::Sqlite || self.is_sqlite_memory() {
            return None;
        }
        if let Some((_, query)) = self.sqlx_url.split_once('?') {
            let plain = |pair: &str| matches!(pair, "mode=rw" | "mode=rwc" | "");
            if !query.split('&').all(plain) {
                return None;
            }
        }
        let options: sqlx::sqlite::SqliteConnectOptions = self.sqlx_url.parse().ok()?;
        Some(options.get_filename().to_path_buf())
    }
}

/// The embedded default is a SQLite file that must appear on first start, and SQLite's own
/// default (`mode=rw`) refuses a missing file. An explicit `mode` is left alone, so
/// `mode=ro` still means read-only.
fn sqlite_create_if_missing(url: &str) -> String {
    if url.contains(":memory:") || query_has(url, "mode", None) {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}mode=rwc")
}

/// Whether the query string has `key` (with `value`, if given).
fn query_has(url: &str, key: &str, value: Option<&str>) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .any(|(k, v)| k == key && value.is_none_or(|value| v == value))
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The last '@' ends the user info: an unencoded '@' in a password comes before it.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = authority.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, Target, redact};

    #[test]
    fn the_file_a_writer_of_its_own_may_open() {
        let file = |url: &str| Target::parse(url).unwrap().sqlite_file();
        assert_eq!(file("sqlite://siplb.db"), Some("siplb.db".into()));
        assert_eq!(
            file("sqlite:///var/lib/a%20b.db"),
            Some("/var/lib/a b.db".into())
        );
        assert_eq!(file("sqlite:///x.db?mode=rwc"), Some("/x.db".into()));
        assert_eq!(file("sqlite:///x.db?mode=rw"), Some("/x.db".into()));
        for pool_only in [
            "sqlite::memory:",
            "sqlite://x.db?mode=memory",
            "sqlite://x.db?mode=ro",
            "sqlite://x.db?immutable=1",
            "sqlite://x.db?mode=rwc&cache=shared",
            "sqlite://x.db?vfs=unix-dotfile",
            "mysql://root@127.0.0.1/test",
            "postgres://127.0.0.1/test",
        ] {
            assert_eq!(file(pool_only), None, "{pool_only}");
        }
    }

    #[test]
    fn schemes() {
        assert_eq!(
            Backend::from_url("sqlite://siplb.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::from_url("mysql://root@h/db").unwrap(),
            Backend::MySql
        );
        assert_eq!(
            Backend::from_url("MariaDB://root@h/db").unwrap(),
            Backend::MySql
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        for bad in ["", "siplb.db", "oracle://u:secret@h/db", "http://x"] {
            let err = Backend::from_url(bad).unwrap_err().to_string();
            assert!(err.contains("scheme"), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn sqlite_files_are_created_unless_a_mode_is_given() {
        let url = |u: &str| Target::parse(u).unwrap().sqlx_url;
        assert_eq!(url("sqlite://siplb.db"), "sqlite://siplb.db?mode=rwc");
        assert_eq!(
            url("sqlite:///var/lib/siplb.db"),
            "sqlite:///var/lib/siplb.db?mode=rwc"
        );
        assert_eq!(
            url("sqlite://siplb.db?cache=shared"),
            "sqlite://siplb.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            url("sqlite://siplb.db?mode=ro"),
            "sqlite://siplb.db?mode=ro"
        );
        assert_eq!(url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(url("mysql://root@h/db"), "mysql://root@h/db");
        assert!(Target::parse("sqlite::memory:").unwrap().is_sqlite_memory());
        assert!(
            Target::parse("sqlite://x?mode=memory")
                .unwrap()
                .is_sqlite_memory()
        );
        assert!(!Target::parse("sqlite://x").unwrap().is_sqlite_memory());
        assert_eq!(Target::parse("sqlite://x").unwrap().shown, "sqlite://x");
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("mysql://root:secret@127.0.0.1:3306/test"),
            "mysql://root:***@127.0.0.1:3306/test"
        );
        assert_eq!(
            redact("postgres://u:p@ss@h/db?sslmode=disable"),
            "postgres://u:***@h/db?sslmode=disable"
        );
        assert_eq!(redact("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(redact("sqlite://siplb.db"), "sqlite://siplb.db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
        let shown = format!("{:?}", Target::parse("mysql://u:secret@h/db").unwrap());
        assert!(!shown.contains("secret"), "{shown}");
    }
}
