//! Tests for the exec check.
