//! Lifecycle stages: where a member stands against their own purchase rhythm.
//!
//! A member's *rhythm* is their mean inter-purchase interval in days,
//! `(last - first) / (purchases - 1)`; a member with a single purchase has
//! none yet and gets the population default of the configuration (the
//! caller can compute one with [`median_rhythm_days`]). Recency is measured
//! in rhythms, so a monthly buyer gone three months and a yearly buyer gone
//! one are not treated alike.
//!
//! Stages, from the checks in [`lifecycle_stage`] (defaults of
//! [`LifecycleConfig`] in parentheses):
//!
//! | stage    | rule                                                                                |
//! |----------|-------------------------------------------------------------------------------------|
//! | prospect | no purchase yet (a member who joined but never bought)                              |
//! | new      | first purchase at most `new_window_days` (30) ago and at most `new_max_purchases` (2) purchases (one repeat) |
//! | active   | recency <= `active_max_rhythms` (1.5) x rhythm and p_alive >= `active_min_p_alive` (0.5) |
//! | at risk  | recency <= `at_risk_max_rhythms` (3) x rhythm and p_alive >= `at_risk_min_p_alive` (0.3) |
//! | dormant  | recency <= `dormant_max_rhythms` (6) x rhythm and p_alive >= `dormant_min_p_alive` (0.1) |
//! | churned  | otherwise: recency > 6 x rhythm or p_alive < 0.1                                    |
//!
//! Put differently, recency and p_alive each name a stage and the member
//! gets the worse of the two; a missing p_alive (no BG/NBD fit) leaves
//! recency alone to decide. "New" comes first: a member who just started
//! has no rhythm to fall behind on, and BG/NBD gives them a p_alive of 1
//! anyway.
//!
//! Purchases are counted as distinct purchase days by default (the count
//! BG/NBD uses); counting orders also works but several orders on one day
//! then shrink the rhythm, which is why the rhythm has a floor
//! (`min_rhythm_days` (7)).

pub mod churn;

/// Why the lifecycle computation refused its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LifecycleError {
    /// Purchase days and purchase count disagree (a count without days, days
    /// without a count, one purchase on two days, last before first).
    #[error("inconsistent purchase history: {reason}")]
    InconsistentHistory {
        /// What disagrees.
        reason: &'static str,
    },
    /// A purchase after the "as of" day.
    #[error("last purchase day {last_purchase_day} is after the as-of day {as_of}")]
    PurchaseAfterAsOf {
        /// The last purchase day.
        last_purchase_day: i32,
        /// The day of the assessment.
        as_of: i32,
    },
    /// p_alive outside `[0, 1]` or not a number.
    #[error("probability alive must be within [0, 1], got {p_alive}")]
    InvalidProbability {
        /// The value given.
        p_alive: f64,
    },
    /// A configuration that cannot order the stages.
    #[error("invalid lifecycle configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// One member of a batch was refused.
    #[error("member at index {index}: {error}")]
    MemberRejected {
        /// Position of the member in the batch.
        index: usize,
        /// Why it was refused.
        error: Box<LifecycleError>,
    },
}

/// A member's lifecycle stage, from best to worst once they have bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LifecycleStage {
    /// Joined, never bought.
    Prospect,
    /// First purchase within the new-member window.
    New,
    /// Buying on rhythm.
    Active,
    /// Overdue: time to act.
    AtRisk,
    /// Well overdue.
    Dormant,
    /// Gone, by recency or by the BG/NBD probability of being alive.
    Churned,
}

impl LifecycleStage {
    /// Every stage, in order.
    pub const ALL: [LifecycleStage; 6] = [
        LifecycleStage::Prospect,
        LifecycleStage::New,
        LifecycleStage::Active,
        LifecycleStage::AtRisk,
        LifecycleStage::Dormant,
        LifecycleStage::Churned,
    ];

    /// Lower-case name for events and storage ("at_risk").
    pub fn name(self) -> &'static str {
        match self {
            LifecycleStage::Prospect => "prospect",
            LifecycleStage::New => "new",
            LifecycleStage::Active => "active",
            LifecycleStage::AtRisk => "at_risk",
            LifecycleStage::Dormant => "dormant",
            LifecycleStage::Churned => "churned",
        }
    }
}

