//! The ledger's write path: commands queued through the runtime's group
//! commit, applied a batch at a time in one transaction. Per batch: claim
//! the idempotency keys, load and lock the accounts, apply every command to
//! the book in memory (a refused command changes nothing), write back what
//! changed with its events, store the responses, commit, answer.

use std::collections::HashMap;

use futures::{FutureExt, future::BoxFuture};
use laurel_proto::points::v1 as pb;
use laurel_runtime::{
    events::outbox::{self, NewEvent, PackedEvent},
    group_commit::BatchApply,
    idempotency::{BatchKey, BatchResponse, Claim, Idempotency},
};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    clock_now,
    error::PointsError,
    ledger::{
        book::{Book, BookEvent, DailyKey, LedgerError},
        ops::{Earn, LotTerms, PlaceHold, ReverseEarn, Spend},
        store::{self, Needs},
    },
};

/// The event source of this service.
pub const SOURCE: &str = "points";

/// A change of the ledger.
#[derive(Clone, Debug)]
pub enum Command {
    /// Earn (with the rules that produced the points, for the response).
    Earn {
        /// The earn.
        op: Earn,
        /// How the points came about.
        applied: Vec<pb::AppliedRule>,
    },
    /// Redeem as an order discount.
    Spend {
        /// The spend.
        op: Spend,
        /// The discount it buys.
        discount: Option<laurel_proto::common::v1::Money>,
    },
    /// Hold.
    Hold(PlaceHold),
    /// Capture.
    Capture {
        /// Programme.
        program: String,
        /// Hold.
        hold_id: Uuid,
        /// Points, 0 for all.
        points: i64,
        /// Statement text.
        reason: String,
        /// Order.
        order_id: String,
    },
    /// Release.
    Release {
        /// Programme.
        program: String,
        /// Hold.
        hold_id: Uuid,
    },
    /// Time out a due hold (the hold expiry job).
    ExpireHold {
        /// Programme.
        program: String,
        /// Hold.
        hold_id: Uuid,
    },
    /// Reverse an order's earn.
    ReverseEarn(ReverseEarn),
    /// Reverse a redemption.
    ReverseRedemption {
        /// Programme.
        program: String,
        /// The redemption or capture.
        movement_id: Uuid,
        /// Statement text.
        reason: String,
    },
    /// Operator adjustment.
    Adjust {
        /// Programme.
        program: String,
        /// Member.
        member_id: Uuid,
        /// Signed points.
        points: i64,
        /// Why.
        reason: String,
        /// Who.
        operator: String,
        /// Terms of a credit's lot.
        terms: LotTerms,
    },
    /// Transfer.
    Transfer {
        /// Programme.
        program: String,
        /// Sender.
        from: Uuid,
        /// Receiver.
        to: Uuid,
        /// Points.
        points: i64,
        /// Statement text.
        reason: String,
    },
    /// Expire a member's due lots (the expiry job).
    ExpireDue {
        /// Programme.
        program: String,
        /// Member.
        member_id: Uuid,
    },
    /// Move a merged member's points to the survivor.
    Merge {
        /// Programme.
        program: String,
        /// Merged member.
        from: Uuid,
        /// Survivor.
        to: Uuid,
    },
    /// Forfeit an erased member's points.
    Erase {
        /// Programme.
        program: String,
        /// Member.
        member_id: Uuid,
    },
}

/// A queued command and its idempotency key (commands from events and jobs
/// have none: the inbox and the rows themselves make them happen once).
#[derive(Clone, Debug)]
pub struct Request {
    /// Key, for client requests.
    pub key: Option<BatchKey>,
    /// The change.
    pub command: Command,
}

/// The answer to a command.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Earn.
    Earn(pb::EarnResponse),
    /// Redeem.
    Redeem(pb::RedeemResponse),
    /// Hold.
    Hold(pb::HoldResponse),
    /// Capture.
    Capture(pb::CaptureResponse),
    /// Release.
    Release(pb::ReleaseResponse),
    /// Reverse.
    Reverse(pb::ReverseResponse),
    /// Adjust.
    Adjust(pb::AdjustResponse),
    /// Transfer.
    Transfer(pb::TransferResponse),
    /// A job's or an event's command.
    Done,
}

