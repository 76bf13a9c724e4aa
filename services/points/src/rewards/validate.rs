//! Checks catalogue requests into domain values, once, on receipt: every
//! field out of bounds becomes a field violation named by its path in the
//! request (`reward.points_price`, `update_mask.paths[1]`, ...).

use chrono::{DateTime, Utc};
use laurel_proto::points::v1 as pb;
use laurel_runtime::error::Violations;
use uuid::Uuid;

use super::{model::Terms, period::LimitPeriod};
use crate::{ledger::book::MAX_POINTS, requests};

/// Longest reward name.
pub const MAX_NAME: usize = 200;
/// Longest reward description.
pub const MAX_DESCRIPTION: usize = 2_000;
/// Largest stock.
pub const MAX_STOCK: i64 = 1_000_000_000_000;
/// Largest per-member limit.
pub const MAX_LIMIT: i64 = 1_000_000_000_000;
/// Most units in one redemption.
pub const MAX_QUANTITY: i64 = 1_000;

/// A field of a reward that an update may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `name`.
    Name,
    /// `description`.
    Description,
    /// `points_price`.
    PointsPrice,
    /// `stock`.
    Stock,
    /// `per_member_limit`.
    PerMemberLimit,
    /// `limit_period`.
    LimitPeriod,
    /// `valid_from`.
    ValidFrom,
    /// `valid_until`.
    ValidUntil,
    /// `active`.
    Active,
}

impl Field {
    /// Every field, in the proto's order.
    pub const ALL: [Field; 9] = [
        Field::Name,
        Field::Description,
        Field::PointsPrice,
        Field::Stock,
        Field::PerMemberLimit,
        Field::LimitPeriod,
        Field::ValidFrom,
        Field::ValidUntil,
        Field::Active,
    ];

    /// Its path in an update mask.
    pub fn path(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Description => "description",
            Field::PointsPrice => "points_price",
            Field::Stock => "stock",
            Field::PerMemberLimit => "per_member_limit",
            Field::LimitPeriod => "limit_period",
            Field::ValidFrom => "valid_from",
            Field::ValidUntil => "valid_until",
            Field::Active => "active",
        }
    }

    fn parse(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.path() == path)
    }
}

/// The changes of an update: a checked value for each field the mask names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patch {
    name: Option<String>,
    description: Option<String>,
    points_price: Option<i64>,
    stock: Option<i64>,
    per_member_limit: Option<i64>,
    limit_period: Option<LimitPeriod>,
    valid_from: Option<Option<DateTime<Utc>>>,
    valid_until: Option<Option<DateTime<Utc>>>,
    active: Option<bool>,
}

impl Patch {
    /// `terms` with the changes made, checked as a whole (the validity
    /// window must stay ordered).
    pub fn apply(&self, terms: &Terms) -> Result<Terms, Violations> {
        let changed = self.changed(terms);
        let mut v = Violations::new();
        window(&changed, &mut v);
        v.finish()?;
        Ok(changed)
    }

    fn changed(&self, terms: &Terms) -> Terms {
        let Patch {
            name,
            description,
            points_price,
            stock,
            per_member_limit,
            limit_period,
            valid_from,
            valid_until,
            active,
        } = self;
        Terms {
            name: name.clone().unwrap_or_else(|| terms.name.clone()),
            description: description
                .clone()
                .unwrap_or_else(|| terms.description.clone()),
            points_price: points_price.unwrap_or(terms.points_price),
            stock: stock.unwrap_or(terms.stock),
            per_member_limit: per_member_limit.unwrap_or(terms.per_member_limit),
            limit_period: limit_period.unwrap_or(terms.limit_period),
            valid_from: valid_from.unwrap_or(terms.valid_from),
            valid_until: valid_until.unwrap_or(terms.valid_until),
            active: active.unwrap_or(terms.active),
        }
    }
}

fn window(terms: &Terms, v: &mut Violations) {
    if let (Some(from), Some(until)) = (terms.valid_from, terms.valid_until) {
        v.check(
            from >= until,
            "reward.valid_until",
            "must be after valid_from",
        );
    }
}

/// The terms of a new reward (its output-only fields are ignored).
pub fn new_reward(reward: Option<&pb::Reward>, v: &mut Violations) -> Option<Terms> {
    let Some(reward) = reward else {
        v.add("reward", "required");
        return None;
    };
    let blank = Terms {
        name: String::new(),
        description: String::new(),
        points_price: 0,
        stock: 0,
        per_member_limit: 0,
        limit_period: LimitPeriod::Window,
        valid_from: None,
        valid_until: None,
        active: false,
    };
    let terms = read(reward, &Field::ALL, v).changed(&blank);
    window(&terms, v);
    v.is_empty().then_some(terms)
}

