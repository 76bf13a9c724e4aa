//! Where an event stands in its member's sequence, as seen by one consumer
//! group: the outbox numbers each member's events 1, 2, 3... (per source)
//! and the consumer keeps the highest number it applied.

/// How an event's `member_sequence` relates to what the group applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The event carries no sequence (it concerns no member).
    Unsequenced,
    /// The next event of the member: nothing is missing.
    InOrder,
    /// Events between the last applied one and this one have not been
    /// applied yet: they are late (another replica holds them) or gone.
    Gap {
        /// Highest sequence applied before this event (0 for none).
        last_applied: i64,
    },
    /// A later event of the member was applied already.
    Stale {
        /// Highest sequence applied before this event.
        last_applied: i64,
    },
}

impl SequenceCheck {
    /// Compares an event's `sequence` with the highest one applied.
    pub fn of(last_applied: i64, sequence: i64) -> Self {
        if sequence <= 0 {
            Self::Unsequenced
        } else if sequence == last_applied + 1 {
            Self::InOrder
        } else if sequence > last_applied {
            Self::Gap { last_applied }
        } else {
            Self::Stale { last_applied }
        }
    }

    /// How many earlier events are missing before `sequence`, for a gap.
    pub fn missing(&self, sequence: i64) -> i64 {
        match self {
            Self::Gap { last_applied } => sequence - last_applied - 1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SequenceCheck;

    #[test]
    fn the_next_number_is_in_order() {
        assert_eq!(SequenceCheck::of(0, 1), SequenceCheck::InOrder);
        assert_eq!(SequenceCheck::of(41, 42), SequenceCheck::InOrder);
    }

    #[test]
    fn a_jump_is_a_gap_that_counts_the_missing_events() {
        let check = SequenceCheck::of(2, 5);
        assert_eq!(check, SequenceCheck::Gap { last_applied: 2 });
        assert_eq!(check.missing(5), 2);
        assert_eq!(
            SequenceCheck::of(0, 3),
            SequenceCheck::Gap { last_applied: 0 }
        );
    }

    #[test]
    fn a_number_at_or_below_the_last_applied_is_stale() {
        assert_eq!(
            SequenceCheck::of(5, 3),
            SequenceCheck::Stale { last_applied: 5 }
        );
        assert_eq!(
            SequenceCheck::of(5, 5),
            SequenceCheck::Stale { last_applied: 5 }
        );
        assert_eq!(SequenceCheck::of(5, 3).missing(3), 0);
    }

    #[test]
    fn no_sequence_is_unsequenced() {
        assert_eq!(SequenceCheck::of(7, 0), SequenceCheck::Unsequenced);
    }
}
