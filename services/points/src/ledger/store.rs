//! Loading a batch's part of the ledger from Postgres (locking its
//! accounts) and writing back what the batch changed, in a fixed number of
//! statements whatever the batch size.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use laurel_proto::points::v1 as pb;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{
    book::{Account, Book, Daily, DailyKey, Hold, HoldStatus, OrderEarn, Redemption, Status},
    lots::Lot,
};

/// What a batch needs loaded.
#[derive(Debug, Default)]
pub struct Needs {
    /// Accounts, with the spendable points the batch may take from each
    /// (enough lots are loaded to cover it) and whether every open lot is
    /// needed (merges and erasures).
    pub accounts: HashMap<(String, Uuid), (i64, bool)>,
    /// Accounts that may be created (credits to verified members).
    pub create: HashSet<(String, Uuid)>,
    /// Holds.
    pub holds: HashSet<Uuid>,
    /// Orders.
    pub orders: HashSet<(String, String)>,
    /// Spending movements to reverse.
    pub redemptions: HashSet<Uuid>,
    /// Daily counters.
    pub daily: HashSet<DailyKey>,
}

impl Needs {
    /// Needs `member`'s account, and `spend` spendable points from it.
    pub fn account(&mut self, program: &str, member: Uuid, spend: i64, everything: bool) {
        let e = self
            .accounts
            .entry((program.to_owned(), member))
            .or_insert((0, false));
        e.0 = e.0.saturating_add(spend.max(0));
        e.1 |= everything;
    }
}

