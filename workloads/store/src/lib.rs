//! io360 store.
