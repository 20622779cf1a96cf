//! The tier side of io360's control ConfigMap.
