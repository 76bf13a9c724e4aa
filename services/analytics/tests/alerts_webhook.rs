//! Webhook delivery against a small HTTP receiver in the test: down at
//! first (its port reserved, nothing listening), then up. Each alert
//! arrives exactly once, signed with the secret; attempts back off on the
//! service clock; an alert still undelivered a day after it was raised is
//! given up as failed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Duration, TimeZone, Utc};
use hmac::{Hmac, Mac};
use laurel_analytics::alerts::webhook::Webhook;
use laurel_proto::analytics::v1::{self as pb, analytics_service_client::AnalyticsServiceClient};
use laurel_runtime::clock::ManualClock;
use laurel_test_support as support;
use sha2::Sha256;
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::transport::Channel;
use uuid::Uuid;

const SECRET: &str = "whsec-test-0123456789";
const WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// An analytics service alone, delivering to `url`.
struct Analytics {
    client: AnalyticsServiceClient<Channel>,
    db: PgPool,
    clock: ManualClock,
    _running: support::Running,
}

async fn spawn(url: &str, now: DateTime<Utc>) -> Analytics {
    let clock = ManualClock::new(now);
    let runtime = support::runtime_config("analytics");
    let schema = runtime.db_schema.clone();
    let config = laurel_analytics::Config {
        runtime,
        job_interval: std::time::Duration::from_millis(100),
        recommend_interval: std::time::Duration::ZERO,
        recommend_cache: std::time::Duration::ZERO,
        recommend_memory: false,
        recommend_grace: std::time::Duration::ZERO,
        points_addr: None,
        points_api_key: None,
        webhook: Some(Webhook::signed(url, SECRET).unwrap()),
    };
    let app = laurel_analytics::build(config, Some(Arc::new(clock.clone())))
        .await
        .expect("analytics builds");
    let running = support::start(app).await;
    Analytics {
        client: AnalyticsServiceClient::new(running.channel.clone()),
        db: laurel_runtime::db::pool(&support::database_url(), &schema, 2).unwrap(),
        clock,
        _running: running,
    }
}

fn req<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-laurel-program", "default".parse().unwrap());
    request
}

