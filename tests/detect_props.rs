//! Property tests of line → failure over every built-in filter: arbitrary bytes never panic,
//! and text an attacker controls can neither create a failure nor change its client.

use moat::detect::{library, Filter, LineContext, Verdict};
use proptest::prelude::*;

fn ctx() -> LineContext {
    LineContext::utc("2026-11-22T12:00:00Z".parse().unwrap())
}

fn all_filters() -> Vec<(&'static str, Filter)> {
    library::names()
        .map(|n| (n, Filter::compile(library::get(n).unwrap()).unwrap()))
        .collect()
}

/// Bytes an attacker can put in a request path or user agent as nginx logs them: anything but
/// a double quote, a newline or a backslash (nginx writes those as \x22, \x0A, \x5C).
fn field() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("escaped by nginx", |b| !matches!(b, b'"' | b'\n' | b'\\')),
        0..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(line in prop::collection::vec(any::<u8>(), 0..600)) {
        // The property is the absence of a panic (or of a hang: the regex engines are
        // linear-time, fancy-regex has a backtrack limit) on any input.
        for (_, f) in all_filters() {
            let _ = f.check(&line, &ctx());
        }
    }

    #[test]
    fn attacker_fields_cannot_frame_anyone(path in field(), agent in field(), referer in field()) {
        let portainer = Filter::compile(library::get("portainer").unwrap()).unwrap();
        let mut line = b"203.0.113.9 - - [26/Oct/2026:20:55:11 +0000] \"GET /".to_vec();
        line.extend(&path);
        line.extend(b" HTTP/1.1\" 404 10 \"");
        line.extend(&referer);
        line.extend(b"\" \"");
        line.extend(&agent);
        line.push(b'"');
        prop_assert_eq!(portainer.check(&line, &ctx()), Verdict::Miss);

        // The same fields on a real failure change nothing about whose failure it is.
        let mut line = b"198.51.100.4 - - [26/Oct/2026:20:55:11 +0000] \"POST /api/auth HTTP/1.1\" 422 59 \"".to_vec();
        line.extend(&referer);
        line.extend(b"\" \"");
        line.extend(&agent);
        line.push(b'"');
        match portainer.check(&line, &ctx()) {
            Verdict::Failure(f) => {
                prop_assert_eq!(f.host.to_string(), "198.51.100.4");
                prop_assert_eq!(f.time.to_string(), "2026-10-26T20:55:11Z");
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }
}
