//! The configurable table name, checked once so it can be spliced into SQL text.

use crate::error::StoreError;

/// The table OpenSIPS uses, and siplb's default.
pub const DEFAULT_TABLE: &str = "load_balancer";

/// The longest accepted name: OpenSIPS' `version.table_name` is `CHAR(32)`, and a longer name
/// could not be recorded there.
pub const MAX_TABLE_NAME_LEN: usize = 32;

/// A table name that is safe to put into SQL unquoted on all three databases.
///
/// Identifiers cannot be bound as query parameters, and each database quotes them
/// differently (MySQL's backquotes, the others' double quotes unless `ANSI_QUOTES`), so the
/// name is restricted instead: an ASCII letter or `_`, then letters, digits and `_`, at most
/// [`MAX_TABLE_NAME_LEN`] characters. The same text is also used inside string literals
/// (catalog lookups, the `version` row), which this alphabet makes safe too.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName(String);

impl TableName {
    /// Checks `name`; the error says what is wrong with it.
    pub fn new(name: &str) -> Result<Self, StoreError> {
        let invalid = |reason: &'static str| StoreError::InvalidTableName {
            name: name.to_owned(),
            reason,
        };
        let mut chars = name.chars();
        match chars.next() {
            None => return Err(invalid("it is empty")),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
            Some(_) => return Err(invalid("it must start with an ASCII letter or '_'")),
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(
                "only ASCII letters, digits and '_' are allowed (the name is put into SQL unquoted)",
            ));
        }
        if name.len() > MAX_TABLE_NAME_LEN {
            return Err(invalid(
                "it is longer than 32 characters (OpenSIPS' version.table_name is CHAR(32))",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TableName {
    fn default() -> Self {
        Self(DEFAULT_TABLE.to_owned())
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{DEFAULT_TABLE, TableName};
    use crate::error::StoreError;

    fn reason(name: &str) -> &'static str {
        match TableName::new(name) {
            Err(StoreError::InvalidTableName { reason, .. }) => reason,
            other => panic!("{name:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn accepts_identifiers() {
        for name in ["load_balancer", "_lb", "LB2", "a", &"x".repeat(32)] {
            assert_eq!(TableName::new(name).unwrap().as_str(), name);
        }
        assert_eq!(TableName::default().as_str(), DEFAULT_TABLE);
    }

    #[test]
    fn rejects_what_could_break_out_of_sql() {
        assert!(reason("").contains("empty"));
        assert!(reason("1lb").contains("start"));
        for name in [
            "lb;drop table x",
            "lb'",
            "lb\"",
            "lb`",
            "a.b",
            "a-b",
            "a b",
            "lb\n",
            "é",
        ] {
            let reason = reason(name);
            assert!(
                reason.contains("start") || reason.contains("only"),
                "{name:?}: {reason}"
            );
        }
        assert!(reason(&"x".repeat(33)).contains("32"));
    }

    #[test]
    fn error_names_the_table() {
        let err = TableName::new("a-b").unwrap_err();
        assert!(err.to_string().contains("\"a-b\""), "{err}");
    }
}