/// An update: the reward's id and the checked values of the fields its
/// mask names (`*` names them all).
pub fn update(
    reward: Option<&pb::Reward>,
    mask: Option<&prost_types::FieldMask>,
    v: &mut Violations,
) -> (Uuid, Patch) {
    let fields = update_mask(mask, v);
    let Some(reward) = reward else {
        v.add("reward", "required, with reward_id set");
        return (Uuid::nil(), Patch::default());
    };
    let id = requests::uuid(&reward.reward_id, "reward.reward_id", "reward", v);
    (id, read(reward, &fields, v))
}

fn update_mask(mask: Option<&prost_types::FieldMask>, v: &mut Violations) -> Vec<Field> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        v.add("update_mask", "required: the fields to change, of name, description, points_price, stock, per_member_limit, limit_period, valid_from, valid_until, active");
        return Vec::new();
    }
    if paths.len() == 1 && paths[0] == "*" {
        return Field::ALL.to_vec();
    }
    let mut fields = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        match Field::parse(path) {
            Some(f) if !fields.contains(&f) => fields.push(f),
            Some(_) => {}
            None => v.add(
                format!("update_mask.paths[{i}]"),
                "not a field an update may change: name, description, points_price, stock, per_member_limit, limit_period, valid_from, valid_until or active",
            ),
        }
    }
    fields
}

/// Reads and checks `fields` of `reward`.
fn read(reward: &pb::Reward, fields: &[Field], v: &mut Violations) -> Patch {
    // Every field named, so a new one breaks the build until handled here.
    let pb::Reward {
        reward_id: _,
        name,
        description,
        points_price,
        stock,
        per_member_limit,
        limit_period,
        valid_from,
        valid_until,
        active,
        created_at: _,
        version: _,
    } = reward;
    let mut patch = Patch::default();
    for field in fields {
        match field {
            Field::Name => {
                let name = name.trim();
                v.check(name.is_empty() || name.chars().count() > MAX_NAME, "reward.name", format!("required, at most {MAX_NAME} characters"));
                patch.name = Some(name.to_owned());
            }
            Field::Description => {
                requests::text(description, "reward.description", MAX_DESCRIPTION, v);
                patch.description = Some(description.clone());
            }
            Field::PointsPrice => {
                v.check(!(1..=MAX_POINTS).contains(points_price), "reward.points_price", "1 to 10^12 points");
                patch.points_price = Some(*points_price);
            }
            Field::Stock => {
                v.check(!(0..=MAX_STOCK).contains(stock), "reward.stock", "0 to 10^12 units");
                patch.stock = Some(*stock);
            }
            Field::PerMemberLimit => {
                v.check(!(0..=MAX_LIMIT).contains(per_member_limit), "reward.per_member_limit", "0 (no limit) to 10^12 units");
                patch.per_member_limit = Some(*per_member_limit);
            }
            Field::LimitPeriod => match LimitPeriod::from_proto(*limit_period) {
                Some(p) => patch.limit_period = Some(p),
                None => v.add("reward.limit_period", "one of PERIOD_UNSPECIFIED (the whole validity window), PERIOD_DAY, PERIOD_MONTH, PERIOD_QUARTER, PERIOD_YEAR"),
            },
            Field::ValidFrom => patch.valid_from = Some(time(valid_from.as_ref(), "reward.valid_from", v)),
            Field::ValidUntil => patch.valid_until = Some(time(valid_until.as_ref(), "reward.valid_until", v)),
            Field::Active => patch.active = Some(*active),
        }
    }
    patch
}

/// An optional timestamp, to the microsecond Postgres keeps.
fn time(
    t: Option<&prost_types::Timestamp>,
    field: &str,
    v: &mut Violations,
) -> Option<DateTime<Utc>> {
    let t = t?;
    let at = u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos));
    match at {
        Some(at) => Some(DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)),
        None => {
            v.add(field, "not a valid time");
            None
        }
    }
}