/// Thresholds of the stages; see the module documentation for the rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifecycleConfig {
    /// Days since the first purchase during which a member is new.
    pub new_window_days: i32,
    /// Most purchases a new member can have (2 = first plus one repeat).
    pub new_max_purchases: u32,
    /// Rhythm of members with a single purchase, in days.
    pub default_rhythm_days: f64,
    /// Smallest rhythm, in days (several purchases close together would
    /// otherwise make a member overdue within days).
    pub min_rhythm_days: f64,
    /// Largest recency, in rhythms, of an active member.
    pub active_max_rhythms: f64,
    /// Largest recency, in rhythms, of a member at risk.
    pub at_risk_max_rhythms: f64,
    /// Largest recency, in rhythms, of a dormant member.
    pub dormant_max_rhythms: f64,
    /// Smallest p_alive of an active member.
    pub active_min_p_alive: f64,
    /// Smallest p_alive of a member at risk.
    pub at_risk_min_p_alive: f64,
    /// Smallest p_alive of a dormant member; below it, churned.
    pub dormant_min_p_alive: f64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            new_window_days: 30,
            new_max_purchases: 2,
            // A placeholder for programmes that have not measured theirs:
            // a quarterly rhythm. `median_rhythm_days` gives the real one.
            default_rhythm_days: 90.0,
            min_rhythm_days: 7.0,
            active_max_rhythms: 1.5,
            at_risk_max_rhythms: 3.0,
            dormant_max_rhythms: 6.0,
            active_min_p_alive: 0.5,
            at_risk_min_p_alive: 0.3,
            dormant_min_p_alive: 0.1,
        }
    }
}

impl LifecycleConfig {
    /// Checks that the thresholds are finite and ordered.
    pub fn validate(&self) -> Result<(), LifecycleError> {
        let invalid = |reason| Err(LifecycleError::InvalidConfig { reason });
        if self.new_window_days < 0 {
            return invalid("new_window_days must not be negative");
        }
        if !(self.min_rhythm_days.is_finite() && self.min_rhythm_days > 0.0) {
            return invalid("min_rhythm_days must be positive");
        }
        if !(self.default_rhythm_days.is_finite() && self.default_rhythm_days > 0.0) {
            return invalid("default_rhythm_days must be positive");
        }
        let multiples = [
            self.active_max_rhythms,
            self.at_risk_max_rhythms,
            self.dormant_max_rhythms,
        ];
        if multiples.iter().any(|m| !(m.is_finite() && *m > 0.0))
            || !(multiples[0] <= multiples[1] && multiples[1] <= multiples[2])
        {
            return invalid("rhythm multiples must be positive and non-decreasing");
        }
        let probabilities = [
            self.active_min_p_alive,
            self.at_risk_min_p_alive,
            self.dormant_min_p_alive,
        ];
        if probabilities.iter().any(|p| !(0.0..=1.0).contains(p))
            || !(probabilities[0] >= probabilities[1] && probabilities[1] >= probabilities[2])
        {
            return invalid("p_alive thresholds must be within [0, 1] and non-increasing");
        }
        Ok(())
    }
}

/// What the lifecycle needs to know about one member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifecycleInput {
    /// Day of the first purchase, `None` if the member never bought.
    pub first_purchase_day: Option<i32>,
    /// Day of the last purchase, `None` if the member never bought.
    pub last_purchase_day: Option<i32>,
    /// Distinct purchase days (or orders: see the module documentation).
    pub purchases: u32,
    /// BG/NBD probability of being alive at the as-of day, if fitted.
    pub p_alive: Option<f64>,
}

/// Where a member's rhythm came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RhythmSource {
    /// Their own mean inter-purchase interval (two purchases or more).
    Personal,
    /// The population default (a single purchase).
    PopulationDefault,
    /// Their own interval was below the floor and was raised to it.
    Floor,
}

