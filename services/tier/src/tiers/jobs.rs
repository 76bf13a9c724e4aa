//! The tier jobs: period-end reviews, downgrade warnings and grace, manual
//! assignments ending, re-evaluations after a ladder change (placeholder
//! until built).

use std::time::Duration;

use laurel_runtime::app::App;

use crate::Tiers;

/// Adds the tier jobs to `app`, each running every `interval`.
pub fn schedule(app: App, tiers: Tiers, interval: Duration) -> App {
    let _ = (tiers, interval);
    app
}
