//! Property tests of the ledger's book against a simple reference model:
//! lots spent soonest-expiring first, holds that capture part and return the
//! rest, reversals that put points back into the lots they came from, and
//! expiry that takes exactly what is due. After every step the entries
//! balance, the account equals its entries and its lots, and every lot holds
//! what the model says.

use chrono::{DateTime, Duration, Utc};
use laurel_points::ledger::{
    book::Book,
    ops::{Earn, PlaceHold, Spend},
};
use laurel_proto::points::v1 as pb;
use proptest::prelude::*;
use uuid::Uuid;

const P: &str = "default";

#[derive(Clone, Debug)]
enum Step {
    Earn {
        points: i64,
        valid_days: Option<i64>,
        pending_days: i64,
    },
    Spend(i64),
    Hold(i64),
    Capture {
        hold: usize,
        part: i64,
    },
    Release(usize),
    Undo(usize),
    Advance(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            1..500i64,
            prop::option::of(1..60i64),
            prop_oneof![Just(0i64), 1..5i64]
        )
            .prop_map(|(points, valid_days, pending_days)| Step::Earn {
                points,
                valid_days,
                pending_days
            }),
        (1..400i64).prop_map(Step::Spend),
        (1..300i64).prop_map(Step::Hold),
        (0..8usize, 0..300i64).prop_map(|(hold, part)| Step::Capture { hold, part }),
        (0..8usize).prop_map(Step::Release),
        (0..8usize).prop_map(Step::Undo),
        (1..20i64).prop_map(Step::Advance),
    ]
}

/// The model: lots in creation order.
#[derive(Clone, Debug)]
struct MLot {
    remaining: i64,
    expires: Option<DateTime<Utc>>,
    available_from: DateTime<Utc>,
}

#[derive(Default)]
struct Model {
    lots: Vec<MLot>,
    /// Holds: (points per lot index, active).
    holds: Vec<(Vec<(usize, i64)>, bool)>,
    /// Spends: (points per lot index, undone).
    spends: Vec<(Vec<(usize, i64)>, bool)>,
}

impl Model {
    fn spendable(&self, now: DateTime<Utc>) -> i64 {
        self.lots
            .iter()
            .filter(|l| l.available_from <= now && l.expires.is_none_or(|e| e > now))
            .map(|l| l.remaining)
            .sum()
    }

    fn take(&mut self, mut amount: i64, now: DateTime<Utc>) -> Option<Vec<(usize, i64)>> {
        if self.spendable(now) < amount {
            return None;
        }
        let mut order: Vec<usize> = (0..self.lots.len()).collect();
        order.sort_by_key(|i| (self.lots[*i].expires.is_none(), self.lots[*i].expires, *i));
        let mut used = Vec::new();
        for i in order {
            let l = &mut self.lots[i];
            if l.available_from > now || l.expires.is_some_and(|e| e <= now) {
                continue;
            }
            let n = l.remaining.min(amount);
            if n > 0 {
                l.remaining -= n;
                amount -= n;
                used.push((i, n));
            }
        }
        Some(used)
    }

    fn expire(&mut self, now: DateTime<Utc>) {
        for l in &mut self.lots {
            if l.expires.is_some_and(|e| e <= now) {
                l.remaining = 0;
            }
        }
    }
}