/// Loads and locks everything `needs` names into a new book at `now`.
pub async fn load(
    tx: &mut PgConnection,
    mut needs: Needs,
    now: DateTime<Utc>,
) -> Result<Book, sqlx::Error> {
    let mut book = Book::new(now);
    // Who the holds, orders and redemptions belong to (read again below,
    // under the accounts' locks).
    for (program, member, everything) in owners(tx, &needs).await? {
        needs.account(&program, member, 0, everything);
    }
    create_accounts(tx, &needs.create).await?;
    let mut wanted: Vec<(String, Uuid)> = needs.accounts.keys().cloned().collect();
    // Merged accounts bring their survivors (locked in a second round).
    for _ in 0..4 {
        let found = lock_accounts(tx, &wanted).await?;
        wanted.clear();
        for account in found {
            if let (Status::Merged, Some(to)) = (account.status, account.merged_into) {
                let key = (account.program.clone(), to);
                if !book.accounts.contains_key(&key) && !needs.accounts.contains_key(&key) {
                    let spend = needs.accounts[&(account.program.clone(), account.member_id)].0;
                    needs.account(&key.0, to, spend, false);
                    wanted.push(key);
                }
            }
            book.accounts
                .insert((account.program.clone(), account.member_id), account);
        }
        if wanted.is_empty() {
            break;
        }
    }
    // Merges and erasures move or return every open hold of the account.
    let whole: Vec<(String, Uuid)> = needs
        .accounts
        .iter()
        .filter(|(_, (_, all))| *all)
        .map(|(k, _)| k.clone())
        .collect();
    if !whole.is_empty() {
        let open: Vec<Uuid> = sqlx::query_scalar(
            "SELECT h.hold_id FROM holds h JOIN unnest($1::text[], $2::uuid[]) AS b(p, m)
               ON h.program_id = b.p AND h.member_id = b.m WHERE h.status = 1",
        )
        .bind(whole.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
        .bind(whole.iter().map(|k| k.1).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        needs.holds.extend(open);
    }
    load_holds(tx, &mut book, &needs.holds).await?;
    load_orders(tx, &mut book, &needs.orders).await?;
    load_redemptions(tx, &mut book, &needs.redemptions).await?;
    let mut lot_ids: Vec<Uuid> = Vec::new();
    for hold in book.holds.values() {
        lot_ids.extend(hold.lots.iter().map(|(l, _)| *l));
    }
    lot_ids.extend(book.orders.values().filter_map(|o| o.lot_id));
    for r in book.redemptions.values() {
        lot_ids.extend(r.uses.iter().map(|(l, _)| *l));
    }
    load_lots(tx, &mut book, &needs, &lot_ids).await?;
    load_daily(tx, &mut book, &needs.daily).await?;
    Ok(book)
}

/// The accounts of the holds, orders and redemptions named, and whether
/// every open lot of each is needed (a refund's clawback may reach beyond
/// the order's own lot).
async fn owners(
    tx: &mut PgConnection,
    needs: &Needs,
) -> Result<Vec<(String, Uuid, bool)>, sqlx::Error> {
    let mut owners = Vec::new();
    if !needs.holds.is_empty() {
        let ids: Vec<Uuid> = needs.holds.iter().copied().collect();
        owners.extend(
            sqlx::query_as::<_, (String, Uuid, bool)>(
                "SELECT program_id, member_id, false FROM holds WHERE hold_id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    if !needs.orders.is_empty() {
        let (programs, orders): (Vec<String>, Vec<String>) = needs.orders.iter().cloned().unzip();
        owners.extend(
            sqlx::query_as::<_, (String, Uuid, bool)>(
                "SELECT o.program_id, o.member_id, true FROM order_earns o
                 JOIN unnest($1::text[], $2::text[]) AS b(p, id) ON o.program_id = b.p AND o.order_id = b.id",
            )
            .bind(&programs)
            .bind(&orders)
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    if !needs.redemptions.is_empty() {
        let ids: Vec<Uuid> = needs.redemptions.iter().copied().collect();
        owners.extend(
            sqlx::query_as::<_, (String, Uuid, bool)>(
                "SELECT m.program_id, l.member_id, false FROM movements m
                 JOIN lot_uses u ON u.movement_id = m.movement_id JOIN lots l ON l.lot_id = u.lot_id
                 WHERE m.movement_id = ANY($1)
                 UNION SELECT program_id, member_id, false FROM movements WHERE movement_id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    Ok(owners)
}

async fn create_accounts(
    tx: &mut PgConnection,
    create: &HashSet<(String, Uuid)>,
) -> Result<(), sqlx::Error> {
    if create.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<&(String, Uuid)> = create.iter().collect();
    keys.sort();
    sqlx::query(
        "INSERT INTO accounts (program_id, member_id, created_at, updated_at)
         SELECT p, m, now(), now() FROM unnest($1::text[], $2::uuid[]) AS b(p, m)
         ORDER BY p, m
         ON CONFLICT DO NOTHING",
    )
    .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}

async fn lock_accounts(
    tx: &mut PgConnection,
    keys: &[(String, Uuid)],
) -> Result<Vec<Account>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT a.program_id, a.member_id, status, merged_into, balance, lots_total, held, debt, lifetime_earned, version
         FROM accounts a JOIN unnest($1::text[], $2::uuid[]) AS b(p, m) ON a.program_id = b.p AND a.member_id = b.m
         ORDER BY a.program_id, a.member_id
         FOR UPDATE OF a",
    )
    .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Account {
            program: r.get(0),
            member_id: r.get(1),
            status: Status::from_code(r.get(2)),
            merged_into: r.get(3),
            balance: r.get(4),
            lots_total: r.get(5),
            held: r.get(6),
            debt: r.get(7),
            lifetime_earned: r.get(8),
            version: r.get(9),
            lots: Vec::new(),
            changed: false,
        })
        .collect())
}

async fn load_holds(
    tx: &mut PgConnection,
    book: &mut Book,
    ids: &HashSet<Uuid>,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ids.iter().copied().collect();
    let rows = sqlx::query(
        "SELECT program_id, hold_id, member_id, points, captured, status, expires_at, reference, created_at, resolved_at, movement_id
         FROM holds WHERE hold_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    for r in rows {
        let hold = Hold {
            program: r.get(0),
            hold_id: r.get(1),
            member_id: r.get(2),
            points: r.get(3),
            captured: r.get(4),
            status: HoldStatus::from_code(r.get(5)),
            expires_at: r.get(6),
            reference: r.get(7),
            created_at: r.get(8),
            resolved_at: r.get(9),
            movement_id: r.get(10),
            lots: Vec::new(),
            new: false,
            changed: false,
        };
        book.holds.insert(hold.hold_id, hold);
    }
    let lots: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
        "SELECT h.hold_id, h.lot_id, h.points FROM hold_lots h JOIN lots l USING (lot_id)
         WHERE h.hold_id = ANY($1)
         ORDER BY h.hold_id, l.expires_at NULLS LAST, l.earned_at, l.lot_id",
    )
    .bind(&ids)
    .fetch_all(tx)
    .await?;
    for (hold, lot, points) in lots {
        if let Some(h) = book.holds.get_mut(&hold) {
            h.lots.push((lot, points));
        }
    }
    Ok(())
}

async fn load_orders(
    tx: &mut PgConnection,
    book: &mut Book,
    keys: &HashSet<(String, String)>,
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let (programs, orders): (Vec<String>, Vec<String>) = keys.iter().cloned().unzip();
    let rows = sqlx::query(
        "SELECT o.program_id, o.order_id, member_id, movement_id, lot_id, points, total_minor, currency, refunded_minor, reversed
         FROM order_earns o JOIN unnest($1::text[], $2::text[]) AS b(p, id) ON o.program_id = b.p AND o.order_id = b.id",
    )
    .bind(&programs)
    .bind(&orders)
    .fetch_all(tx)
    .await?;
    for r in rows {
        let o = OrderEarn {
            program: r.get(0),
            order_id: r.get(1),
            member_id: r.get(2),
            movement_id: r.get(3),
            lot_id: r.get(4),
            points: r.get(5),
            total_minor: r.get(6),
            currency: r.get(7),
            refunded_minor: r.get(8),
            reversed: r.get(9),
            changed: false,
        };
        book.orders
            .insert((o.program.clone(), o.order_id.clone()), o);
    }
    Ok(())
}

async fn load_redemptions(
    tx: &mut PgConnection,
    book: &mut Book,
    ids: &HashSet<Uuid>,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ids.iter().copied().collect();
    let rows = sqlx::query(
        "SELECT m.program_id, m.movement_id, m.member_id, m.type, m.points,
                EXISTS (SELECT 1 FROM movements r WHERE r.related_movement_id = m.movement_id AND r.type = 5)
         FROM movements m WHERE m.movement_id = ANY($1) AND m.type IN (2, 3)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    for r in rows {
        let points: i64 = r.get(4);
        let red = Redemption {
            program: r.get(0),
            movement_id: r.get(1),
            member_id: r.get(2),
            points: -points,
            uses: Vec::new(),
            reversed: r.get(5),
        };
        book.redemptions.insert(red.movement_id, red);
    }
    let uses: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
        "SELECT movement_id, lot_id, points FROM lot_uses WHERE movement_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(tx)
    .await?;
    for (movement, lot, points) in uses {
        if let Some(r) = book.redemptions.get_mut(&movement) {
            r.uses.push((lot, points));
        }
    }
    Ok(())
}

/// Columns of a lot, in [`lot_from_row`]'s order.
const LOT_COLUMNS: &str = "l.program_id, l.lot_id, l.member_id, l.movement_id, l.points, l.remaining, l.earned_at, l.available_from, l.expires_at";

fn lot_from_row(r: &sqlx::postgres::PgRow) -> (String, Lot) {
    (
        r.get(0),
        Lot {
            lot_id: r.get(1),
            member_id: r.get(2),
            movement_id: r.get(3),
            points: r.get(4),
            remaining: r.get(5),
            earned_at: r.get(6),
            available_from: r.get(7),
            expires_at: r.get(8),
        },
    )
}

/// Spendable lots fetched per account and round, in spending order.
const SPEND_PAGE: i64 = 32;

/// Loads, per account: every pending and due lot, every open lot when
/// needed, spendable lots in spending order until they cover the batch's
/// spend, and the lots named. Each query walks an index range, so an
/// account with thousands of open lots costs no more than one with a few.
async fn load_lots(
    tx: &mut PgConnection,
    book: &mut Book,
    needs: &Needs,
    named: &[Uuid],
) -> Result<(), sqlx::Error> {
    let keys: Vec<(String, Uuid)> = book.accounts.keys().cloned().collect();
    if keys.is_empty() {
        return Ok(());
    }
    let programs: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    let members: Vec<Uuid> = keys.iter().map(|k| k.1).collect();
    let whole: Vec<bool> = keys
        .iter()
        .map(|k| needs.accounts.get(k).is_some_and(|n| n.1))
        .collect();
    let mut rows = sqlx::query(&format!(
        "WITH b AS (SELECT * FROM unnest($1::text[], $2::uuid[], $3::bool[]) AS b(p, m, whole))
         SELECT {LOT_COLUMNS} FROM lots l JOIN b ON l.program_id = b.p AND l.member_id = b.m
           WHERE l.remaining > 0 AND (b.whole OR l.available_from > $4)
         UNION
         SELECT {LOT_COLUMNS} FROM lots l JOIN b ON l.program_id = b.p AND l.member_id = b.m
           WHERE l.remaining > 0 AND l.expires_at <= $4
         UNION
         SELECT {LOT_COLUMNS} FROM lots l WHERE l.lot_id = ANY($5)"
    ))
    .bind(&programs)
    .bind(&members)
    .bind(&whole)
    .bind(book.now)
    .bind(named)
    .fetch_all(&mut *tx)
    .await?;
    // Spendable lots, a page per account at a time, until the spend is covered.
    let mut wanted: Vec<((String, Uuid), i64)> = keys
        .iter()
        .zip(&whole)
        .filter(|(_, whole)| !**whole)
        .filter_map(|(k, _)| needs.accounts.get(k).map(|n| (k.clone(), n.0)))
        .filter(|(_, spend)| *spend > 0)
        .collect();
    let mut offset = 0;
    while !wanted.is_empty() {
        let page = sqlx::query(&format!(
            "SELECT x.* FROM unnest($1::text[], $2::uuid[]) AS b(p, m),
             LATERAL (SELECT {LOT_COLUMNS} FROM lots l
                      WHERE l.program_id = b.p AND l.member_id = b.m AND l.remaining > 0
                        AND l.available_from <= $3 AND (l.expires_at IS NULL OR l.expires_at > $3)
                      ORDER BY l.expires_at NULLS LAST, l.earned_at, l.lot_id
                      OFFSET $4 LIMIT $5) x"
        ))
        .bind(wanted.iter().map(|w| w.0.0.clone()).collect::<Vec<_>>())
        .bind(wanted.iter().map(|w| w.0.1).collect::<Vec<_>>())
        .bind(book.now)
        .bind(offset)
        .bind(SPEND_PAGE)
        .fetch_all(&mut *tx)
        .await?;
        let mut got: HashMap<(String, Uuid), (i64, i64)> = HashMap::new();
        for r in &page {
            let (program, lot) = lot_from_row(r);
            let e = got.entry((program, lot.member_id)).or_default();
            e.0 += 1;
            e.1 += lot.remaining;
        }
        rows.extend(page);
        // Still short, with a full page: the next page.
        wanted = wanted
            .into_iter()
            .filter_map(|(k, spend)| {
                let (n, points) = got.get(&k).copied().unwrap_or_default();
                (n == SPEND_PAGE && points < spend).then(|| (k, spend - points))
            })
            .collect();
        offset += SPEND_PAGE;
    }
    let mut seen = HashSet::new();
    for r in &rows {
        let (program, lot) = lot_from_row(r);
        if seen.insert(lot.lot_id) {
            book.account_mut(&program, lot.member_id).lots.push(lot);
        }
    }
    Ok(())
}

async fn load_daily(
    tx: &mut PgConnection,
    book: &mut Book,
    keys: &HashSet<DailyKey>,
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys: Vec<&DailyKey> = keys.iter().collect();
    let rows: Vec<(String, Uuid, NaiveDate, i16, i64, i32)> = sqlx::query_as(
        "SELECT d.program_id, d.member_id, d.day, d.earn_kind, d.points, d.events
         FROM daily_earnings d
         JOIN unnest($1::text[], $2::uuid[], $3::date[], $4::smallint[]) AS b(p, m, d, k)
           ON d.program_id = b.p AND d.member_id = b.m AND d.day = b.d AND d.earn_kind = b.k",
    )
    .bind(keys.iter().map(|k| k.program.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.member_id).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.day).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.kind as i16).collect::<Vec<_>>())
    .fetch_all(tx)
    .await?;
    for (program, member_id, day, kind, points, events) in rows {
        book.daily.insert(
            DailyKey {
                program,
                member_id,
                day,
                kind: i32::from(kind),
            },
            Daily {
                points,
                events,
                changed: false,
            },
        );
    }
    Ok(())
}

/// Lot state as loaded, to write back only what changed.
pub type LoadedLots = HashMap<Uuid, (Uuid, i64)>;

/// Remembers each loaded lot's member and remaining points.
pub fn snapshot_lots(book: &Book) -> LoadedLots {
    book.accounts
        .values()
        .flat_map(|a| a.lots.iter())
        .map(|l| (l.lot_id, (l.member_id, l.remaining)))
        .collect()
}

/// Writes back everything the book changed.
pub async fn save(
    tx: &mut PgConnection,
    book: &Book,
    loaded: &LoadedLots,
) -> Result<(), sqlx::Error> {
    save_accounts(tx, book).await?;
    save_movements(tx, book).await?;
    save_lots(tx, book, loaded).await?;
    save_holds(tx, book).await?;
    save_orders(tx, book).await?;
    save_daily(tx, book).await?;
    Ok(())
}

async fn save_accounts(tx: &mut PgConnection, book: &Book) -> Result<(), sqlx::Error> {
    let mut changed: Vec<&Account> = book.accounts.values().filter(|a| a.changed).collect();
    if changed.is_empty() {
        return Ok(());
    }
    changed.sort_by(|a, b| (&a.program, a.member_id).cmp(&(&b.program, b.member_id)));
    sqlx::query(
        "INSERT INTO accounts AS a (program_id, member_id, status, merged_into, balance, lots_total, held, debt, lifetime_earned, version, created_at, updated_at)
         SELECT p, m, s, mi, b, l, h, d, le, v, $11, $11
         FROM unnest($1::text[], $2::uuid[], $3::smallint[], $4::uuid[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
              AS x(p, m, s, mi, b, l, h, d, le, v)
         ON CONFLICT (program_id, member_id) DO UPDATE SET
           status = EXCLUDED.status, merged_into = EXCLUDED.merged_into, balance = EXCLUDED.balance,
           lots_total = EXCLUDED.lots_total, held = EXCLUDED.held, debt = EXCLUDED.debt,
           lifetime_earned = EXCLUDED.lifetime_earned, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
    )
    .bind(changed.iter().map(|a| a.program.clone()).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.member_id).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.status as i16).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.merged_into).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.balance).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.lots_total).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.held).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.debt).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.lifetime_earned).collect::<Vec<_>>())
    .bind(changed.iter().map(|a| a.version).collect::<Vec<_>>())
    .bind(book.now)
    .execute(tx)
    .await?;
    Ok(())
}

