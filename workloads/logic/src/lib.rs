//! io360 logic.
