//! The CDNOW sample (2,357 customers, 6,919 purchases) imported through
//! the member service's RecordActivity, fitted over gRPC with calibration
//! through 1997-09-30: BG/NBD and Gamma-Gamma match the published
//! parameters (Fader, Hardie and Lee 2005) to three significant figures.

mod common;

use std::{collections::BTreeMap, sync::Arc};

use chrono::{NaiveDate, TimeZone, Utc};
use common::{WAIT, eventually, req, rid, spawn, timestamp};
use laurel_proto::{analytics::v1 as pb, common::v1::Money, member::v1 as mpb};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// (sample customer id, day, cents) of every purchase.
fn cdnow() -> Vec<(u32, NaiveDate, i64)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/data/cdnow/CDNOW_sample.txt"
    );
    std::fs::read_to_string(path)
        .expect("the CDNOW sample")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let day = NaiveDate::parse_from_str(f[2], "%Y%m%d").unwrap();
            let dollars: f64 = f[4].parse().unwrap();
            (f[1].parse().unwrap(), day, (dollars * 100.0).round() as i64)
        })
        .collect()
}

fn sig3(x: f64) -> f64 {
    let digits = 2 - x.abs().log10().floor() as i32;
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[tokio::test]
async fn cdnow_fits_match_the_published_parameters() {
    let stack = Arc::new(spawn().await);
    stack.settings("UTC").await;
    let purchases = cdnow();
    assert_eq!(purchases.len(), 6_919);
    let customers: BTreeMap<u32, ()> = purchases.iter().map(|p| (p.0, ())).collect();
    assert_eq!(customers.len(), 2_357);
    let gate = Arc::new(Semaphore::new(16));
    let mut members = BTreeMap::new();
    let mut tasks = Vec::new();
    for &c in customers.keys() {
        let (stack, gate) = (stack.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            (c, stack.member().await)
        }));
    }
    for t in tasks {
        let (c, m) = t.await.unwrap();
        members.insert(c, m);
    }
    let mut tasks = Vec::new();
    for (i, (c, day, cents)) in purchases.into_iter().enumerate() {
        let (stack, gate, member) = (stack.clone(), gate.clone(), members[&c]);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            record(&stack, member, i, day, cents).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eventually(
        WAIT * 4,
        "every CDNOW purchase reached analytics",
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM purchases")
                .fetch_one(&stack.db)
                .await
                .ok()?;
            (n == 6_919).then_some(())
        },
    )
    .await;
    let end = Utc.with_ymd_and_hms(1997, 9, 30, 0, 0, 0).unwrap();
    let model = stack
        .analytics
        .clone()
        .fit_clv_model(req(pb::FitClvModelRequest {
            request_id: rid(),
            calibration_start: None,
            calibration_end: Some(timestamp(end)),
        }))
        .await
        .expect("fit")
        .into_inner()
        .model
        .unwrap();
    assert_eq!(model.customers, 2_357);
    assert!(
        model.likelihood_terms < 2_357,
        "equal histories share a term"
    );
    let bg = model.bg_nbd.unwrap();
    assert_eq!(
        [sig3(bg.r), sig3(bg.alpha), sig3(bg.a), sig3(bg.b)],
        [0.243, 4.41, 0.793, 2.43],
        "BG/NBD {bg:?}"
    );
    let gg = model.gamma_gamma.unwrap();
    assert_eq!(model.spend_customers, 946);
    assert_eq!(
        [sig3(gg.p), sig3(gg.q), sig3(gg.gamma)],
        [6.25, 3.74, 15.4],
        "Gamma-Gamma {gg:?}"
    );
    let got = stack
        .analytics
        .clone()
        .get_clv_model(req(pb::GetClvModelRequest {}))
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap();
    assert_eq!(got.model_id, model.model_id);
}

async fn record(stack: &common::Stack, member: Uuid, i: usize, day: NaiveDate, cents: i64) {
    let at = day.and_hms_opt(12, 0, 0).unwrap().and_utc();
    stack
        .member
        .clone()
        .record_activity(req(mpb::RecordActivityRequest {
            member: Some(mpb::record_activity_request::Member::MemberId(
                member.to_string(),
            )),
            activity: Some(mpb::Activity {
                source: "cdnow".into(),
                external_id: format!("cdnow-{i}"),
                occurred_at: Some(timestamp(at)),
                detail: Some(mpb::activity::Detail::Purchase(mpb::Purchase {
                    order_id: format!("cdnow-{i}"),
                    total: Some(Money {
                        currency_code: "EUR".into(),
                        amount_minor: cents,
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .expect("purchase recorded");
}
