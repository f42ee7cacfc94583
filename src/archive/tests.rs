//! Queue and verdict logic through an in-memory transport.
