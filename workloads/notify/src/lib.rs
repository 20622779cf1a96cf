//! io360's notify tier: emails readers about replies they subscribed to.
//!
//! Notify follows the store's change feed from a position it keeps in its own database
//! ([`outbox`]); each new comment becomes rows in a durable outbox, one per confirmed
//! subscriber, written in the same batch as the feed position past it. A sender ([`sender`])
//! drains the outbox to an SMTP server, batching replies into digests, and retries with
//! backoff while the server is away. Links in the messages ([`link`]) are signed, so
//! confirming and unsubscribing need no table of issued links. Nothing here runs on a
//! request's path: a post never waits for a mail server.

pub mod letter;
pub mod link;
pub mod outbox;
pub mod sender;

pub use letter::Letters;
pub use link::Signer;
pub use outbox::Outbox;
pub use sender::Sender;