fn check(book: &Book, member: Uuid, model: &Model, lot_ids: &[Uuid]) {
    let sum: i64 = book.entries.iter().map(|e| e.points).sum();
    assert_eq!(sum, 0, "entries balance");
    let account = &book.accounts[&(P.to_owned(), member)];
    let member_entries: i64 = book
        .entries
        .iter()
        .filter(|e| e.member_id == Some(member))
        .map(|e| e.points)
        .sum();
    assert_eq!(
        account.balance, member_entries,
        "account equals its entries"
    );
    let in_lots: i64 = account.lots.iter().map(|l| l.remaining).sum();
    assert_eq!(account.lots_total, in_lots, "account equals its lots");
    assert_eq!(
        account.balance,
        account.lots_total + account.held - account.debt
    );
    for (i, id) in lot_ids.iter().enumerate() {
        let lot = account
            .lots
            .iter()
            .find(|l| l.lot_id == *id)
            .expect("lot kept");
        assert_eq!(lot.remaining, model.lots[i].remaining, "lot {i}");
    }
    let held: i64 = model
        .holds
        .iter()
        .filter(|h| h.1)
        .flat_map(|h| h.0.iter())
        .map(|(_, n)| n)
        .sum();
    assert_eq!(account.held, held, "held");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn the_book_agrees_with_the_model(steps in prop::collection::vec(step(), 1..40)) {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let member = Uuid::now_v7();
        let mut book = Book::new(start);
        book.account_mut(P, member);
        let mut model = Model::default();
        let mut lot_ids: Vec<Uuid> = Vec::new();
        let mut holds: Vec<Uuid> = Vec::new();
        let mut spends: Vec<Uuid> = Vec::new();
        for step in steps {
            let now = book.now;
            match step {
                Step::Earn { points, valid_days, pending_days } => {
                    let available_from = now + Duration::days(pending_days);
                    let expires = valid_days.map(|d| now + Duration::days(d));
                    let earned = book.earn(&Earn {
                        program: P.into(), member_id: member, kind: pb::EarnKind::Goodwill, points,
                        max_points_per_day: None, max_events_per_day: None, order: None,
                        reason: String::new(), reference: String::new(), occurred_at: now, day: now.date_naive(),
                        available_from, expires_at: expires,
                    }).unwrap();
                    prop_assert!(earned.movement.is_some());
                    model.expire(now);
                    let lot = book.new_lots.last().unwrap().1.lot_id;
                    lot_ids.push(lot);
                    model.lots.push(MLot { remaining: points, expires, available_from });
                }
                Step::Spend(points) => {
                    let ok = book.spend(&Spend { program: P.into(), member_id: member, points, reason: String::new(), reference: String::new(), order_id: String::new() });
                    model.expire(now);
                    match model.take(points, now) {
                        Some(used) => {
                            let movement = ok.expect("the model could spend");
                            spends.push(Uuid::parse_str(&movement.movement_id).unwrap());
                            model.spends.push((used, false));
                        }
                        None => prop_assert!(ok.is_err(), "the model could not spend {}", points),
                    }
                }
                Step::Hold(points) => {
                    let ok = book.place_hold(&PlaceHold { program: P.into(), member_id: member, points, expires_at: now + Duration::days(100), reference: String::new() });
                    model.expire(now);
                    match model.take(points, now) {
                        Some(used) => {
                            holds.push(Uuid::parse_str(&ok.expect("the model could hold").hold_id).unwrap());
                            model.holds.push((used, true));
                        }
                        None => prop_assert!(ok.is_err()),
                    }
                }
                Step::Capture { hold, part } => {
                    if hold >= holds.len() { continue; }
                    let total: i64 = model.holds[hold].0.iter().map(|(_, n)| n).sum();
                    let ok = book.capture(holds[hold], part, "", "");
                    if !model.holds[hold].1 || part > total {
                        prop_assert!(ok.is_err());
                        continue;
                    }
                    let (_, movement) = ok.expect("capture");
                    let amount = if part == 0 { total } else { part };
                    // The first lots of the hold are captured; the rest returns.
                    let mut left = amount;
                    let mut captured = Vec::new();
                    for (i, n) in model.holds[hold].0.clone() {
                        let c = n.min(left);
                        left -= c;
                        if c > 0 { captured.push((i, c)); }
                        model.lots[i].remaining += n - c;
                    }
                    model.holds[hold].1 = false;
                    model.expire(now);
                    spends.push(Uuid::parse_str(&movement.movement_id).unwrap());
                    model.spends.push((captured, false));
                }
                Step::Release(hold) => {
                    if hold >= holds.len() { continue; }
                    let ok = book.release(holds[hold], false);
                    if !model.holds[hold].1 {
                        prop_assert!(ok.is_err());
                        continue;
                    }
                    ok.expect("release");
                    for (i, n) in model.holds[hold].0.clone() {
                        model.lots[i].remaining += n;
                    }
                    model.holds[hold].1 = false;
                    model.expire(now);
                }
                Step::Undo(spend) => {
                    if spend >= spends.len() { continue; }
                    let ok = book.reverse_redemption(P, spends[spend], "");
                    if model.spends[spend].1 {
                        prop_assert!(ok.is_err());
                        continue;
                    }
                    ok.expect("reverse");
                    for (i, n) in model.spends[spend].0.clone() {
                        model.lots[i].remaining += n;
                    }
                    model.spends[spend].1 = true;
                    model.expire(now);
                }
                Step::Advance(days) => {
                    book.now = now + Duration::days(days);
                    book.expire_due(P, member, "expired").unwrap();
                    model.expire(book.now);
                }
            }
            check(&book, member, &model, &lot_ids);
        }
    }
}
