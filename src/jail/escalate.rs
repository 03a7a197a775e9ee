//! Escalation: longer bans for clients banned before, like fail2ban's `bantime.increment`.
//! The count of earlier bans comes from the decision store; this is only the arithmetic.

use jiff::SignedDuration;

/// How long a ban lasts given the bans before it.
#[derive(Clone, Debug, PartialEq)]
pub struct Escalation {
    /// How a ban grows with each earlier one.
    pub steps: Steps,
    /// No escalated ban is longer ([`SignedDuration::MAX`]: no bound).
    pub max: SignedDuration,
    /// Whether earlier bans in every jail count, not only those of the jail banning now.
    pub across_jails: bool,
    /// Whether the earlier bans other nodes of a fleet decided (and this node received) count,
    /// not only this node's.
    pub across_nodes: bool,
    /// How far back an earlier ban may have started and still count.
    pub within: SignedDuration,
}

/// How a ban's length grows with the number of earlier bans.
#[derive(Clone, Debug, PartialEq)]
pub enum Steps {
    /// The n-th repeat ban lasts `bantime × factor^n` (the factor at least 1).
    Factor(f64),
    /// The n-th repeat ban lasts `bantime × multipliers[n]`, the last one repeating (never
    /// empty, no zero).
    Multipliers(Vec<u32>),
}

impl Escalation {
    /// The length of a ban of a client banned `earlier` times before.
    pub fn bantime(&self, base: SignedDuration, earlier: u32) -> SignedDuration {
        if base == SignedDuration::MAX {
            return base;
        }
        let scale = match &self.steps {
            Steps::Factor(f) => f.powi(earlier.min(64) as i32),
            Steps::Multipliers(m) => m[(earlier as usize).min(m.len() - 1)] as f64,
        };
        let secs = base.as_secs_f64() * scale;
        let scaled = if secs >= self.max.as_secs_f64() || secs >= i64::MAX as f64 / 2.0 {
            self.max
        } else {
            SignedDuration::from_secs_f64(secs)
        };
        scaled.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_steps() {
        let h = SignedDuration::from_hours(1);
        let f = Escalation {
            steps: Steps::Factor(2.0),
            max: SignedDuration::from_hours(24),
            across_jails: false,
            across_nodes: false,
            within: h,
        };
        assert_eq!(f.bantime(h, 0), h);
        assert_eq!(f.bantime(h, 3), h * 8);
        assert_eq!(f.bantime(h, 10), SignedDuration::from_hours(24));
        assert_eq!(f.bantime(h, u32::MAX), SignedDuration::from_hours(24));
        let m = Escalation {
            steps: Steps::Multipliers(vec![1, 5, 30]),
            max: SignedDuration::MAX,
            ..f
        };
        assert_eq!(m.bantime(h, 1), h * 5);
        assert_eq!(m.bantime(h, 9), h * 30);
        assert_eq!(m.bantime(SignedDuration::MAX, 1), SignedDuration::MAX);
    }
}