fn ts(t: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    t.as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .unwrap_or_default()
}

fn uuid_or_none(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

async fn save_movements(tx: &mut PgConnection, book: &Book) -> Result<(), sqlx::Error> {
    if book.recorded.is_empty() {
        return Ok(());
    }
    let ms: Vec<&pb::Movement> = book.recorded.iter().map(|r| &r.movement).collect();
    sqlx::query(
        "INSERT INTO movements (program_id, movement_id, member_id, type, points, earn_kind, reason, reference, order_id,
                                related_movement_id, counterparty, occurred_at, recorded_at)
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::smallint[], $5::bigint[], $6::smallint[], $7::text[],
                              $8::text[], $9::text[], $10::uuid[], $11::uuid[], $12::timestamptz[], $13::timestamptz[])",
    )
    .bind(book.recorded.iter().map(|r| r.program.clone()).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| uuid_or_none(&m.movement_id)).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| uuid_or_none(&m.member_id)).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| m.r#type as i16).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| m.points).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| m.earn_kind as i16).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| m.reason.clone()).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| m.reference.clone()).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| m.order_id.clone()).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| uuid_or_none(&m.related_movement_id)).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| uuid_or_none(&m.counterparty_member_id)).collect::<Vec<_>>())
    .bind(book.recorded.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
    .bind(ms.iter().map(|m| ts(&m.recorded_at)).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let e = &book.entries;
    sqlx::query(
        "INSERT INTO entries (movement_id, line, program_id, account, member_id, points, balance_after, type, recorded_at)
         SELECT m, l, p, a, mb, pt, ba, t, $9 FROM unnest($1::uuid[], $2::smallint[], $3::text[], $4::smallint[], $5::uuid[],
                              $6::bigint[], $7::bigint[], $8::smallint[]) AS x(m, l, p, a, mb, pt, ba, t)",
    )
    .bind(e.iter().map(|x| x.movement_id).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.line).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.program.clone()).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.account as i16).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.member_id).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.points).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.balance_after).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.kind as i16).collect::<Vec<_>>())
    .bind(book.now)
    .execute(tx)
    .await?;
    Ok(())
}

