//! Pages with a comment thread: the HTML around the marked element, and the page as last
//! assembled with its snapshot.
//!
//! Assembly (splicing the snapshot in and compressing the result) happens once per change of
//! snapshot or suspension, not per request: every request in between is served the same
//! prepared bytes. While one request assembles, others keep getting the previous page.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};

use crate::site::{Encoded, Level, Meta};
use crate::snapshot::{self, ThreadSlot};
use crate::suspension::Suspension;

/// A page with a marked thread.
pub(crate) struct Page {
    meta: Meta,
    prefix: Bytes,
    suffix: Bytes,
    /// The page's thread.
    pub slot: Arc<ThreadSlot>,
    assembled: ArcSwapOption<Assembled>,
    busy: Mutex<()>,
}

/// A page with its snapshot spliced in, in every representation.
pub(crate) struct Assembled {
    key: (u64, u64),
    /// Headers of this assembly (its `Last-Modified` accounts for the snapshot).
    pub meta: Meta,
    /// The representations.
    pub encoded: Encoded,
}

impl Page {
    /// Splits `html` at `insert_at`, where the snapshot goes.
    pub fn new(meta: Meta, html: Vec<u8>, insert_at: usize, slot: Arc<ThreadSlot>) -> Page {
        let mut html = Bytes::from(html);
        let suffix = html.split_off(insert_at.min(html.len()));
        Page {
            meta,
            prefix: html,
            suffix,
            slot,
            assembled: ArcSwapOption::empty(),
            busy: Mutex::new(()),
        }
    }

    /// Calls `serve` with the page as it should be served now.
    ///
    /// The usual case (nothing changed since the last assembly) reads both the snapshot and
    /// the assembled page through `ArcSwap` guards: no reference count is touched, so the
    /// cores serving a busy page do not pass its cache lines back and forth.
    pub fn with_current<R>(
        &self,
        suspension: &Suspension,
        serve: impl FnOnce(&Assembled) -> R,
    ) -> R {
        {
            let snap = self.slot.current.load();
            let key = key(snap.as_deref(), suspension);
            let last = self.assembled.load();
            if let Some(a) = last.as_ref()
                && a.key == key
            {
                return serve(a);
            }
        }
        serve(&self.current(suspension))
    }

    /// The page as it should be served now, assembling it when its snapshot or the
    /// suspension changed.
    fn current(&self, suspension: &Suspension) -> Arc<Assembled> {
        let snap = self.slot.current.load_full();
        let key = key(snap.as_deref(), suspension);
        let last = self.assembled.load_full();
        if let Some(a) = &last
            && a.key == key
        {
            return a.clone();
        }
        let _guard = match self.busy.try_lock() {
            Ok(g) => Some(g),
            // Someone else is assembling: the previous page is good enough for now.
            Err(_) => match last {
                Some(a) => return a,
                None => None,
            },
        };
        let state = suspension.get();
        let fragment = snapshot::fragment(&self.slot.thread, snap.as_deref(), &state);
        let mut body =
            BytesMut::with_capacity(self.prefix.len() + fragment.len() + self.suffix.len());
        body.extend_from_slice(&self.prefix);
        body.extend_from_slice(fragment.as_bytes());
        body.extend_from_slice(&self.suffix);
        let mut modified = self.meta.modified.max(suspension.changed_at());
        if let Some(s) = &snap {
            modified = modified.max(s.changed_at);
        }
        let assembled = Arc::new(Assembled {
            key,
            meta: Meta::with(
                self.meta.content_type.clone(),
                self.meta.cache_control.clone(),
                modified,
            ),
            encoded: Encoded::new(body.freeze(), true, Level::Assembly, None, None),
        });
        self.assembled.store(Some(assembled.clone()));
        assembled
    }
}

/// What an assembly depends on: the snapshot's version (0 without one) and the suspension's
/// generation.
fn key(snap: Option<&snapshot::Snapshot>, suspension: &Suspension) -> (u64, u64) {
    (snap.map_or(0, |s| s.version), suspension.generation())
}
