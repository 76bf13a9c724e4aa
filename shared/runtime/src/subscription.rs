//! A Redis pub/sub channel that every replica hears, for in-process copies
//! kept honest by what the channel says: while a replica is not subscribed
//! (Redis away, reconnecting) it must not trust its copies, and when it
//! subscribes again it must assume it missed messages.
//!
//! [`listen`] keeps one subscription alive until shutdown: it resubscribes
//! with backoff after any failure, pings once a second so a silently dead
//! connection is noticed, and tells its [`Listener`] when it is
//! subscribed, what it heard and when it stopped being subscribed.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

/// What a subscription tells the copies it keeps honest.
pub trait Listener: Send + Sync {
    /// Subscribed: from now on every message is heard; anything published
    /// before may have been missed.
    fn subscribed(&self);
    /// A message's payload.
    fn heard(&self, payload: &[u8]);
    /// No longer subscribed: messages may be missed from now on.
    fn lost(&self);
}

/// Listens on `channel` until `shutdown`, resubscribing after any failure.
pub async fn listen(
    redis_url: &str,
    channel: &str,
    listener: &impl Listener,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        match listen_once(redis_url, channel, listener, &mut shutdown).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(%error, %channel, "subscription unavailable");
            }
        }
        listener.lost();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    listener.lost();
    Ok(())
}

async fn listen_once(
    redis_url: &str,
    channel: &str,
    listener: &impl Listener,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let pubsub = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await??;
    let (mut sink, mut stream) = pubsub.split();
    tokio::time::timeout(Duration::from_secs(2), sink.subscribe(channel)).await??;
    listener.subscribed();
    tracing::info!(%channel, "subscribed");
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => listener.heard(message.get_payload_bytes()),
                None => anyhow::bail!("subscription closed"),
            },
            _ = heartbeat.tick() => {
                // A silently dead connection would hide messages. In
                // subscribed mode PING answers an array, not PONG.
                let ping: redis::RedisResult<redis::Value> =
                    match tokio::time::timeout(Duration::from_secs(1), sink.ping()).await {
                        Ok(result) => result,
                        Err(_) => anyhow::bail!("subscription heartbeat timed out"),
                    };
                ping?;
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}