impl Reply {
    /// Bytes stored with the idempotency key.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Earn(r) => r.encode_to_vec(),
            Self::Redeem(r) => r.encode_to_vec(),
            Self::Hold(r) => r.encode_to_vec(),
            Self::Capture(r) => r.encode_to_vec(),
            Self::Release(r) => r.encode_to_vec(),
            Self::Reverse(r) => r.encode_to_vec(),
            Self::Adjust(r) => r.encode_to_vec(),
            Self::Transfer(r) => r.encode_to_vec(),
            Self::Done => Vec::new(),
        }
    }

    /// A stored reply of `operation`.
    pub fn decode(operation: &str, bytes: &[u8]) -> Option<Self> {
        Some(match operation {
            "Earn" => Self::Earn(Message::decode(bytes).ok()?),
            "Redeem" => Self::Redeem(Message::decode(bytes).ok()?),
            "Hold" => Self::Hold(Message::decode(bytes).ok()?),
            "Capture" => Self::Capture(Message::decode(bytes).ok()?),
            "Release" => Self::Release(Message::decode(bytes).ok()?),
            "Reverse" => Self::Reverse(Message::decode(bytes).ok()?),
            "Adjust" => Self::Adjust(Message::decode(bytes).ok()?),
            "Transfer" => Self::Transfer(Message::decode(bytes).ok()?),
            _ => return None,
        })
    }
}

/// Applies batches of commands; the group commit's handler.
#[derive(Clone)]
pub struct Writer {
    /// Idempotency store.
    pub idempotency: Idempotency,
    /// Clock.
    pub clock: laurel_runtime::clock::SharedClock,
    /// The points field of the member card.
    pub cards: laurel_runtime::card::Cards<pb::Balance>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

type Outcome = Result<Reply, PointsError>;

impl BatchApply for Writer {
    type Request = Request;
    type Response = Reply;
    type Error = PointsError;

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        requests: &'a [Request],
    ) -> BoxFuture<'a, laurel_runtime::group_commit::BatchOutcome<Self>> {
        self.apply_batch(tx, requests).boxed()
    }

    fn storage_error(&self, error: sqlx::Error) -> PointsError {
        PointsError::Db(error)
    }
}

fn key_id(k: &BatchKey) -> (String, String, &'static str, String) {
    (
        k.program.clone(),
        k.caller.clone(),
        k.operation,
        k.request_id.clone(),
    )
}

