//! Analytics models as plain functions over plain data: no I/O, no clock.
//!
//! The analytics service loads facts from its schema, calls these, and
//! stores the results; the benchmark calls them directly.

pub mod clv;
pub mod lifecycle;
pub mod recommend;
pub mod rfm;