/// A member's purchase rhythm in days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rhythm {
    /// Days between purchases.
    pub days: f64,
    /// Where the figure came from.
    pub source: RhythmSource,
}

/// What decided the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageReason {
    /// The member never bought.
    NoPurchase,
    /// Within the new-member window.
    NewMember,
    /// Recency against the rhythm (also when p_alive agrees).
    Recency,
    /// The probability of being alive was worse than recency.
    ProbabilityAlive,
}

/// The stage of one member, with the figures that led to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifecycleAssessment {
    /// The stage.
    pub stage: LifecycleStage,
    /// What decided it.
    pub reason: StageReason,
    /// Days since the last purchase (`None` for prospects).
    pub recency_days: Option<i32>,
    /// The rhythm used (`None` for prospects).
    pub rhythm: Option<Rhythm>,
    /// Recency divided by rhythm (`None` for prospects).
    pub recency_in_rhythms: Option<f64>,
}

/// The purchase rhythm: `(last - first) / (purchases - 1)` days for two
/// purchases or more, floored at `min_rhythm_days`; the population default
/// for a single purchase. `None` when there is no purchase.
pub fn purchase_rhythm(
    first_purchase_day: i32,
    last_purchase_day: i32,
    purchases: u32,
    config: &LifecycleConfig,
) -> Result<Option<Rhythm>, LifecycleError> {
    if purchases == 0 {
        return Ok(None);
    }
    if last_purchase_day < first_purchase_day {
        return Err(LifecycleError::InconsistentHistory {
            reason: "last purchase before the first",
        });
    }
    if purchases == 1 {
        if last_purchase_day != first_purchase_day {
            return Err(LifecycleError::InconsistentHistory {
                reason: "one purchase on two different days",
            });
        }
        return Ok(Some(Rhythm {
            days: config.default_rhythm_days,
            source: RhythmSource::PopulationDefault,
        }));
    }
    let span = f64::from(last_purchase_day) - f64::from(first_purchase_day);
    let days = span / f64::from(purchases - 1);
    Ok(Some(if days < config.min_rhythm_days {
        Rhythm {
            days: config.min_rhythm_days,
            source: RhythmSource::Floor,
        }
    } else {
        Rhythm {
            days,
            source: RhythmSource::Personal,
        }
    }))
}

/// The median personal rhythm of the members with two purchases or more,
/// before the floor: a population default for [`LifecycleConfig`]. `None`
/// when nobody has repeated. Of an even count, the mean of the middle two.
pub fn median_rhythm_days(members: &[LifecycleInput]) -> Option<f64> {
    let mut rhythms: Vec<f64> = members
        .iter()
        .filter(|m| m.purchases >= 2)
        .filter_map(|m| {
            let (first, last) = (m.first_purchase_day?, m.last_purchase_day?);
            (last >= first)
                .then(|| (f64::from(last) - f64::from(first)) / f64::from(m.purchases - 1))
        })
        .collect();
    if rhythms.is_empty() {
        return None;
    }
    rhythms.sort_unstable_by(f64::total_cmp);
    let middle = rhythms.len() / 2;
    Some(if rhythms.len() % 2 == 1 {
        rhythms[middle]
    } else {
        (rhythms[middle - 1] + rhythms[middle]) / 2.0
    })
}

