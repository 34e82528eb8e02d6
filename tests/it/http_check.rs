//! Tests for the http check.
