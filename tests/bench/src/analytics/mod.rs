//! laurel-analytics-bench's parts: flags, the generated programme, its
//! load, the service's calls, peak memory, the Python side,
//! recommendations under h2load (with the replica that builds their
//! models), and the report.

pub mod args;
pub mod breakdown;
pub mod load;
pub mod many;
pub mod peak;
pub mod population;
pub mod python;
pub mod recommend;
pub mod report;
pub mod scorer;
pub mod service;