/// The lifecycle stage of one member as of a day (rules in the module
/// documentation).
pub fn lifecycle_stage(
    member: &LifecycleInput,
    as_of: i32,
    config: &LifecycleConfig,
) -> Result<LifecycleAssessment, LifecycleError> {
    config.validate()?;
    if let Some(p_alive) = member.p_alive
        && !(0.0..=1.0).contains(&p_alive)
    {
        return Err(LifecycleError::InvalidProbability { p_alive });
    }
    let (first, last) = match (
        member.first_purchase_day,
        member.last_purchase_day,
        member.purchases,
    ) {
        (None, None, 0) => {
            return Ok(LifecycleAssessment {
                stage: LifecycleStage::Prospect,
                reason: StageReason::NoPurchase,
                recency_days: None,
                rhythm: None,
                recency_in_rhythms: None,
            });
        }
        (Some(first), Some(last), purchases) if purchases > 0 => (first, last),
        _ => {
            return Err(LifecycleError::InconsistentHistory {
                reason: "purchase days and purchase count disagree",
            });
        }
    };
    if last > as_of {
        return Err(LifecycleError::PurchaseAfterAsOf {
            last_purchase_day: last,
            as_of,
        });
    }
    let rhythm = purchase_rhythm(first, last, member.purchases, config)?.ok_or(
        LifecycleError::InconsistentHistory {
            reason: "purchase days without purchases",
        },
    )?;
    // Both fit in i32 and last <= as_of, so the difference is in 0..2^32.
    let recency_days = i64::from(as_of) - i64::from(last);
    let days_since_first = i64::from(as_of) - i64::from(first);
    let recency_in_rhythms = recency_days as f64 / rhythm.days;
    let assessment = |stage, reason| LifecycleAssessment {
        stage,
        reason,
        recency_days: i32::try_from(recency_days).ok(),
        rhythm: Some(rhythm),
        recency_in_rhythms: Some(recency_in_rhythms),
    };

    if days_since_first <= i64::from(config.new_window_days)
        && member.purchases <= config.new_max_purchases
    {
        return Ok(assessment(LifecycleStage::New, StageReason::NewMember));
    }
    let by_recency = stage_by_recency(recency_in_rhythms, config);
    match member.p_alive.map(|p| stage_by_p_alive(p, config)) {
        Some(by_p_alive) if by_p_alive > by_recency => {
            Ok(assessment(by_p_alive, StageReason::ProbabilityAlive))
        }
        _ => Ok(assessment(by_recency, StageReason::Recency)),
    }
}

/// Stages of many members as of one day, in input order. The first
/// invalid member stops the computation with
/// [`LifecycleError::MemberRejected`], which says which one.
pub fn lifecycle_stages(
    members: &[LifecycleInput],
    as_of: i32,
    config: &LifecycleConfig,
) -> Result<Vec<LifecycleAssessment>, LifecycleError> {
    config.validate()?;
    members
        .iter()
        .enumerate()
        .map(|(index, member)| {
            lifecycle_stage(member, as_of, config).map_err(|error| LifecycleError::MemberRejected {
                index,
                error: Box::new(error),
            })
        })
        .collect()
}

fn stage_by_recency(recency_in_rhythms: f64, config: &LifecycleConfig) -> LifecycleStage {
    if recency_in_rhythms <= config.active_max_rhythms {
        LifecycleStage::Active
    } else if recency_in_rhythms <= config.at_risk_max_rhythms {
        LifecycleStage::AtRisk
    } else if recency_in_rhythms <= config.dormant_max_rhythms {
        LifecycleStage::Dormant
    } else {
        LifecycleStage::Churned
    }
}

fn stage_by_p_alive(p_alive: f64, config: &LifecycleConfig) -> LifecycleStage {
    if p_alive >= config.active_min_p_alive {
        LifecycleStage::Active
    } else if p_alive >= config.at_risk_min_p_alive {
        LifecycleStage::AtRisk
    } else if p_alive >= config.dormant_min_p_alive {
        LifecycleStage::Dormant
    } else {
        LifecycleStage::Churned
    }
}

/// A stage change to publish as a `LifecycleChanged` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleChange {
    /// The stored stage, `None` if the member had none yet.
    pub from: Option<LifecycleStage>,
    /// The new stage.
    pub to: LifecycleStage,
}

/// Whether a `LifecycleChanged` event is due: `Some` when the stage differs
/// from the stored one, including the first stage ever computed for a
/// member (`previous` = `None`); `None` when it is unchanged, so
/// re-running the assessment publishes nothing.
pub fn lifecycle_change_event(
    previous: Option<LifecycleStage>,
    current: LifecycleStage,
) -> Option<LifecycleChange> {
    (previous != Some(current)).then_some(LifecycleChange {
        from: previous,
        to: current,
    })
}
