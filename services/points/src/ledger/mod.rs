//! The double-entry points ledger: lots (pure rules), the in-memory book a
//! batch works on, its operations, and its Postgres store.

pub mod book;
pub mod lots;
pub mod ops;
pub mod store;
