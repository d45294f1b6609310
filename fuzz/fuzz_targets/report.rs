//! Job reports: parsing with field paths, then validation of ranges, names
//! and bounds. Never a panic; what validates is finite and within limits.
#![no_main]

use agent_reporter::report::Report;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local!(static LIMITS: agent_reporter::settings::Limits = {
        let settings: agent_reporter::Settings = rave_service::settings::load_with_env(
            None,
            Some(std::collections::HashMap::new()),
        )
        .unwrap();
        settings.limits
    });
    let Ok(report) = Report::parse(data) else {
        return;
    };
    LIMITS.with(|limits| {
        if report.validate(limits).is_ok() {
            assert!(report.duration_seconds.is_finite() && report.duration_seconds >= 0.0);
            assert!(report.duration_seconds <= limits.max_duration_secs);
        }
    });
});
