#![no_main]
//! `cargo fuzz run patch_path`: PATCH path parsing must never panic.

use libfuzzer_sys::fuzz_target;
use usher_scim_protocol::ResourceKind;
use usher_scim_protocol::path::parse_patch_path;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = parse_patch_path(s, ResourceKind::User);
    let _ = parse_patch_path(s, ResourceKind::Group);
});