impl Writer {
    /// Applies `requests` within `tx` (the group commit's transaction, or
    /// an event handler's): one outcome per request, in order.
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        requests: &[Request],
    ) -> Result<Vec<Outcome>, PointsError> {
        let now = clock_now(&self.clock);
        let mut outcomes: Vec<Option<Outcome>> = vec![None; requests.len()]
            .into_iter()
            .map(|_: Option<()>| None)
            .collect();
        // A key twice in one batch: the later one follows the earlier.
        let mut first_of: HashMap<(String, String, &'static str, String), usize> = HashMap::new();
        let mut follows: Vec<Option<usize>> = vec![None; requests.len()];
        let mut keys: Vec<BatchKey> = Vec::new();
        let mut key_slot: Vec<usize> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            if let Some(k) = &r.key {
                match first_of.get(&key_id(k)) {
                    Some(j) => follows[i] = Some(*j),
                    None => {
                        first_of.insert(key_id(k), i);
                        keys.push(k.clone());
                        key_slot.push(i);
                    }
                }
            }
        }
        let claims = self.idempotency.claim_many(tx, &keys).await?;
        for (claim, i) in claims.iter().zip(&key_slot) {
            match claim {
                Claim::Fresh => {}
                Claim::Replay(bytes) => {
                    let op = requests[*i]
                        .key
                        .as_ref()
                        .map(|k| k.operation)
                        .unwrap_or_default();
                    outcomes[*i] = Some(Reply::decode(op, bytes).ok_or_else(|| {
                        PointsError::Internal(anyhow::anyhow!("stored response unreadable"))
                    }));
                }
                Claim::Mismatch => outcomes[*i] = Some(Err(PointsError::RequestIdReused)),
            }
        }
        let mut needs = Needs::default();
        for (i, r) in requests.iter().enumerate() {
            if outcomes[i].is_none() && follows[i].is_none() {
                need(&mut needs, &r.command);
            }
        }
        let mut book = store::load(tx, needs, now).await?;
        let loaded = store::snapshot_lots(&book);
        for (i, r) in requests.iter().enumerate() {
            if outcomes[i].is_none() && follows[i].is_none() {
                outcomes[i] = Some(apply(&mut book, &r.command));
            }
        }
        for (i, r) in requests.iter().enumerate() {
            if let Some(j) = follows[i] {
                let same = r.key.as_ref().map(|k| &k.digest)
                    == requests[j].key.as_ref().map(|k| &k.digest);
                outcomes[i] = Some(match (&outcomes[j], same) {
                    (Some(Ok(reply)), true) => Ok(reply.clone()),
                    (Some(Err(_)), true) => Err(PointsError::Ledger(LedgerError::Internal(
                        "retried while the first attempt failed; retry".into(),
                    ))),
                    _ => Err(PointsError::RequestIdReused),
                });
            }
        }
        // Keys of refused requests are given back; the others keep their answer.
        let mut forget = Vec::new();
        let mut store_replies = Vec::new();
        for (claim, i) in claims.iter().zip(&key_slot) {
            if *claim != Claim::Fresh {
                continue;
            }
            let key = requests[*i].key.as_ref().expect("keyed");
            match outcomes[*i].as_ref().expect("every request has an outcome") {
                Ok(reply) => store_replies.push(BatchResponse {
                    key,
                    response: reply.encode(),
                    subject: subject(&requests[*i].command, &book),
                }),
                Err(_) => forget.push(key),
            }
        }
        store::save(tx, &book, &loaded).await?;
        invalidate_cards(&self.cards, &book).await;
        let events = pack_events(&book)?;
        outbox::enqueue_many(tx, SOURCE, &events).await?;
        self.idempotency.store_many(tx, &store_replies).await?;
        self.idempotency.forget_many(tx, &forget).await?;
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every request has an outcome"))
            .collect())
    }
}

/// Moves the card of every changed account past its new version before the
/// batch commits, so no replica serves a balance older than this batch once
/// its answer is out; the relay repeats it from the outbox. A reader that
/// reads Postgres in between fills at the old version, which the card
/// refuses; should the batch roll back, the card is only refilled after
/// the account's next change (slower reads, never wrong ones).
async fn invalidate_cards(cards: &laurel_runtime::card::Cards<pb::Balance>, book: &Book) {
    let changed = book
        .accounts
        .values()
        .filter(|a| a.changed)
        .filter_map(|a| {
            let program = laurel_runtime::context::ProgramId::parse(&a.program).ok()?;
            Some((program, a.member_id, a.version))
        });
    let changed: Vec<_> = changed.collect();
    futures::future::join_all(
        changed
            .iter()
            .map(|(program, member, version)| cards.invalidate(program, member, *version)),
    )
    .await;
}

/// The member a stored response concerns (erased with them).
fn subject(command: &Command, book: &Book) -> Option<Uuid> {
    match command {
        Command::Earn { op, .. } => Some(op.member_id),
        Command::Spend { op, .. } => Some(op.member_id),
        Command::Hold(op) => Some(op.member_id),
        Command::Capture { hold_id, .. }
        | Command::Release { hold_id, .. }
        | Command::ExpireHold { hold_id, .. } => book.holds.get(hold_id).map(|h| h.member_id),
        Command::Adjust { member_id, .. }
        | Command::ExpireDue { member_id, .. }
        | Command::Erase { member_id, .. } => Some(*member_id),
        Command::Transfer { from, .. } => Some(*from),
        Command::Merge { from, .. } => Some(*from),
        Command::ReverseEarn(_) | Command::ReverseRedemption { .. } => None,
    }
}

