//! What can go wrong in the store, in the store's own words.
//!
//! The storage layer ([`crate::Db`]) answers these; only the HTTP layer turns them into
//! problem bodies with status codes, so the same refusal reads the same however the store is
//! reached.

/// Why the store refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A field of the request breaks a rule.
    #[error(transparent)]
    Invalid(#[from] io360_common::rules::Invalid),
    /// The thread is closed to new comments.
    #[error("this thread is closed to new comments")]
    ThreadClosed,
    /// No comment has this id.
    #[error("there is no comment {0}")]
    NoComment(u64),
    /// The comment has been deleted.
    #[error("comment {0} has been deleted")]
    Deleted(u64),
    /// Only a held comment can be approved.
    #[error("comment {0} is not waiting for moderation")]
    NotPending(u64),
    /// This voter has voted on this comment before.
    #[error("you have already voted on comment {0}")]
    AlreadyVoted(u64),
    /// Only an approved comment takes votes.
    #[error("comment {0} cannot be voted on")]
    NotVotable(u64),
    /// The idempotency key was first used for another request.
    #[error(
        "this Idempotency-Key was already used for a different request; pick a new key for a new comment"
    )]
    IdempotencyKeyReused,
    /// The write queue is full: the writer is behind, try again shortly.
    #[error("the store has more writes queued than it takes at once; try again shortly")]
    Busy,
    /// The store is shutting down.
    #[error("the store is shutting down")]
    Stopping,
    /// A write to disk failed earlier; the journal can no longer be trusted, so the store
    /// refuses every write until it is restarted.
    #[error("the store refuses writes since a write to disk failed; restart it")]
    Poisoned,
    /// The database (of the PostgreSQL engine) cannot be reached, or gave up on this request
    /// (a restart, a failover): nothing was written, try again shortly. The detail is for the
    /// log.
    #[error("the store's database cannot be reached; try again shortly")]
    Unavailable(String),
    /// fjall failed.
    #[error("storage error: {0}")]
    Storage(#[from] fjall::Error),
    /// A record on disk is not what its keyspace holds.
    #[error("corrupt {what} record: {detail}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// A fault of the store itself (a task that died, a record missing its partner).
    #[error("{0}")]
    Internal(String),
}

impl StoreError {
    /// A field breaking a rule.
    pub fn invalid(field: &str, rule: impl Into<String>) -> StoreError {
        StoreError::Invalid(io360_common::rules::Invalid::new(field, rule))
    }
}
