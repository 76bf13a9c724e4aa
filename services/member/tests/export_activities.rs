//! ExportActivities over real gRPC: the programme's whole activity log in
//! activity_id order, in batches, resumable, filtered, guests included,
//! operators only.

mod common;

use common::*;
use laurel_proto::member::v1 as pb;
use tonic::Code;

/// Every batch of an export, read to its end.
async fn export(
    app: &TestApp,
    request: pb::ExportActivitiesRequest,
) -> Vec<pb::ExportActivitiesResponse> {
    let mut stream = app
        .client
        .clone()
        .export_activities(req(request))
        .await
        .expect("the export starts")
        .into_inner();
    let mut batches = Vec::new();
    while let Some(batch) = stream.message().await.expect("a batch") {
        batches.push(batch);
    }
    batches
}

/// The activity ids of `batches`, in the order received.
fn ids(batches: &[pb::ExportActivitiesResponse]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.activities.iter().map(|a| a.activity_id.clone()))
        .collect()
}

/// The error an export answers with before its first batch.
async fn refused(
    app: &TestApp,
    request: tonic::Request<pb::ExportActivitiesRequest>,
) -> tonic::Status {
    match app.client.clone().export_activities(request).await {
        Ok(_) => panic!("the export started"),
        Err(status) => status,
    }
}

async fn record(app: &TestApp, request: pb::RecordActivityRequest) -> pb::Activity {
    app.client
        .clone()
        .record_activity(req(request))
        .await
        .expect("recorded")
        .into_inner()
        .activity
        .unwrap()
}

fn guest(activity: pb::Activity) -> pb::RecordActivityRequest {
    pb::RecordActivityRequest {
        member: None,
        auto_enroll: false,
        guest: true,
        activity: Some(activity),
    }
}

fn review(external_id: &str) -> pb::Activity {
    pb::Activity {
        source: "app".into(),
        external_id: external_id.into(),
        attributes: [("campaign".to_owned(), "spring".to_owned())].into(),
        detail: Some(pb::activity::Detail::Review(pb::Review {
            sku: "SKU-1".into(),
            rating: 5,
            text: "fits well".into(),
        })),
        ..Default::default()
    }
}

fn at(seconds: i64, mut activity: pb::Activity) -> pb::Activity {
    activity.occurred_at = Some(prost_types::Timestamp { seconds, nanos: 0 });
    activity
}

/// One day after 2023-11-14T22:13:20Z, the filters' reference.
const DAY: i64 = 86_400;
const T0: i64 = 1_700_000_000;

