//! Whether comments are suspended, as logic says, and telling every open page when it changes.
//!
//! Logic decides suspension (its admin API, the operator's control ConfigMap); longpoll asks
//! its `/api/v1/status` every [`EVERY`] and, when the answer changes, answers every held poll
//! at once with a `suspended` or `resumed` event per thread and sends one on every event
//! stream. A poll that says what its page believes (`suspended=0|1`) is answered by the next
//! answer from logic that says otherwise (within [`EVERY`]), so a page that connects while
//! comments are paused learns it too; not at once, as the page may know better than longpoll
//! for that second (a refused post, its own status check).

use std::sync::{Arc, Weak};
use std::time::Duration;

use io360_common::client::TierClient;
use serde::Deserialize;
use tokio::sync::watch;

use crate::event::state_body;
use crate::hub::Slot;
use crate::server::Ctx;

/// How often logic is asked.
pub const EVERY: Duration = Duration::from_secs(1);

/// What longpoll last learned from logic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// Whether writes are refused.
    pub suspended: bool,
    /// The sentence readers see while suspended.
    pub message: Option<String>,
}

/// The part of logic's `/api/v1/status` longpoll needs.
#[derive(Debug, Deserialize)]
struct Status {
    suspended: bool,
    message: Option<String>,
}

/// The state as last learned: `None` until logic has answered once (or with no logic URL).
pub type Known = watch::Sender<Option<State>>;

/// Whether `believes` (a client's idea of the state) is wrong by what longpoll knows; the
/// state to tell it when so.
pub fn differs(known: &Known, believes: Option<bool>) -> Option<State> {
    let believes = believes?;
    let now = known.borrow();
    now.as_ref().filter(|s| s.suspended != believes).cloned()
}

/// Records `state`; when it changes whether comments are suspended (unknown counts as not),
/// answers every held poll with it. Returns how many polls were answered.
pub fn learn(ctx: &Ctx, state: State) -> usize {
    let mut flipped = false;
    ctx.suspension.send_if_modified(|known| {
        if known.as_ref() == Some(&state) {
            return false;
        }
        flipped = known.as_ref().is_some_and(|k| k.suspended) != state.suspended;
        *known = Some(state.clone());
        true
    });
    let message = state.message.as_deref();
    let body = |slot: &Slot| state_body(slot.threads(), state.suspended, message);
    let mut answered = 0;
    if flipped {
        tracing::info!(
            suspended = state.suspended,
            "comments {}: telling every open page",
            if state.suspended {
                "suspended"
            } else {
                "resumed"
            }
        );
        answered += ctx.hub.answer_parked(body);
    }
    // A page may know before longpoll does (a post was refused, its own status check): only
    // an answer from logic newer than the poll tells it otherwise.
    let doubters = std::mem::take(&mut *ctx.doubters.lock());
    let wrong = doubters.iter().filter_map(Weak::upgrade).filter(|slot| {
        slot.believes_suspended
            .is_some_and(|b| b != state.suspended)
    });
    answered += ctx.hub.answer_slots(wrong, body);
    answered
}

/// Notes a held poll whose page believes otherwise than longpoll knows now.
pub fn doubt(ctx: &Ctx, slot: &Arc<Slot>) {
    if differs(&ctx.suspension, slot.believes_suspended).is_some() {
        ctx.doubters.lock().push(Arc::downgrade(slot));
    }
}

/// Asks logic once; `false` when it did not answer.
pub async fn refresh(ctx: &Ctx, logic: &TierClient) -> bool {
    match logic.get::<Status>("/api/v1/status").await {
        Ok(s) => {
            learn(
                ctx,
                State {
                    suspended: s.suspended,
                    message: s.message.filter(|m| !m.is_empty()),
                },
            );
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "logic's status did not answer; keeping the last state");
            false
        }
    }
}

/// Follows logic's status until shutdown.
pub async fn follow(ctx: Arc<Ctx>, logic: TierClient) {
    let mut failing = false;
    loop {
        let ok = refresh(&ctx, &logic).await;
        if !ok && !failing {
            tracing::warn!(
                logic = logic.base(),
                "cannot read whether comments are suspended; open pages keep their own checks"
            );
        }
        failing = !ok;
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = ctx.shutdown.wait() => return,
        }
    }
}