fn pack_events(book: &Book) -> Result<Vec<PackedEvent>, PointsError> {
    let mut events = Vec::with_capacity(book.events.len());
    for e in &book.events {
        let packed = match e {
            BookEvent::Moved {
                program,
                member_id,
                occurred_at,
                version,
                event,
            } => {
                let program = laurel_runtime::context::ProgramId::parse(program)
                    .map_err(|e| PointsError::Internal(anyhow::anyhow!(e)))?;
                PackedEvent::pack(
                    SOURCE,
                    NewEvent {
                        program: &program,
                        member_id: Some(*member_id),
                        occurred_at: *occurred_at,
                        recorded_at: book.now,
                        card_version: Some(*version),
                        payload: event,
                    },
                )?
            }
            BookEvent::Hold {
                program,
                member_id,
                version,
                event,
            } => {
                let program = laurel_runtime::context::ProgramId::parse(program)
                    .map_err(|e| PointsError::Internal(anyhow::anyhow!(e)))?;
                PackedEvent::pack(
                    SOURCE,
                    NewEvent {
                        program: &program,
                        member_id: Some(*member_id),
                        occurred_at: book.now,
                        recorded_at: book.now,
                        card_version: Some(*version),
                        payload: event,
                    },
                )?
            }
        };
        events.push(packed);
    }
    Ok(events)
}

/// What a command needs loaded.
fn need(needs: &mut Needs, command: &Command) {
    match command {
        Command::Earn { op, .. } => {
            needs.account(&op.program, op.member_id, 0, false);
            needs.create.insert((op.program.clone(), op.member_id));
            if let Some(order) = &op.order {
                needs
                    .orders
                    .insert((op.program.clone(), order.order_id.clone()));
            }
            if op.max_points_per_day.is_some() || op.max_events_per_day.is_some() {
                needs.daily.insert(DailyKey {
                    program: op.program.clone(),
                    member_id: op.member_id,
                    day: op.day,
                    kind: op.kind as i32,
                });
            }
        }
        Command::Spend { op, .. } => needs.account(&op.program, op.member_id, op.points, false),
        Command::Hold(op) => needs.account(&op.program, op.member_id, op.points, false),
        Command::Capture { hold_id, .. }
        | Command::Release { hold_id, .. }
        | Command::ExpireHold { hold_id, .. } => {
            needs.holds.insert(*hold_id);
        }
        Command::ReverseEarn(op) => {
            needs
                .orders
                .insert((op.program.clone(), op.order_id.clone()));
        }
        Command::ReverseRedemption { movement_id, .. } => {
            needs.redemptions.insert(*movement_id);
        }
        Command::Adjust {
            program,
            member_id,
            points,
            ..
        } => {
            needs.account(program, *member_id, (-points).max(0), false);
            if *points > 0 {
                needs.create.insert((program.clone(), *member_id));
            }
        }
        Command::Transfer {
            program,
            from,
            to,
            points,
            ..
        } => {
            needs.account(program, *from, *points, false);
            needs.account(program, *to, 0, false);
            needs.create.insert((program.clone(), *to));
        }
        Command::ExpireDue { program, member_id } => needs.account(program, *member_id, 0, false),
        Command::Merge { program, from, to } => {
            needs.account(program, *from, 0, true);
            needs.account(program, *to, 0, false);
            needs.create.insert((program.clone(), *from));
            needs.create.insert((program.clone(), *to));
        }
        Command::Erase { program, member_id } => {
            needs.account(program, *member_id, 0, true);
            needs.create.insert((program.clone(), *member_id));
        }
    }
}

fn balance(book: &Book, program: &str, member: Uuid) -> Option<pb::Balance> {
    let id = book.resolve(program, member);
    book.accounts
        .get(&(program.to_owned(), id))
        .map(|a| a.view(book.now))
}

fn hold_program_is(book: &Book, hold_id: Uuid, program: &str) -> Result<(), LedgerError> {
    match book.holds.get(&hold_id) {
        Some(h) if h.program == program => Ok(()),
        _ => Err(LedgerError::HoldNotFound),
    }
}

