//! Every member's value and outlook: historical and predictive CLV,
//! lifecycle stage (with `LifecycleChanged`) and churn risk.

mod api;
pub mod assess;
pub mod jobs;
pub mod score;
pub mod store;
