#![no_main]
//! `cargo fuzz run filter`: the parser must never panic, and whatever parses
//! must print back to a filter that reparses to the same tree.

use libfuzzer_sys::fuzz_target;
use usher_scim_protocol::{ResourceKind, parse_filter};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(f) = parse_filter(s) {
        let printed = f.to_string();
        assert_eq!(parse_filter(&printed).ok(), Some(f.clone()), "{printed}");
        let _ = f.matches(&serde_json::json!({"userName": s}), ResourceKind::User);
    }
});
