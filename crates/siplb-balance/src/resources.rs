//! Resource names: the capacity list of a destination row (`vm=50; pstn=32`), the request list
//! of a call (`transc;pstn`), and the process-wide interning of names to small ids.
//!
//! Names are interned once, when a table is loaded or a request is parsed, so the per-call
//! path compares integers and never hashes strings. The registry only grows: an id handed to a
//! [`ResourceRequest`] at configuration time stays valid across every later reload, even if
//! the name disappears from the table (the call then gets the *unknown resource* outcome).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use parking_lot::{Mutex, MutexGuard};

/// More resources than this on one row is a provisioning mistake; the bound lets an
/// allocation remember its slots in single bytes.
pub(crate) const MAX_RESOURCES_PER_DESTINATION: usize = 255;

/// Interned resource name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ResourceId(u32);

impl ResourceId {
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    ids: HashMap<Arc<str>, ResourceId>,
    names: Vec<Arc<str>>,
}

impl Registry {
    pub(crate) fn intern(&mut self, name: &str) -> (ResourceId, Arc<str>) {
        if let Some((name, id)) = self.ids.get_key_value(name) {
            return (*id, Arc::clone(name));
        }
        // Distinct resource names number in the dozens; u32 cannot run out in practice.
        let id = ResourceId(u32::try_from(self.names.len()).unwrap_or(u32::MAX));
        let name: Arc<str> = Arc::from(name);
        self.names.push(Arc::clone(&name));
        self.ids.insert(Arc::clone(&name), id);
        (id, name)
    }
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock()
}

/// A resource list did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResourceListError {
    /// Nothing but whitespace and separators.
    #[error("empty resource list")]
    Empty,
    /// An item between two `;` had no name.
    #[error("item {position} has an empty resource name")]
    EmptyName {
        /// 1-based position of the item in the list.
        position: usize,
    },
    /// A name used characters outside `[A-Za-z0-9_-]`.
    #[error("invalid resource name {name:?} (allowed: letters, digits, '_' and '-')")]
    InvalidName {
        /// The name as written.
        name: String,
    },
    /// A destination's item lacked `=capacity`.
    #[error("resource {name:?} has no capacity (expected name=capacity)")]
    MissingCapacity {
        /// The resource name.
        name: String,
    },
    /// A call's request item carried `=value`, which only the destination table may have.
    #[error("resource {name:?} must not have a capacity in a request")]
    UnexpectedCapacity {
        /// The resource name.
        name: String,
    },
    /// The capacity was empty or not made of decimal digits.
    #[error("capacity {value:?} of resource {name:?} is not a non-negative integer")]
    InvalidCapacity {
        /// The resource name.
        name: String,
        /// The capacity as written.
        value: String,
    },
    /// The capacity does not fit in 32 bits.
    #[error("capacity {value} of resource {name:?} is larger than {}", u32::MAX)]
    CapacityOverflow {
        /// The resource name.
        name: String,
        /// The capacity as written.
        value: String,
    },
    /// The same name appeared twice in one list.
    #[error("resource {name:?} is listed twice")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
    /// A destination offered more resources than one row may hold.
    #[error("{count} resources on one destination (at most {MAX_RESOURCES_PER_DESTINATION})")]
    TooMany {
        /// How many were listed.
        count: usize,
    },
}

/// Splits on `;`, trims, and allows one trailing separator. Yields `(position, item)`.
fn items(list: &str) -> Result<Vec<(usize, &str)>, ResourceListError> {
    let mut parts: Vec<&str> = list.split(';').map(str::trim).collect();
    if parts.len() > 1 && parts.last().is_some_and(|last| last.is_empty()) {
        parts.pop();
    }
    if parts.iter().all(|p| p.is_empty()) {
        return Err(ResourceListError::Empty);
    }
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| (i + 1, p))
        .collect())
}

fn check_name(position: usize, name: &str) -> Result<(), ResourceListError> {
    if name.is_empty() {
        return Err(ResourceListError::EmptyName { position });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ResourceListError::InvalidName { name: name.into() });
    }
    Ok(())
}

fn check_unique<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Result<(), ResourceListError> {
    // Lists are short (a CHAR(255) column), so the quadratic scan beats building a set.
    for (i, name) in names.clone().enumerate() {
        if names.clone().take(i).any(|earlier| earlier == name) {
            return Err(ResourceListError::Duplicate { name: name.into() });
        }
    }
    Ok(())
}

/// Parses a destination's `resources` column into `(name, capacity)` pairs in written order.
pub(crate) fn parse_capacities(list: &str) -> Result<Vec<(&str, u32)>, ResourceListError> {
    let mut parsed = Vec::new();
    for (position, item) in items(list)? {
        let Some((name, value)) = item.split_once('=') else {
            check_name(position, item)?;
            return Err(ResourceListError::MissingCapacity { name: item.into() });
        };
        let (name, value) = (name.trim(), value.trim());
        check_name(position, name)?;
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ResourceListError::InvalidCapacity {
                name: name.into(),
                value: value.into(),
            });
        }
        let capacity = value
            .parse::<u32>()
            .map_err(|_| ResourceListError::CapacityOverflow {
                name: name.into(),
                value: value.into(),
            })?;
        parsed.push((name, capacity));
    }
    check_unique(parsed.iter().map(|(name, _)| *name))?;
    if parsed.len() > MAX_RESOURCES_PER_DESTINATION {
        return Err(ResourceListError::TooMany {
            count: parsed.len(),
        });
    }
    Ok(parsed)
}

