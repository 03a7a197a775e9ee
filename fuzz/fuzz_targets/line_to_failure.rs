//! Fuzz target: any line through every built-in filter, and the scan pipeline's line reader.
//! Properties: no panic, no hang; a failure's client is an address written in the line.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use moat::detect::{library, Filter, LineContext, Verdict};

static FILTERS: LazyLock<Vec<Filter>> = LazyLock::new(|| {
    library::names()
        .map(|n| Filter::compile(library::get(n).expect("listed")).expect("built-in compiles"))
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let ctx = LineContext::utc(jiff::Timestamp::from_second(1_795_000_000).unwrap());
    for filter in FILTERS.iter() {
        if let Verdict::Failure(f) = filter.check(data, &ctx) {
            // The client must be spelled out in the line (IPv4 literally; IPv6 in some form).
            let text = String::from_utf8_lossy(data);
            match f.host {
                std::net::IpAddr::V4(a) => assert!(text.contains(&a.to_string()), "{a} not in line"),
                std::net::IpAddr::V6(_) => assert!(text.contains(':')),
            }
        }
    }
    let mut lines = 0usize;
    moat::source::LineReader::with_max(data, 64)
        .for_each_line(|l| {
            assert!(l.bytes.len() <= 64);
            lines += 1;
        })
        .expect("reading from memory cannot fail");
    assert!(lines <= data.len() + 1);
});
