//! Laurel points service.

pub mod rules;
