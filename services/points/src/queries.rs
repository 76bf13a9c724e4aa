//! Reads: the balance (from the member card when it is current), the
//! statement, and the liability report.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use laurel_proto::points::v1 as pb;
use laurel_runtime::{context::ProgramId, pagination};
use prost::Message;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{Points, clock_now, error::PointsError, ledger::book::timestamp};

fn ts(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32))
}

fn current(balance: &pb::Balance, now: DateTime<Utc>) -> bool {
    ts(&balance.valid_until).is_none_or(|until| now < until)
}

/// The balance of one account as Postgres has it, following merges; the
/// account's card version; `None` for a member who never had an account.
pub async fn load_balance(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<(pb::Balance, i64)>, sqlx::Error> {
    let mut id = member;
    let mut row = None;
    for _ in 0..8 {
        let r = sqlx::query("SELECT status, merged_into, held, debt, lifetime_earned, version FROM accounts WHERE program_id = $1 AND member_id = $2")
            .bind(program)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        match r {
            Some(r) if r.get::<i16, _>(0) == 2 && r.get::<Option<Uuid>, _>(1).is_some() => {
                id = r.get(1)
            }
            other => {
                row = other;
                break;
            }
        }
    }
    let Some(row) = row else { return Ok(None) };
    let (held, debt, lifetime, version): (i64, i64, i64, i64) =
        (row.get(2), row.get(3), row.get(4), row.get(5));
    let lots = sqlx::query(
        "SELECT COALESCE(sum(remaining) FILTER (WHERE available_from <= $3), 0)::bigint,
                COALESCE(sum(remaining) FILTER (WHERE available_from > $3), 0)::bigint,
                min(available_from) FILTER (WHERE available_from > $3),
                min(expires_at)
         FROM lots WHERE program_id = $1 AND member_id = $2 AND remaining > 0
           AND (expires_at IS NULL OR expires_at > $3)",
    )
    .bind(program)
    .bind(id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let (available, pending): (i64, i64) = (lots.get(0), lots.get(1));
    let next_available: Option<DateTime<Utc>> = lots.get(2);
    let next_expiry: Option<DateTime<Utc>> = lots.get(3);
    let expiring: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT expires_at, sum(remaining)::bigint FROM lots
         WHERE program_id = $1 AND member_id = $2 AND remaining > 0 AND expires_at > $3
         GROUP BY expires_at ORDER BY expires_at LIMIT 5",
    )
    .bind(program)
    .bind(id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let valid_until = [next_available, next_expiry].into_iter().flatten().min();
    let available = available - debt;
    Ok(Some((
        pb::Balance {
            member_id: id.to_string(),
            available,
            pending,
            held,
            total: available + pending + held,
            expiring: expiring
                .into_iter()
                .map(|(at, points)| pb::Expiring {
                    expires_at: Some(timestamp(at)),
                    points,
                })
                .collect(),
            lifetime_earned: lifetime,
            version,
            valid_until: valid_until.map(timestamp),
        },
        version,
    )))
}

async fn version_of(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM accounts WHERE program_id = $1 AND member_id = $2")
        .bind(program)
        .bind(member)
        .fetch_optional(conn)
        .await
}

impl Points {
    /// A member's balance: from this replica's copy of the card, else the
    /// card in Redis, else Postgres (then the card is filled at the version
    /// read, and that version checked again, as the member service does).
    pub async fn balance(
        &self,
        program: &ProgramId,
        member: Uuid,
    ) -> Result<pb::Balance, PointsError> {
        let now = clock_now(&self.clock);
        if let Some(b) = self.cards.local(program, &member)
            && current(&b, now)
        {
            return Ok((*b).clone());
        }
        if let Some(stored) = self.cards.shared(program, &member).await
            && let Ok(b) = pb::Balance::decode(stored.value.as_slice())
            && current(&b, now)
        {
            self.cards
                .keep(program, &member, stored.version, Arc::new(b.clone()));
            return Ok(b);
        }
        let mut conn = self.db.acquire().await?;
        let Some((balance, version)) =
            load_balance(&mut conn, program.as_str(), member, now).await?
        else {
            drop(conn);
            self.members.ensure(program.as_str(), member).await?;
            return Ok(pb::Balance {
                member_id: member.to_string(),
                ..Default::default()
            });
        };
        if balance.member_id != member.to_string() {
            // A merged member: the survivor's balance, not cached under the old id.
            return Ok(balance);
        }
        let filled = self
            .cards
            .fill(program, &member, version, &balance.encode_to_vec())
            .await;
        match version_of(&mut conn, program.as_str(), member).await? {
            Some(v) if v == version && filled => {
                self.cards
                    .keep(program, &member, version, Arc::new(balance.clone()));
            }
            Some(v) if v != version => {
                self.cards.invalidate(program, &member, v).await;
            }
            _ => {}
        }
        Ok(balance)
    }

    /// A page of a member's statement, newest first.
    pub async fn statement(
        &self,
        program: &ProgramId,
        req: &pb::ListEntriesRequest,
    ) -> Result<(Vec<pb::StatementLine>, String), PointsError> {
        let mut v = laurel_runtime::error::Violations::new();
        let member = crate::requests::member_id(&req.member_id, "member_id", &mut v);
        let (limit, after) = pagination::page(
            req.page_size,
            &req.page_token,
            |p| Uuid::parse_str(p).ok(),
            &mut v,
        );
        let mut types = Vec::new();
        for (i, t) in req.types.iter().enumerate() {
            match pb::MovementType::try_from(*t) {
                Ok(pb::MovementType::Unspecified) | Err(_) => {
                    v.add(format!("types[{i}]"), "unknown movement type")
                }
                Ok(t) => types.push(t as i16),
            }
        }
        let mut bad = laurel_runtime::error::Violations::new();
        let from = req
            .from
            .as_ref()
            .map(|t| crate::requests::time(Some(t), "from", Utc::now(), &mut bad));
        let to = req
            .to
            .as_ref()
            .map(|t| crate::requests::time(Some(t), "to", Utc::now(), &mut bad));
        if !bad.is_empty() {
            return Err(bad.into());
        }
        v.finish()?;
        let mut conn = self.db.acquire().await?;
        let rows = sqlx::query(
            "SELECT m.movement_id, m.member_id, m.type, m.points, m.earn_kind, m.reason, m.reference, m.order_id,
                    m.related_movement_id, m.counterparty, m.occurred_at, m.recorded_at, e.points, e.balance_after
             FROM entries e JOIN movements m USING (movement_id)
             WHERE e.program_id = $1 AND e.member_id = $2
               AND ($3::uuid IS NULL OR e.movement_id < $3)
               AND (cardinality($4::smallint[]) = 0 OR e.type = ANY($4))
               AND ($5::timestamptz IS NULL OR e.recorded_at >= $5)
               AND ($6::timestamptz IS NULL OR e.recorded_at < $6)
             ORDER BY e.movement_id DESC
             LIMIT $7",
        )
        .bind(program.as_str())
        .bind(member)
        .bind(after)
        .bind(&types)
        .bind(from)
        .bind(to)
        .bind(limit + 1)
        .fetch_all(&mut *conn)
        .await?;
        let more = rows.len() as i64 > limit;
        let rows = &rows[..rows.len().min(limit as usize)];
        let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        let entries: Vec<(Uuid, i16, Option<Uuid>, i64)> = sqlx::query_as(
            "SELECT movement_id, account, member_id, points FROM entries WHERE movement_id = ANY($1) ORDER BY movement_id, line",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let lines = rows
            .iter()
            .map(|r| {
                let id: Uuid = r.get(0);
                let owner: Uuid = r.get(1);
                let points: i64 = r.get(3);
                let own: i64 = r.get(12);
                let counterparty: Option<Uuid> = r.get(9);
                // The other side of a transfer sees it from its own account.
                let (shown_member, shown_points, shown_counterparty) = if owner == member {
                    (owner, points, counterparty)
                } else {
                    (member, own, Some(owner))
                };
                pb::StatementLine {
                    movement: Some(pb::Movement {
                        movement_id: id.to_string(),
                        r#type: i32::from(r.get::<i16, _>(2)),
                        member_id: shown_member.to_string(),
                        points: shown_points,
                        reason: r.get(5),
                        reference: r.get(6),
                        order_id: r.get(7),
                        occurred_at: Some(timestamp(r.get(10))),
                        recorded_at: Some(timestamp(r.get(11))),
                        entries: entries
                            .iter()
                            .filter(|e| e.0 == id)
                            .map(|e| pb::Entry {
                                account: i32::from(e.1),
                                member_id: e.2.map(|m| m.to_string()).unwrap_or_default(),
                                points: e.3,
                            })
                            .collect(),
                        related_movement_id: r
                            .get::<Option<Uuid>, _>(8)
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                        earn_kind: i32::from(r.get::<i16, _>(4)),
                        counterparty_member_id: shown_counterparty
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                    }),
                    balance_after: r.get::<Option<i64>, _>(13).unwrap_or_default(),
                }
            })
            .collect();
        let next = if more {
            pagination::encode_token(&ids.last().expect("a full page").to_string())
        } else {
            String::new()
        };
        Ok((lines, next))
    }

    /// The liability report.
    pub async fn liability(
        &self,
        program: &ProgramId,
        req: &pb::GetLiabilityRequest,
    ) -> Result<pb::GetLiabilityResponse, PointsError> {
        let mut v = laurel_runtime::error::Violations::new();
        let period = match pb::Period::try_from(req.period) {
            Ok(pb::Period::Day) => "day",
            Ok(pb::Period::Quarter) => "quarter",
            Ok(pb::Period::Year) => "year",
            Ok(_) => "month",
            Err(_) => {
                v.add("period", "unknown period");
                "month"
            }
        };
        let now = clock_now(&self.clock);
        let from = req
            .from
            .as_ref()
            .map(|t| crate::requests::time(Some(t), "from", now, &mut v));
        let to = req
            .to
            .as_ref()
            .map(|t| crate::requests::time(Some(t), "to", now, &mut v));
        v.finish()?;
        // Periods are the programme's calendar days, months, quarters and
        // years (its time zone, as IANA names Postgres knows too).
        let tz = self
            .settings
            .get(self.db.pool(), program.as_str())
            .await?
            .tz
            .name();
        let mut conn = self.db.acquire().await?;
        // Totals per system account: 1 member, 2 issued, 3 redeemed, 4 expired, 5 adjusted, 6 transferred.
        let totals: Vec<(i16, i64)> = sqlx::query_as(
            "SELECT account, COALESCE(sum(points), 0)::bigint FROM entries WHERE program_id = $1 AND ($2::timestamptz IS NULL OR recorded_at < $2) GROUP BY account",
        )
        .bind(program.as_str())
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
        let total = |a: i16| totals.iter().find(|t| t.0 == a).map(|t| t.1).unwrap_or(0);
        let ledger_sum: i64 = totals.iter().map(|t| t.1).sum();
        let issued = -total(2);
        let expired = total(4);
        let rows: Vec<(DateTime<Utc>, i16, i64)> = sqlx::query_as(&format!(
            "SELECT date_trunc('{period}', recorded_at AT TIME ZONE $3) AT TIME ZONE $3 AS start, account, sum(points)::bigint
             FROM entries WHERE program_id = $1 AND ($2::timestamptz IS NULL OR recorded_at < $2)
             GROUP BY 1, 2 ORDER BY 1"
        ))
        .bind(program.as_str())
        .bind(to)
        .bind(tz)
        .fetch_all(&mut *conn)
        .await?;
        let mut periods: Vec<pb::LiabilityPeriod> = Vec::new();
        let mut outstanding = 0i64;
        for (start, account, points) in rows {
            if periods.last().and_then(|p| ts(&p.start)) != Some(start) {
                periods.push(pb::LiabilityPeriod {
                    start: Some(timestamp(start)),
                    outstanding,
                    ..Default::default()
                });
            }
            let p = periods.last_mut().expect("pushed");
            match account {
                1 => {
                    outstanding += points;
                    p.outstanding = outstanding;
                }
                2 => p.issued -= points,
                3 => p.redeemed += points,
                4 => p.expired += points,
                5 => p.adjusted -= points,
                _ => {}
            }
        }
        if let Some(from) = from {
            let first: DateTime<Utc> = sqlx::query_scalar(&format!(
                "SELECT date_trunc('{period}', $1 AT TIME ZONE $2) AT TIME ZONE $2"
            ))
            .bind(from)
            .bind(tz)
            .fetch_one(&mut *conn)
            .await?;
            periods.retain(|p| ts(&p.start).is_some_and(|s| s >= first));
        }
        Ok(pb::GetLiabilityResponse {
            outstanding: total(1),
            issued,
            redeemed: total(3),
            expired,
            adjusted: -total(5),
            breakage_rate_bp: if issued > 0 {
                (i128::from(expired) * 10_000 / i128::from(issued)) as i64
            } else {
                0
            },
            periods,
            ledger_sum,
        })
    }
}
