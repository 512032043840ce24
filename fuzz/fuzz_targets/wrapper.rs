//! Fuzz target: the wrapper-script analyser on arbitrary text; must never panic, and a transparent
//! analysis must name a host and carry no warnings ("never a wrong host").
#![no_main]

use imsg_bridge::transport::wrapper::analyze;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Scripts are read as UTF-8 by `analyze_file`; invalid bytes never reach `analyze`.
    let Ok(script) = std::str::from_utf8(data) else {
        return;
    };
    let analysis = analyze(script);
    if analysis.transparent {
        assert!(
            analysis.host.is_some(),
            "transparent without a host: {analysis:?}"
        );
        assert!(
            analysis.warnings.is_empty(),
            "transparent with warnings: {analysis:?}"
        );
    }
    if let Some(host) = &analysis.host {
        assert!(!host.is_empty(), "an empty host: {analysis:?}");
    }
});