/// The resources one call needs, e.g. `transc;pstn`, parsed and interned once.
///
/// Cloning is a reference-count increment, so a per-call session can keep its own copy.
#[derive(Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    inner: Arc<RequestInner>,
}

#[derive(PartialEq, Eq)]
struct RequestInner {
    ids: Box<[ResourceId]>,
    names: Box<[Arc<str>]>,
}

impl ResourceRequest {
    /// Parses a `;`-separated list of resource names (no `=capacity`).
    ///
    /// Empty and duplicate names are rejected: the reference treats a duplicate as an unknown
    /// resource at call time, which is better caught here.
    pub fn parse(list: &str) -> Result<Self, ResourceListError> {
        let mut names = Vec::new();
        for (position, item) in items(list)? {
            if let Some((name, _)) = item.split_once('=') {
                return Err(ResourceListError::UnexpectedCapacity {
                    name: name.trim().into(),
                });
            }
            check_name(position, item)?;
            names.push(item);
        }
        check_unique(names.iter().copied())?;
        let mut registry = registry();
        let (ids, names): (Vec<_>, Vec<_>) = names.iter().map(|n| registry.intern(n)).unzip();
        Ok(Self {
            inner: Arc::new(RequestInner {
                ids: ids.into(),
                names: names.into(),
            }),
        })
    }

    /// The requested names, in the order written.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.inner.names.iter().map(|n| &**n)
    }

    /// Number of requested resources (never 0).
    pub fn len(&self) -> usize {
        self.inner.ids.len()
    }

    /// Always false: an empty request does not parse. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.inner.ids.is_empty()
    }

    pub(crate) fn ids(&self) -> &[ResourceId] {
        &self.inner.ids
    }
}

impl FromStr for ResourceRequest {
    type Err = ResourceListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ResourceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ResourceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResourceRequest")
            .field(&self.to_string())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{ResourceListError as E, ResourceRequest, parse_capacities};

    #[test]
    fn capacities_follow_the_grammar() {
        assert_eq!(
            parse_capacities("vm=50; pstn=32").unwrap(),
            vec![("vm", 50), ("pstn", 32)]
        );
        assert_eq!(
            parse_capacities("  vm = 50 ;pstn=32 ; ").unwrap(),
            vec![("vm", 50), ("pstn", 32)]
        );
        assert_eq!(parse_capacities("a_b-9=0;").unwrap(), vec![("a_b-9", 0)]);
        assert_eq!(
            parse_capacities("x=4294967295").unwrap(),
            vec![("x", u32::MAX)]
        );
    }

    #[test]
    fn capacities_reject_faults() {
        assert_eq!(parse_capacities(""), Err(E::Empty));
        assert_eq!(parse_capacities(" ; "), Err(E::Empty));
        assert_eq!(
            parse_capacities("vm=1;;pstn=2"),
            Err(E::EmptyName { position: 2 })
        );
        assert_eq!(parse_capacities("=5"), Err(E::EmptyName { position: 1 }));
        assert_eq!(
            parse_capacities("vm"),
            Err(E::MissingCapacity { name: "vm".into() })
        );
        assert!(matches!(
            parse_capacities("vm="),
            Err(E::InvalidCapacity { .. })
        ));
        assert!(matches!(
            parse_capacities("vm=-1"),
            Err(E::InvalidCapacity { .. })
        ));
        assert!(matches!(
            parse_capacities("vm=+1"),
            Err(E::InvalidCapacity { .. })
        ));
        assert!(matches!(
            parse_capacities("vm=1 0"),
            Err(E::InvalidCapacity { .. })
        ));
        assert!(matches!(
            parse_capacities("vm=4294967296"),
            Err(E::CapacityOverflow { .. })
        ));
        assert!(matches!(
            parse_capacities("v m=1"),
            Err(E::InvalidName { .. })
        ));
        assert!(matches!(
            parse_capacities("fax=fs://host"),
            Err(E::InvalidCapacity { .. })
        ));
        assert_eq!(
            parse_capacities("vm=1;pstn=2;vm=3"),
            Err(E::Duplicate { name: "vm".into() })
        );
        let many: String = (0..256).map(|i| format!("r{i}=1;")).collect();
        assert_eq!(parse_capacities(&many), Err(E::TooMany { count: 256 }));
    }

    #[test]
    fn requests_parse_and_intern() {
        let r = ResourceRequest::parse(" transc ; pstn;").unwrap();
        assert_eq!(r.names().collect::<Vec<_>>(), ["transc", "pstn"]);
        assert_eq!(r.to_string(), "transc;pstn");
        assert_eq!(r.len(), 2);
        let again: ResourceRequest = "transc;pstn".parse().unwrap();
        assert_eq!(r, again, "same names intern to the same ids");
        assert_ne!(r.ids()[0], r.ids()[1]);
    }

    #[test]
    fn requests_reject_faults() {
        assert_eq!(ResourceRequest::parse(""), Err(E::Empty));
        assert_eq!(
            ResourceRequest::parse("a;;b"),
            Err(E::EmptyName { position: 2 })
        );
        assert_eq!(
            ResourceRequest::parse("pstn;pstn"),
            Err(E::Duplicate {
                name: "pstn".into()
            })
        );
        assert_eq!(
            ResourceRequest::parse("vm=3"),
            Err(E::UnexpectedCapacity { name: "vm".into() })
        );
        assert!(matches!(
            ResourceRequest::parse("v.m"),
            Err(E::InvalidName { .. })
        ));
        let err = ResourceRequest::parse("pstn;pstn").unwrap_err();
        assert!(err.to_string().contains("\"pstn\""), "{err}");
    }
}
