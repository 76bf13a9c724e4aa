//! The points service as real processes (the release binary's code, built
//! for tests): two processes on one database never overspend one hot
//! account, and a process killed with SIGKILL under load loses and doubles
//! nothing, neither acknowledged requests nor purchase events.

mod common;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use common::{eventually, req, rid};
use laurel_proto::{
    common::v1::Money,
    member::v1::{self as mpb, member_service_client::MemberServiceClient},
    points::v1::{self as pb, points_service_client::PointsServiceClient},
};
use laurel_test_support as support;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use uuid::Uuid;

/// A points process.
struct Proc {
    child: Child,
    client: PointsServiceClient<Channel>,
}

async fn start_points(schema: &str, prefix: &str, member: SocketAddr) -> Proc {
    let port = support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_laurel-points"))
        .env("DATABASE_URL", support::database_url())
        .env("REDIS_URL", support::redis_url())
        .env("LAUREL_DB_SCHEMA", schema)
        .env("LAUREL_REDIS_PREFIX", prefix)
        .env("LAUREL_GRPC_ADDR", format!("127.0.0.1:{port}"))
        .env("LAUREL_METRICS_ADDR", "off")
        .env("LAUREL_DEV_MODE", "1")
        .env("LAUREL_MEMBER_ADDR", format!("http://{member}"))
        .env("LAUREL_POINTS_JOB_INTERVAL_MS", "100")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("points starts");
    let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let channel = eventually(Duration::from_secs(30), "points listens", || {
        let endpoint = endpoint.clone();
        async move { endpoint.connect().await.ok() }
    })
    .await;
    Proc {
        child,
        client: PointsServiceClient::new(channel),
    }
}

/// A member service alone (points runs as processes here).
async fn start_member(prefix: &str) -> (support::Running, MemberServiceClient<Channel>) {
    let mut runtime = support::runtime_config("member");
    runtime.redis_prefix = prefix.to_owned();
    let config = laurel_member::Config {
        runtime,
        pii_keys: laurel_member::pii::Keyring::single([42; 32]),
        phone_region: Some(phonenumber::country::Id::DE),
        points: laurel_member::LinkSettings::at("http://127.0.0.1:1"),
        tier: None,
    };
    let clock = laurel_runtime::clock::SystemClock;
    let app = laurel_member::build(config, Some(Arc::new(clock)))
        .await
        .unwrap();
    let running = support::start(app).await;
    let client = MemberServiceClient::new(running.channel.clone());
    (running, client)
}

