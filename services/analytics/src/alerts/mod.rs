//! Alerts on KPIs: rules ([`rule`]), when they breach ([`evaluate`]), the
//! job raising them with an `AlertRaised` event (`job`), and their
//! signed webhook delivery with retries ([`webhook`]).

mod api;
pub mod evaluate;
mod job;
pub mod rule;
pub mod store;
pub mod webhook;

use std::time::Duration;

use laurel_runtime::app::App;
use tokio::sync::watch;

use crate::{Analytics, error::AnalyticsError};

/// Adds the alert jobs to `app`: evaluation every `job_interval`, and
/// webhook delivery when a webhook is configured.
pub fn schedule(app: App, analytics: Analytics) -> App {
    let every = analytics.config.job_interval;
    let sender = analytics.config.webhook.clone().map(webhook::Sender::new);
    let evaluator = analytics.clone();
    let app = app.job("analytics-alerts", move |stop| {
        let a = evaluator.clone();
        async move {
            repeat(stop, every, || {
                let a = a.clone();
                async move { a.evaluate_alert_rules().await }
            })
            .await
        }
    });
    let Some(sender) = sender else {
        return app;
    };
    app.job("analytics-alert-webhooks", move |stop| {
        let (a, sender) = (analytics.clone(), sender.clone());
        async move {
            repeat(stop, every, || {
                let (a, sender) = (a.clone(), sender.clone());
                async move { a.deliver_due_alerts(&sender).await }
            })
            .await
        }
    })
}

/// Runs `step` until `stop`: again at once while it finds work, otherwise
/// after `every`; a failed step is logged and tried at the next turn.
async fn repeat<F, Fut>(
    mut stop: watch::Receiver<bool>,
    every: Duration,
    step: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<usize, AnalyticsError>>,
{
    loop {
        match step().await {
            Ok(done) if done > 0 => {
                if *stop.borrow() {
                    return Ok(());
                }
                continue;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "alert job failed; the next run tries again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return Ok(()),
        }
        if *stop.borrow() {
            return Ok(());
        }
    }
}