/// Applies one command to the book.
fn apply(book: &mut Book, command: &Command) -> Outcome {
    let ledger = |field: &str| {
        let field = field.to_owned();
        move |e: LedgerError| PointsError::from_ledger(e, &field)
    };
    Ok(match command {
        Command::Earn { op, applied } => {
            let earned = book.earn(op).map_err(ledger("points"))?;
            let mut applied = applied.clone();
            applied.extend(earned.limited);
            Reply::Earn(pb::EarnResponse {
                movement: earned.movement,
                applied_rules: applied,
                balance: balance(book, &op.program, op.member_id),
                available_from: Some(crate::ledger::book::timestamp(op.available_from)),
                expires_at: op.expires_at.map(crate::ledger::book::timestamp),
            })
        }
        Command::Spend { op, discount } => {
            let movement = book.spend(op).map_err(ledger("points"))?;
            Reply::Redeem(pb::RedeemResponse {
                movement: Some(movement),
                discount: discount.clone(),
                reward_redemption: None,
                balance: balance(book, &op.program, op.member_id),
            })
        }
        Command::Hold(op) => {
            let hold = book.place_hold(op).map_err(ledger("points"))?;
            Reply::Hold(pb::HoldResponse {
                hold: Some(hold),
                balance: balance(book, &op.program, op.member_id),
            })
        }
        Command::Capture {
            program,
            hold_id,
            points,
            reason,
            order_id,
        } => {
            hold_program_is(book, *hold_id, program)?;
            let (hold, movement) = book
                .capture(*hold_id, *points, reason, order_id)
                .map_err(ledger("points"))?;
            let member = book.holds[hold_id].member_id;
            Reply::Capture(pb::CaptureResponse {
                hold: Some(hold),
                movement: Some(movement),
                balance: balance(book, program, member),
            })
        }
        Command::Release { program, hold_id } | Command::ExpireHold { program, hold_id } => {
            hold_program_is(book, *hold_id, program)?;
            let timed_out = matches!(command, Command::ExpireHold { .. });
            let hold = book
                .release(*hold_id, timed_out)
                .map_err(ledger("hold_id"))?;
            let member = book.holds[hold_id].member_id;
            if timed_out {
                Reply::Done
            } else {
                Reply::Release(pb::ReleaseResponse {
                    hold: Some(hold),
                    balance: balance(book, program, member),
                })
            }
        }
        Command::ReverseEarn(op) => {
            let r = book.reverse_earn(op).map_err(ledger("order_refund"))?;
            Reply::Reverse(pb::ReverseResponse {
                movement: r.movement,
                points_not_reversed: r.not_reversed,
                balance: balance(book, &op.program, r.member_id),
            })
        }
        Command::ReverseRedemption {
            program,
            movement_id,
            reason,
        } => {
            let movement = book
                .reverse_redemption(program, *movement_id, reason)
                .map_err(ledger("redemption_movement_id"))?;
            let member = Uuid::parse_str(&movement.member_id).unwrap_or_default();
            Reply::Reverse(pb::ReverseResponse {
                movement: Some(movement),
                points_not_reversed: 0,
                balance: balance(book, program, member),
            })
        }
        Command::Adjust {
            program,
            member_id,
            points,
            reason,
            operator,
            terms,
        } => {
            let movement = book
                .adjust(program, *member_id, *points, reason, operator, *terms)
                .map_err(ledger("points"))?;
            Reply::Adjust(pb::AdjustResponse {
                movement: Some(movement),
                balance: balance(book, program, *member_id),
            })
        }
        Command::Transfer {
            program,
            from,
            to,
            points,
            reason,
        } => {
            let movement = book
                .transfer(program, *from, *to, *points, reason)
                .map_err(ledger("points"))?;
            Reply::Transfer(pb::TransferResponse {
                movement: Some(movement),
                from_balance: balance(book, program, *from),
                to_balance: balance(book, program, *to),
            })
        }
        Command::ExpireDue { program, member_id } => {
            let member = book.resolve(program, *member_id);
            book.expire_due(program, member, "expired")
                .map_err(ledger("points"))?;
            Reply::Done
        }
        Command::Merge { program, from, to } => {
            book.merge(program, *from, *to)
                .map_err(ledger("member_id"))?;
            Reply::Done
        }
        Command::Erase { program, member_id } => {
            book.erase(program, *member_id)
                .map_err(ledger("member_id"))?;
            Reply::Done
        }
    })
}