/// The reward and quantity a redeem request chooses.
pub fn choice(choice: &pb::RewardChoice, v: &mut Violations) -> (Uuid, i64) {
    let pb::RewardChoice {
        reward_id,
        quantity,
    } = choice;
    let id = requests::uuid(reward_id, "reward.reward_id", "reward", v);
    v.check(
        !(1..=MAX_QUANTITY).contains(quantity),
        "reward.quantity",
        format!("1 to {MAX_QUANTITY} units"),
    );
    (id, *quantity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reward() -> pb::Reward {
        pb::Reward {
            name: "  Mug ".into(),
            points_price: 500,
            stock: 10,
            active: true,
            ..Default::default()
        }
    }

    fn fields_of(r: Option<&pb::Reward>) -> Vec<String> {
        let mut v = Violations::new();
        new_reward(r, &mut v);
        v.fields().into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn a_new_reward_is_trimmed_and_its_output_fields_ignored() {
        let mut v = Violations::new();
        let r = pb::Reward {
            reward_id: "ignored".into(),
            version: 7,
            ..reward()
        };
        let terms = new_reward(Some(&r), &mut v).expect("valid");
        assert!(v.is_empty());
        assert_eq!(terms.name, "Mug");
        assert_eq!(terms.limit_period, LimitPeriod::Window);
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = pb::Reward {
            name: " ".into(),
            description: "x".repeat(MAX_DESCRIPTION + 1),
            points_price: 0,
            stock: -1,
            per_member_limit: -1,
            limit_period: 9,
            valid_from: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..Default::default()
        };
        assert_eq!(
            fields_of(Some(&bad)),
            [
                "reward.name",
                "reward.description",
                "reward.points_price",
                "reward.stock",
                "reward.per_member_limit",
                "reward.limit_period",
                "reward.valid_from"
            ]
        );
        assert_eq!(fields_of(None), ["reward"]);
        assert_eq!(
            fields_of(Some(&pb::Reward {
                name: "x".repeat(MAX_NAME + 1),
                ..reward()
            })),
            ["reward.name"]
        );
        assert_eq!(
            fields_of(Some(&pb::Reward {
                points_price: MAX_POINTS + 1,
                ..reward()
            })),
            ["reward.points_price"]
        );
        assert!(
            fields_of(Some(&pb::Reward {
                name: "é".repeat(MAX_NAME),
                ..reward()
            }))
            .is_empty()
        );
    }

    #[test]
    fn the_window_must_be_ordered() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        assert_eq!(
            fields_of(Some(&pb::Reward {
                valid_from: at(10),
                valid_until: at(10),
                ..reward()
            })),
            ["reward.valid_until"]
        );
        assert!(
            fields_of(Some(&pb::Reward {
                valid_from: at(10),
                valid_until: at(11),
                ..reward()
            }))
            .is_empty()
        );
        assert!(
            fields_of(Some(&pb::Reward {
                valid_until: at(10),
                ..reward()
            }))
            .is_empty()
        );
    }

    #[test]
    fn an_update_changes_only_the_masked_fields() {
        let mut v = Violations::new();
        let mask = prost_types::FieldMask {
            paths: vec!["stock".into(), "valid_until".into()],
        };
        let incoming = pb::Reward {
            reward_id: Uuid::now_v7().to_string(),
            name: String::new(),
            stock: 4,
            ..Default::default()
        };
        let (_, patch) = update(Some(&incoming), Some(&mask), &mut v);
        assert!(v.is_empty(), "{v:?}");
        let mut v = Violations::new();
        let before = new_reward(
            Some(&pb::Reward {
                valid_until: Some(prost_types::Timestamp {
                    seconds: 100,
                    nanos: 0,
                }),
                ..reward()
            }),
            &mut v,
        )
        .unwrap();
        let after = patch.apply(&before).unwrap();
        assert_eq!(
            after,
            Terms {
                stock: 4,
                valid_until: None,
                ..before
            }
        );
    }

    #[test]
    fn an_update_names_unknown_paths_and_needs_a_mask_and_an_id() {
        let mut v = Violations::new();
        let mask = prost_types::FieldMask {
            paths: vec!["name".into(), "version".into(), "stock".into()],
        };
        update(
            Some(&pb::Reward {
                name: "ok".into(),
                stock: -5,
                ..Default::default()
            }),
            Some(&mask),
            &mut v,
        );
        assert_eq!(
            v.fields(),
            ["update_mask.paths[1]", "reward.reward_id", "reward.stock"]
        );
        let mut v = Violations::new();
        update(Some(&reward()), None, &mut v);
        assert_eq!(v.fields(), ["update_mask", "reward.reward_id"]);
    }

    #[test]
    fn a_choice_needs_a_reward_and_a_quantity_in_bounds() {
        for (q, ok) in [
            (0, false),
            (1, true),
            (MAX_QUANTITY, true),
            (MAX_QUANTITY + 1, false),
            (-1, false),
        ] {
            let mut v = Violations::new();
            choice(
                &pb::RewardChoice {
                    reward_id: Uuid::now_v7().to_string(),
                    quantity: q,
                },
                &mut v,
            );
            assert_eq!(v.is_empty(), ok, "quantity {q}");
        }
        let mut v = Violations::new();
        choice(
            &pb::RewardChoice {
                reward_id: "nope".into(),
                quantity: 1,
            },
            &mut v,
        );
        assert_eq!(v.fields(), ["reward.reward_id"]);
    }
}
