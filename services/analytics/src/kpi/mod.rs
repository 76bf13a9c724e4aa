//! KPIs by period, retention by enrolment cohort, and CSV exports.
//!
//! - [`period`]: days, ISO weeks, months, quarters and years of local days
//!   in the programme's time zone;
//! - [`filter`]: channel and store narrow purchases, tier narrows members;
//!   a filter a KPI cannot take is refused;
//! - [`sql`]: one statement per KPI, every period of the window present;
//! - [`cohort`]: the retention table;
//! - [`export`]: `ExportReport`, streamed in chunks.
//!
//! A request covers whole periods: from the one holding `from`'s local day
//! to the one holding the local day of the last instant before `to`.

mod api;
pub mod cohort;
pub mod csv;
pub mod export;
pub mod filter;
pub mod period;
pub mod request;
pub mod sql;
