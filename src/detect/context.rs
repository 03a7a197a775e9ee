//! What the caller knows about a line that the line does not say.

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::Proxies;

/// The zone of zone-less times, the instant used to infer a missing year (a file's
/// modification time when scanning, "now" when live), and the proxies whose header naming
/// the client is believed.
#[derive(Clone, Debug)]
pub struct LineContext {
    pub zone: TimeZone,
    pub reference: Timestamp,
    pub proxies: Proxies,
}

impl LineContext {
    /// Times in `zone`, the built-in trusted proxies.
    pub fn new(zone: TimeZone, reference: Timestamp) -> LineContext {
        LineContext {
            zone,
            reference,
            proxies: Proxies::default(),
        }
    }

    /// Zone-less times in UTC.
    pub fn utc(reference: Timestamp) -> LineContext {
        LineContext::new(TimeZone::UTC, reference)
    }
}
