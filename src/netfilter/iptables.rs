//! iptables' plumbing shared by the ban sets and the port policy: port lists for `multiport`.

use crate::vocab::ports::ranges_text;

/// Port ranges as `--dports` lists (`22,80:443`) that fit multiport's 15 slots (a range
/// takes two), as many as needed.
pub fn multiport_lists(ranges: &[(u16, u16)]) -> Vec<String> {
    let mut chunk: Vec<(u16, u16)> = Vec::new();
    let mut slots = 0;
    let mut chunks = Vec::new();
    for &r in ranges {
        let cost = if r.0 == r.1 { 1 } else { 2 };
        if slots + cost > 15 {
            chunks.push(std::mem::take(&mut chunk));
            slots = 0;
        }
        chunk.push(r);
        slots += cost;
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks.iter().map(|c| ranges_text(c, ",", ":")).collect()
}
