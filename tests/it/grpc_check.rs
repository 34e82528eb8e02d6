//! Tests for the grpc check.