async fn save_lots(
    tx: &mut PgConnection,
    book: &Book,
    loaded: &LoadedLots,
) -> Result<(), sqlx::Error> {
    let new: HashSet<Uuid> = book.new_lots.iter().map(|(_, l)| l.lot_id).collect();
    let fresh: Vec<(&String, &Lot)> = book
        .accounts
        .values()
        .flat_map(|a| a.lots.iter().map(move |l| (&a.program, l)))
        .filter(|(_, l)| new.contains(&l.lot_id))
        .collect();
    if !fresh.is_empty() {
        sqlx::query(
            "INSERT INTO lots (program_id, lot_id, member_id, movement_id, points, remaining, earned_at, available_from, expires_at)
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::bigint[],
                                  $7::timestamptz[], $8::timestamptz[], $9::timestamptz[])",
        )
        .bind(fresh.iter().map(|(p, _)| (*p).clone()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(_, l)| l.lot_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(_, l)| l.member_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(_, l)| l.movement_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(_, l)| l.points).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(_, l)| l.remaining).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(_, l)| l.earned_at).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(_, l)| l.available_from).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(_, l)| l.expires_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    let changed: Vec<&Lot> = book
        .accounts
        .values()
        .flat_map(|a| a.lots.iter())
        .filter(|l| !new.contains(&l.lot_id))
        .filter(|l| loaded.get(&l.lot_id) != Some(&(l.member_id, l.remaining)))
        .collect();
    if !changed.is_empty() {
        sqlx::query(
            "UPDATE lots SET remaining = x.r, member_id = x.m
             FROM unnest($1::uuid[], $2::bigint[], $3::uuid[]) AS x(id, r, m) WHERE lots.lot_id = x.id",
        )
        .bind(changed.iter().map(|l| l.lot_id).collect::<Vec<_>>())
        .bind(changed.iter().map(|l| l.remaining).collect::<Vec<_>>())
        .bind(changed.iter().map(|l| l.member_id).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !book.lot_uses.is_empty() {
        // One row per (movement, lot): a movement may touch a lot twice.
        let mut uses: HashMap<(Uuid, Uuid), i64> = HashMap::new();
        for (m, l, n) in &book.lot_uses {
            *uses.entry((*m, *l)).or_default() += n;
        }
        sqlx::query(
            "INSERT INTO lot_uses (movement_id, lot_id, points) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[])",
        )
        .bind(uses.keys().map(|k| k.0).collect::<Vec<_>>())
        .bind(uses.keys().map(|k| k.1).collect::<Vec<_>>())
        .bind(uses.values().copied().collect::<Vec<_>>())
        .execute(tx)
        .await?;
    }
    Ok(())
}

async fn save_holds(tx: &mut PgConnection, book: &Book) -> Result<(), sqlx::Error> {
    let changed: Vec<&Hold> = book.holds.values().filter(|h| h.changed).collect();
    if changed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO holds AS h (program_id, hold_id, member_id, points, captured, status, expires_at, reference, created_at, resolved_at, movement_id)
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::bigint[], $5::bigint[], $6::smallint[], $7::timestamptz[],
                              $8::text[], $9::timestamptz[], $10::timestamptz[], $11::uuid[])
         ON CONFLICT (hold_id) DO UPDATE SET member_id = EXCLUDED.member_id, captured = EXCLUDED.captured,
           status = EXCLUDED.status, resolved_at = EXCLUDED.resolved_at, movement_id = EXCLUDED.movement_id",
    )
    .bind(changed.iter().map(|h| h.program.clone()).collect::<Vec<_>>())
    .bind(changed.iter().map(|h| h.hold_id).collect::<Vec<_>>())
    .bind(changed.iter().map(|h| h.member_id).collect::<Vec<_>>())
    .bind(changed.iter().map(|h| h.points).collect::<Vec<_>>())
    .bind(changed.iter().map(|h| h.captured).collect::<Vec<_>>())
    .bind(changed.iter().map(|h| h.status as i16).collect::<Vec<_>>())
    .bind(changed.iter().map(|h| h.expires_at).collect::<Vec<_>>())
    .bind(changed.iter().map(|h| h.reference.clone()).collect::<Vec<_>>())
    .bind(changed.iter().map(|h| h.created_at).collect::<Vec<_>>())
    .bind(changed.iter().map(|h| h.resolved_at).collect::<Vec<_>>())
    .bind(changed.iter().map(|h| h.movement_id).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let new_lots: Vec<(Uuid, Uuid, i64)> = changed
        .iter()
        .filter(|h| h.new)
        .flat_map(|h| h.lots.iter().map(move |(l, n)| (h.hold_id, *l, *n)))
        .collect();
    if !new_lots.is_empty() {
        sqlx::query("INSERT INTO hold_lots (hold_id, lot_id, points) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[])")
            .bind(new_lots.iter().map(|x| x.0).collect::<Vec<_>>())
            .bind(new_lots.iter().map(|x| x.1).collect::<Vec<_>>())
            .bind(new_lots.iter().map(|x| x.2).collect::<Vec<_>>())
            .execute(tx)
            .await?;
    }
    Ok(())
}

