//! A fail2ban filter in moat's pipeline: its results as moat's [`Verdict`], its clock from
//! moat's [`LineContext`].
//!
//! fail2ban identifies a failure by whatever its regex captured; moat bans addresses only. A
//! failure whose identifier is an address becomes a [`Verdict::Failure`] for that address;
//! one identified by a name (`<HOST>`'s alternative for host names) or by a custom `<F-ID>`
//! that is not an address is [`Verdict::BadHost`]: counted as matched, never banned, since a
//! name in a log line must not choose whom to ban.

use std::fmt;
use std::sync::Arc;

use super::dates::Clock;
use super::matcher::{Fail2banFilter, FailureId, Found, Matcher};
use crate::detect::time::FoundFormat;
use crate::detect::verdict::{parse_host, Failure, Verdict};
use crate::detect::LineContext;

/// A compiled fail2ban filter carried in a [`crate::detect::FilterSpec`].
#[derive(Clone)]
pub struct Fail2banSpec(pub Arc<Fail2banFilter>);

impl fmt::Debug for Fail2banSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0.definition;
        write!(f, "Fail2banSpec({:?} {:?})", d.name, d.options)
    }
}

/// fail2ban's clock for a line: the context's zone and reference instant.
pub fn clock(ctx: &LineContext) -> Clock {
    Clock {
        zone: ctx.zone.clone(),
        now: ctx.reference,
    }
}

/// What a line's results mean for moat.
pub fn verdict(found: &[Found]) -> Verdict {
    let Some(f) = found.iter().find(|f| f.failure()) else {
        return Verdict::Miss;
    };
    let host = match &f.id {
        Some(FailureId::Ip4(t) | FailureId::Ip6(t) | FailureId::Custom(t)) => {
            parse_host(t.as_bytes())
        }
        Some(FailureId::Name(_)) | None => None,
    };
    let Some(host) = host else {
        return Verdict::BadHost;
    };
    match f.time {
        Some(time) => Verdict::Failure(Failure {
            host,
            time,
            rule: f.rule,
            format: FoundFormat::Pattern,
        }),
        None => Verdict::NoTime { host },
    }
}

/// One line through a matcher, as a verdict.
pub fn check(matcher: &mut Matcher, line: &[u8], ctx: &LineContext) -> Verdict {
    let text = String::from_utf8_lossy(line);
    verdict(&matcher.feed(&text, None, &clock(ctx)))
}
