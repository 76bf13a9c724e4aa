//! The subscription jobs: renewal reminders, grace, expiry, cancellations
//! taking effect (placeholder until built).

use std::time::Duration;

use laurel_runtime::app::App;

use crate::Tiers;

/// Adds the subscription jobs to `app`, each running every `interval`.
pub fn schedule(app: App, tiers: Tiers, interval: Duration) -> App {
    let _ = (tiers, interval);
    app
}