async fn save_orders(tx: &mut PgConnection, book: &Book) -> Result<(), sqlx::Error> {
    let changed: Vec<&OrderEarn> = book.orders.values().filter(|o| o.changed).collect();
    if changed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO order_earns (program_id, order_id, member_id, movement_id, lot_id, points, total_minor, currency, refunded_minor, reversed)
         SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[])
         ON CONFLICT (program_id, order_id) DO UPDATE SET member_id = EXCLUDED.member_id,
           refunded_minor = EXCLUDED.refunded_minor, reversed = EXCLUDED.reversed",
    )
    .bind(changed.iter().map(|o| o.program.clone()).collect::<Vec<_>>())
    .bind(changed.iter().map(|o| o.order_id.clone()).collect::<Vec<_>>())
    .bind(changed.iter().map(|o| o.member_id).collect::<Vec<_>>())
    .bind(changed.iter().map(|o| o.movement_id).collect::<Vec<_>>())
    .bind(changed.iter().map(|o| o.lot_id).collect::<Vec<_>>())
    .bind(changed.iter().map(|o| o.points).collect::<Vec<_>>())
    .bind(changed.iter().map(|o| o.total_minor).collect::<Vec<_>>())
    .bind(changed.iter().map(|o| o.currency.clone()).collect::<Vec<_>>())
    .bind(changed.iter().map(|o| o.refunded_minor).collect::<Vec<_>>())
    .bind(changed.iter().map(|o| o.reversed).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}

async fn save_daily(tx: &mut PgConnection, book: &Book) -> Result<(), sqlx::Error> {
    let changed: Vec<(&DailyKey, &Daily)> = book.daily.iter().filter(|(_, d)| d.changed).collect();
    if changed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO daily_earnings (program_id, member_id, day, earn_kind, points, events)
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::date[], $4::smallint[], $5::bigint[], $6::int[])
         ON CONFLICT (program_id, member_id, day, earn_kind) DO UPDATE SET points = EXCLUDED.points, events = EXCLUDED.events",
    )
    .bind(changed.iter().map(|(k, _)| k.program.clone()).collect::<Vec<_>>())
    .bind(changed.iter().map(|(k, _)| k.member_id).collect::<Vec<_>>())
    .bind(changed.iter().map(|(k, _)| k.day).collect::<Vec<_>>())
    .bind(changed.iter().map(|(k, _)| k.kind as i16).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, d)| d.points).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, d)| d.events).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}
