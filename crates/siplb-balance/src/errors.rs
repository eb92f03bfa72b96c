//! Errors of the runtime operations on a loaded table.

/// No destination of the current table has this id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("destination {id} not found")]
pub struct DestinationNotFound {
    /// The id asked for.
    pub id: u32,
}

/// Why a capacity change was refused (`lb_resize`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    /// No destination has this id.
    #[error(transparent)]
    DestinationNotFound(#[from] DestinationNotFound),
    /// The destination does not offer this resource.
    #[error("destination {id} has no resource {resource:?}")]
    NoSuchResource {
        /// The destination id.
        id: u32,
        /// The resource name asked for.
        resource: String,
    },
}

/// Why a call could not be attached to a destination without selection (`count_call`,
/// `restore`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// No destination matches the source address (and group, when given).
    #[error("no destination matches the address")]
    NoMatchingDestination,
    /// No destination has this id.
    #[error(transparent)]
    DestinationNotFound(#[from] DestinationNotFound),
    /// The destination found does not offer a requested resource.
    #[error("destination {id} has no resource {resource:?}")]
    MissingResource {
        /// The destination id.
        id: u32,
        /// The first requested resource it lacks.
        resource: String,
    },
}