async fn enrol(member: &MemberServiceClient<Channel>) -> Uuid {
    let m = member
        .clone()
        .create_member(req(mpb::CreateMemberRequest {
            request_id: rid(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    Uuid::parse_str(&m.member_id).unwrap()
}

struct Scratch {
    schema: String,
    db: PgPool,
}

impl Scratch {
    fn new() -> Self {
        let schema = support::fresh_schema("points");
        let db = laurel_runtime::db::pool(&support::database_url(), &schema, 4).unwrap();
        Self { schema, db }
    }

    async fn consistent(&self) {
        let (all, members): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(sum(points), 0)::bigint, COALESCE(sum(points) FILTER (WHERE account = 1), 0)::bigint FROM entries",
        )
        .fetch_one(&self.db)
        .await
        .unwrap();
        assert_eq!(all, 0, "the ledger sums to zero");
        let cached: i64 =
            sqlx::query_scalar("SELECT COALESCE(sum(balance), 0)::bigint FROM accounts")
                .fetch_one(&self.db)
                .await
                .unwrap();
        assert_eq!(cached, members, "account balances equal their entries");
        let off: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM accounts a LEFT JOIN (SELECT member_id, sum(points) s FROM entries WHERE account = 1 GROUP BY member_id) e USING (member_id)
             WHERE a.balance <> COALESCE(e.s, 0)",
        )
        .fetch_one(&self.db)
        .await
        .unwrap();
        assert_eq!(off, 0, "every account equals its own entries");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        support::drop_schema(&self.schema);
    }
}

fn goodwill(member: Uuid, points: i64, request_id: String) -> pb::EarnRequest {
    pb::EarnRequest {
        request_id,
        member_id: member.to_string(),
        kind: pb::EarnKind::Goodwill as i32,
        points,
        reason: "load".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn two_processes_redeeming_and_holding_on_one_account_never_overspend() {
    let prefix = support::fresh_prefix();
    let (_member_running, member) = start_member(&prefix).await;
    let scratch = Scratch::new();
    let a = start_points(&scratch.schema, &prefix, _member_running.addr).await;
    let b = start_points(&scratch.schema, &prefix, _member_running.addr).await;
    let m = enrol(&member).await;
    a.client
        .clone()
        .earn(req(goodwill(m, 1_000, rid())))
        .await
        .unwrap();
    let mut calls = Vec::new();
    for i in 0..300 {
        let client = if i % 2 == 0 {
            a.client.clone()
        } else {
            b.client.clone()
        };
        calls.push(tokio::spawn(async move {
            let mut client = client;
            if i % 3 == 0 {
                client
                    .hold(req(pb::HoldRequest {
                        request_id: rid(),
                        member_id: m.to_string(),
                        points: 7,
                        timeout: Some(prost_types::Duration {
                            seconds: 600,
                            nanos: 0,
                        }),
                        reference: String::new(),
                    }))
                    .await
                    .map(|_| 7)
            } else {
                client
                    .redeem(req(pb::RedeemRequest {
                        request_id: rid(),
                        member_id: m.to_string(),
                        target: Some(pb::redeem_request::Target::Order(pb::OrderDiscount {
                            order_id: format!("o-{i}"),
                            order_total: Some(Money {
                                currency_code: "EUR".into(),
                                amount_minor: 100_000,
                            }),
                        })),
                        points: 5,
                        reason: String::new(),
                    }))
                    .await
                    .map(|_| 5)
            }
        }));
    }
    let mut spent = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(p) => spent += p,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the load asks for more than the account holds");
    assert!(spent <= 1_000, "never more than the balance: {spent}");
    assert!(spent > 1_000 - 7, "everything spendable was spent: {spent}");
    let balance = a
        .client
        .clone()
        .get_balance(req(pb::GetBalanceRequest {
            member_id: m.to_string(),
        }))
        .await
        .unwrap()
        .into_inner()
        .balance
        .unwrap();
    assert_eq!(balance.available, 1_000 - spent);
    assert!(balance.available >= 0);
    scratch.consistent().await;
}

#[tokio::test]
async fn a_process_killed_under_load_loses_and_doubles_nothing() {
    let prefix = support::fresh_prefix();
    let (member_running, member) = start_member(&prefix).await;
    let scratch = Scratch::new();
    let mut first = start_points(&scratch.schema, &prefix, member_running.addr).await;
    let members: Vec<Uuid> = futures::future::join_all((0..10).map(|_| enrol(&member))).await;
    // 400 earns on 10 members, and 40 purchases through the member service.
    let requests: Vec<pb::EarnRequest> = (0..400)
        .map(|i| goodwill(members[i % 10], 1 + (i as i64 % 9), rid()))
        .collect();
    // Rules for purchases (1 point per euro), in force before the first
    // purchase event can arrive.
    first
        .client
        .clone()
        .publish_earn_rules(req(pb::PublishEarnRulesRequest {
            request_id: rid(),
            rules: Some(pb::EarnRules {
                effective_from: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
                base_points: 1,
                base_amount_minor: 100,
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    let client = first.client.clone();
    let load = {
        let requests = requests.clone();
        tokio::spawn(async move {
            let calls = requests.into_iter().map(|r| {
                let mut client = client.clone();
                async move { client.earn(req(r)).await.is_ok() }
            });
            futures::future::join_all(calls).await
        })
    };
    let purchases = {
        let member = member.clone();
        let members = members.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                member
                    .clone()
                    .record_activity(req(mpb::RecordActivityRequest {
                        member: Some(mpb::record_activity_request::Member::MemberId(
                            members[i % 10].to_string(),
                        )),
                        auto_enroll: false,
                        guest: false,
                        activity: Some(mpb::Activity {
                            source: "web".into(),
                            external_id: format!("k-{i}"),
                            detail: Some(mpb::activity::Detail::Purchase(mpb::Purchase {
                                order_id: format!("K-{i}"),
                                total: Some(Money {
                                    currency_code: "EUR".into(),
                                    amount_minor: 1_000,
                                }),
                                ..Default::default()
                            })),
                            ..Default::default()
                        }),
                    }))
                    .await
                    .expect("purchase recorded");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    let acknowledged = load.await.unwrap();
    purchases.await.unwrap();
    let acked = acknowledged.iter().filter(|ok| **ok).count();
    // Restart and retry every request: acknowledged ones replay, the rest apply once.
    let second = start_points(&scratch.schema, &prefix, member_running.addr).await;
    for r in &requests {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match second.client.clone().earn(req(r.clone())).await {
                Ok(_) => break,
                Err(e) if attempt < 20 => {
                    tracing::warn!(?e, "retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("earn never succeeded: {e:?}"),
            }
        }
    }
    let mut expected: HashMap<Uuid, i64> = HashMap::new();
    for r in &requests {
        *expected
            .entry(Uuid::parse_str(&r.member_id).unwrap())
            .or_default() += r.points;
    }
    // Each of the 40 purchases earns 10 points, exactly once.
    for i in 0..40 {
        *expected.entry(members[i % 10]).or_default() += 10;
    }
    eventually(Duration::from_secs(30), "every purchase earned", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM order_earns")
            .fetch_one(&scratch.db)
            .await
            .unwrap();
        (n == 40).then_some(())
    })
    .await;
    let earns: i64 =
        sqlx::query_scalar("SELECT count(*) FROM movements WHERE type = 1 AND earn_kind = 7")
            .fetch_one(&scratch.db)
            .await
            .unwrap();
    assert_eq!(
        earns, 400,
        "every request applied exactly once ({acked} acknowledged before the kill)"
    );
    for (m, want) in expected {
        let got: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE member_id = $1")
            .bind(m)
            .fetch_one(&scratch.db)
            .await
            .unwrap();
        assert_eq!(got, want, "member {m}");
    }
    scratch.consistent().await;
    drop(second);
}