#[tokio::test]
async fn the_export_streams_every_activity_of_the_programme_in_recorded_order_in_batches() {
    let mut app = spawn().await;
    let (ada, bob, cy) = (
        create(&mut app).await,
        create(&mut app).await,
        create(&mut app).await,
    );
    let mut recorded = Vec::new();
    for (member, activity) in [
        (&ada, purchase(&rid(), 1000)),
        (&bob, review(&rid())),
        (&cy, purchase(&rid(), 2000)),
        (&ada, review(&rid())),
        (&bob, purchase(&rid(), 3000)),
        (&cy, review(&rid())),
    ] {
        recorded.push(record(&app, by_id(&member.member_id, activity)).await);
    }
    recorded.push(record(&app, guest(purchase(&rid(), 4000))).await);

    let batches = export(
        &app,
        pb::ExportActivitiesRequest {
            batch_size: 3,
            ..Default::default()
        },
    )
    .await;

    let sizes: Vec<usize> = batches.iter().map(|b| b.activities.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let recorded_ids: Vec<String> = recorded.iter().map(|a| a.activity_id.clone()).collect();
    assert_eq!(ids(&batches), recorded_ids, "recorded order");
    let mut sorted = recorded_ids.clone();
    sorted.sort();
    assert_eq!(recorded_ids, sorted, "recorded order is activity_id order");
    for batch in &batches {
        assert_eq!(
            batch.last_activity_id,
            batch.activities.last().unwrap().activity_id
        );
    }
    // Each exported activity is what RecordActivity returned and what
    // ListActivities shows, free text and attributes included.
    let exported: Vec<&pb::Activity> = batches.iter().flat_map(|b| &b.activities).collect();
    for (exported, recorded) in exported.iter().zip(&recorded) {
        assert_eq!(*exported, recorded);
    }
    let listed = app
        .client
        .list_activities(req(pb::ListActivitiesRequest {
            member_id: ada.member_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .activities;
    for activity in &listed {
        assert!(
            exported.contains(&activity),
            "{activity:?} exported as listed"
        );
    }
    assert_eq!(listed.len(), 2);
    // The guest's purchase is there, without a member.
    assert_eq!(exported[6].member_id, "");
}

#[tokio::test]
async fn resuming_after_a_cursor_yields_exactly_the_rest() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    for _ in 0..5 {
        record(&app, by_id(&member.member_id, purchase(&rid(), 100))).await;
    }
    record(&app, guest(purchase(&rid(), 200))).await;
    let all = ids(&export(&app, pb::ExportActivitiesRequest::default()).await);
    assert_eq!(all.len(), 6);

    let first = export(
        &app,
        pb::ExportActivitiesRequest {
            batch_size: 2,
            ..Default::default()
        },
    )
    .await;
    let cursor = first[0].last_activity_id.clone();
    assert_eq!(cursor, all[1]);
    let rest = export(
        &app,
        pb::ExportActivitiesRequest {
            after_activity_id: cursor,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&rest), all[2..]);

    // After the last activity there is nothing: the stream ends at once.
    let after_last = export(
        &app,
        pb::ExportActivitiesRequest {
            after_activity_id: all[5].clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(after_last.is_empty());
}

#[tokio::test]
async fn a_programme_without_activities_exports_no_batch() {
    let app = spawn().await;
    assert!(
        export(&app, pb::ExportActivitiesRequest::default())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn type_and_business_time_filters_narrow_the_export() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let order = rid();
    let mut recorded = Vec::new();
    for activity in [
        at(T0, purchase(&order, 1000)),
        at(T0 + DAY, review(&rid())),
        at(T0 + 2 * DAY, refund(&rid(), &order, 400)),
        at(T0 + 3 * DAY, review(&rid())),
    ] {
        recorded.push(
            record(&app, by_id(&member.member_id, activity))
                .await
                .activity_id,
        );
    }
    let guest_purchase = record(&app, guest(at(T0 + 2 * DAY, purchase(&rid(), 500))))
        .await
        .activity_id;
    let exported = |request| {
        let app = &app;
        async move { ids(&export(app, request).await) }
    };
    let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });

    let reviews = exported(pb::ExportActivitiesRequest {
        activity_types: vec![pb::ActivityType::Review as i32],
        ..Default::default()
    })
    .await;
    assert_eq!(reviews, [recorded[1].clone(), recorded[3].clone()]);

    let money = exported(pb::ExportActivitiesRequest {
        activity_types: vec![
            pb::ActivityType::Purchase as i32,
            pb::ActivityType::Refund as i32,
        ],
        ..Default::default()
    })
    .await;
    assert_eq!(
        money,
        [
            recorded[0].clone(),
            recorded[2].clone(),
            guest_purchase.clone()
        ]
    );

    // [from, to): the day-1 review and both day-2 activities; not day 3.
    let window = exported(pb::ExportActivitiesRequest {
        occurred_from: ts(T0 + DAY),
        occurred_to: ts(T0 + 3 * DAY),
        ..Default::default()
    })
    .await;
    assert_eq!(
        window,
        [
            recorded[1].clone(),
            recorded[2].clone(),
            guest_purchase.clone()
        ]
    );

    let from_only = exported(pb::ExportActivitiesRequest {
        occurred_from: ts(T0 + 3 * DAY),
        ..Default::default()
    })
    .await;
    assert_eq!(from_only, [recorded[3].clone()]);

    let both = exported(pb::ExportActivitiesRequest {
        activity_types: vec![pb::ActivityType::Purchase as i32],
        occurred_to: ts(T0 + DAY),
        batch_size: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(both, [recorded[0].clone()]);
}

#[tokio::test]
async fn the_export_needs_the_admin_scope() {
    let (reader, operator) = ("0123456789abcdef-reader", "0123456789abcdef-operator");
    let mut app = spawn_with(Options {
        scoped_keys: vec![
            ("shop".into(), reader.into(), "read|write".into()),
            ("ops".into(), operator.into(), "admin".into()),
        ],
        relay: true,
        ..Options::default()
    })
    .await;
    let with_key = |key: &str| {
        let mut request = req(pb::ExportActivitiesRequest::default());
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().unwrap());
        request
    };
    let mut create = req(create_request(&phone()));
    create
        .metadata_mut()
        .insert("x-api-key", reader.parse().unwrap());
    let member = app.client.create_member(create).await.unwrap().into_inner();
    let mut purchase_request = req(by_id(
        &member.member.unwrap().member_id,
        purchase(&rid(), 100),
    ));
    purchase_request
        .metadata_mut()
        .insert("x-api-key", reader.parse().unwrap());
    app.client.record_activity(purchase_request).await.unwrap();

    let status = refused(&app, with_key(reader)).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "SCOPE_MISSING");

    let mut batches = app
        .client
        .export_activities(with_key(operator))
        .await
        .expect("an admin key exports")
        .into_inner();
    let batch = batches.message().await.unwrap().expect("one batch");
    assert_eq!(batch.activities.len(), 1);
}

#[tokio::test]
async fn a_bad_export_request_names_its_field() {
    let app = spawn().await;
    let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    for (request, field) in [
        (
            pb::ExportActivitiesRequest {
                after_activity_id: "not-an-id".into(),
                ..Default::default()
            },
            "after_activity_id",
        ),
        (
            pb::ExportActivitiesRequest {
                batch_size: -1,
                ..Default::default()
            },
            "batch_size",
        ),
        (
            pb::ExportActivitiesRequest {
                batch_size: 5001,
                ..Default::default()
            },
            "batch_size",
        ),
        (
            pb::ExportActivitiesRequest {
                occurred_from: ts(T0),
                occurred_to: ts(T0),
                ..Default::default()
            },
            "occurred_to",
        ),
        (
            pb::ExportActivitiesRequest {
                occurred_from: ts(T0 + DAY),
                occurred_to: ts(T0),
                ..Default::default()
            },
            "occurred_to",
        ),
        (
            pb::ExportActivitiesRequest {
                activity_types: vec![pb::ActivityType::Unspecified as i32],
                ..Default::default()
            },
            "activity_types",
        ),
    ] {
        let status = refused(&app, req(request)).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violated_fields(&status), [field]);
    }
    // The largest batch is allowed.
    export(
        &app,
        pb::ExportActivitiesRequest {
            batch_size: 5000,
            ..Default::default()
        },
    )
    .await;
}

/// Peak resident memory of this process, in KiB (VmHWM).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The server runs inside this test process: an export that loaded the
/// history at once, or ran ahead of its reader, would raise the peak by the
/// size of the history (here about 60 MB); paging from Postgres as the
/// client reads keeps it near one batch.
#[tokio::test]
async fn a_large_export_streams_with_bounded_memory() {
    const ROWS: i64 = 50_000;
    let mut app = spawn().await;
    let member = create(&mut app).await;
    // About 1 KB of attributes per activity.
    let mut template = purchase(&rid(), 100);
    template.attributes = (0..40)
        .map(|i| (format!("attribute-{i:02}"), "x".repeat(20)))
        .collect();
    record(&app, by_id(&member.member_id, template)).await;
    // Copies of that row under increasing ids below every real UUIDv7.
    sqlx::query(
        "INSERT INTO activities (program_id, activity_id, member_id, activity_type, source,
            external_id, occurred_at, recorded_at, order_id, currency, amount_minor, body, request_hash)
         SELECT a.program_id,
                ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
                a.member_id, a.activity_type, a.source, a.external_id || '-' || i, a.occurred_at,
                a.recorded_at, NULL, NULL, NULL, a.body, a.request_hash
         FROM activities a, generate_series(1, $1) AS i",
    )
    .bind(ROWS)
    .execute(&app.db)
    .await
    .unwrap();

    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    let mut stream = app
        .client
        .clone()
        .export_activities(req(pb::ExportActivitiesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let (mut count, mut bytes, mut batches) = (0_i64, 0_usize, 0);
    while let Some(batch) = stream.message().await.unwrap() {
        count += batch.activities.len() as i64;
        bytes += prost::Message::encoded_len(&batch);
        batches += 1;
    }
    let elapsed = started.elapsed();
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;
    println!(
        "exported {count} activities ({} MiB) in {batches} batches in {elapsed:?}: {:.0}/s, peak RSS grew {grown_mib} MiB",
        bytes / (1024 * 1024),
        count as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(count, ROWS + 1);
    assert!(
        bytes > 50 * 1024 * 1024,
        "the history is large: {bytes} bytes"
    );
    assert!(grown_mib < 24, "peak RSS grew {grown_mib} MiB");
}

#[tokio::test]
async fn a_client_that_stops_reading_ends_its_export_and_others_go_on() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    for _ in 0..6 {
        record(&app, by_id(&member.member_id, purchase(&rid(), 100))).await;
    }
    for _ in 0..3 {
        let mut stream = app
            .client
            .clone()
            .export_activities(req(pb::ExportActivitiesRequest {
                batch_size: 1,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.activities.len(), 1);
        drop(stream);
    }
    let all = export(&app, pb::ExportActivitiesRequest::default()).await;
    assert_eq!(ids(&all).len(), 6);
}
