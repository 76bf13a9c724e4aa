//! Every member's value and outlook: historical and predictive CLV,
//! lifecycle stage (with `LifecycleChanged`) and churn risk.

pub mod store;