impl Analytics {
    async fn setup(&self, thresholds: &[(&str, f64)]) {
        let mut client = self.client.clone();
        client
            .put_settings(req(pb::PutSettingsRequest {
                request_id: Uuid::now_v7().to_string(),
                settings: Some(pb::Settings {
                    currency_code: "EUR".into(),
                    time_zone: "UTC".into(),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap();
        for (id, threshold) in thresholds {
            client
                .put_alert_rule(req(pb::PutAlertRuleRequest {
                    request_id: Uuid::now_v7().to_string(),
                    rule: Some(pb::AlertRule {
                        rule_id: (*id).into(),
                        kpi: pb::Kpi::PointsIssued as i32,
                        period: pb::Period::Day as i32,
                        condition: pb::AlertCondition::Above as i32,
                        threshold: *threshold,
                        enabled: true,
                        ..Default::default()
                    }),
                }))
                .await
                .unwrap();
        }
    }

    async fn earn(&self, points: i64, at: DateTime<Utc>) {
        sqlx::query(
            "INSERT INTO points_movements (program_id, movement_id, member_id, kind, points,
                occurred_at, day)
             VALUES ('default', $1, NULL, 'earn', $2, $3, $4)",
        )
        .bind(Uuid::now_v7())
        .bind(points)
        .bind(at)
        .bind(at.date_naive())
        .execute(&self.db)
        .await
        .unwrap();
    }

    async fn alerts(&self) -> Vec<pb::Alert> {
        self.client
            .clone()
            .list_alerts(req(pb::ListAlertsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .alerts
    }

    /// Waits until `n` alerts all satisfy `ok`.
    async fn alerts_until(
        &self,
        n: usize,
        what: &str,
        ok: impl Fn(&pb::Alert) -> bool,
    ) -> Vec<pb::Alert> {
        support::eventually(WAIT, what, || async {
            let alerts = self.alerts().await;
            (alerts.len() == n && alerts.iter().all(&ok)).then_some(alerts)
        })
        .await
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

/// Serves HTTP/1.1 POSTs on `listener`, answering 200 to each.
async fn receive(listener: TcpListener, inbox: Inbox) {
    while let Ok((socket, _)) = listener.accept().await {
        tokio::spawn(connection(socket, inbox.clone()));
    }
}

async fn connection(mut socket: TcpStream, inbox: Inbox) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match socket.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let headers: HashMap<String, String> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            match socket.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body = buffer[head_end..head_end + length].to_vec();
        buffer.drain(..head_end + length);
        inbox.lock().unwrap().push(Received { headers, body });
        if socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

fn verify(received: &Received) -> serde_json::Value {
    let timestamp = &received.headers["x-laurel-timestamp"];
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(received.headers["x-laurel-signature"], expected);
    assert_eq!(received.headers["content-type"], "application/json");
    serde_json::from_slice(&received.body).unwrap()
}

#[tokio::test]
async fn a_receiver_down_at_first_gets_each_alert_once_signed() {
    let now = Utc.with_ymd_and_hms(2026, 6, 10, 15, 0, 0).unwrap();
    let port = support::free_port();
    let analytics = spawn(&format!("http://127.0.0.1:{port}/hooks/laurel"), now).await;
    analytics
        .setup(&[("above-100", 100.0), ("above-200", 200.0)])
        .await;
    analytics.earn(500, now - Duration::hours(1)).await;
    // Both raised; the first attempt of each is refused.
    let failed_once = analytics
        .alerts_until(2, "a refused attempt each", |a| a.attempts >= 1)
        .await;
    for a in &failed_once {
        assert_eq!((a.delivery.as_str(), a.attempts), ("pending", 1));
    }
    let inbox = Inbox::default();
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the reserved port");
    tokio::spawn(receive(listener, inbox.clone()));
    // Nothing is retried before its backoff (1 s on the service clock).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(inbox.lock().unwrap().is_empty());
    analytics.clock.advance(Duration::seconds(2));
    let delivered = analytics
        .alerts_until(2, "both delivered", |a| a.delivery == "delivered")
        .await;
    for a in &delivered {
        assert_eq!(a.attempts, 2);
        assert_eq!(
            a.delivered_at.unwrap().seconds,
            (now + Duration::seconds(2)).timestamp()
        );
    }
    // Later turns send nothing more.
    analytics.clock.advance(Duration::minutes(10));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let received = inbox.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "each alert exactly once");
    let mut ids = Vec::new();
    for r in &received {
        let body = verify(r);
        let id = r.headers["x-laurel-alert-id"].clone();
        assert_eq!(body["alert_id"], id.as_str());
        assert_eq!(
            r.headers["x-laurel-timestamp"],
            (now + Duration::seconds(2)).timestamp().to_string()
        );
        assert_eq!(body["program_id"], "default");
        assert_eq!(body["kpi"], "KPI_POINTS_ISSUED");
        assert_eq!(body["value"], 500.0);
        assert_eq!(body["period_start"], "2026-06-10T00:00:00Z");
        ids.push(id);
    }
    ids.sort();
    let mut expected: Vec<String> = delivered.iter().map(|a| a.alert_id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn an_alert_undelivered_for_a_day_is_given_up() {
    let now = Utc.with_ymd_and_hms(2026, 6, 10, 15, 0, 0).unwrap();
    let port = support::free_port();
    let analytics = spawn(&format!("http://127.0.0.1:{port}/"), now).await;
    analytics.setup(&[("above-100", 100.0)]).await;
    analytics.earn(500, now).await;
    analytics
        .alerts_until(1, "a refused attempt", |a| a.attempts >= 1)
        .await;
    // Backoff doubles: 1 s, 2 s, 4 s... each attempt refused.
    for step in [1, 2, 4] {
        analytics.clock.advance(Duration::seconds(step));
        analytics
            .alerts_until(1, "another refused attempt", |a| {
                a.attempts >= 2 + step.ilog2() as i32
            })
            .await;
    }
    analytics.clock.advance(Duration::hours(24));
    let failed = analytics
        .alerts_until(1, "given up", |a| a.delivery == "failed")
        .await;
    assert_eq!(failed[0].attempts, 5);
    assert!(failed[0].delivered_at.is_none());
}
