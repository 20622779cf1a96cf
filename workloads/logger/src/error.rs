//! What can go wrong in the event log, in its own words; only the HTTP layer (`api`) turns
//! these into problems with status codes.

/// Why the event log failed a request.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The logger is shutting down.
    #[error("the logger is shutting down")]
    Stopping,
    /// The writer's queue is full: the disk is behind. The caller may retry shortly.
    #[error("the event log's write queue is full")]
    Busy,
    /// fjall failed.
    #[error("event log storage error: {0}")]
    Storage(#[from] fjall::Error),
    /// A stored record is not an event.
    #[error("corrupt event record: {0}")]
    Corrupt(String),
    /// A fault of the logger itself (a task that died).
    #[error("{0}")]
    Internal(String),
}
