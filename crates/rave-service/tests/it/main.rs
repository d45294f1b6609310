//! Telemetry against an OTLP receiver. Telemetry is process-global, so this
//! binary installs it once, with an exporter.

use rave_service::ids::TaskId;
use rave_service::settings::TelemetrySettings;
use test_support::otlp::OtlpReceiver;

#[test]
fn spans_are_exported_over_otlp_http_with_their_task_id() {
    let receiver = OtlpReceiver::start().unwrap();
    let settings = TelemetrySettings {
        otlp_endpoint: Some(receiver.endpoint.clone()),
        log_filter: "error".into(),
        ..TelemetrySettings::default()
    };
    let guard = rave_service::telemetry::init("rave-otlp-test", &settings).unwrap();
    let task_id = TaskId::generate();
    let trace_id = {
        let span = tracing::info_span!("handle_webhook");
        let _entered = span.enter();
        rave_service::telemetry::record_task_id(&task_id);
        rave_service::telemetry::current_trace_id().expect("a span has a trace id")
    };
    guard.force_flush();

    let exports = receiver.exports();
    assert!(!exports.is_empty(), "nothing reached the OTLP endpoint");
    let export = &exports[0];
    assert_eq!(export.path, "/v1/traces");
    assert_eq!(export.content_type, "application/x-protobuf");
    let contains = |needle: &[u8]| export.body.windows(needle.len()).any(|w| w == needle);
    // Protobuf carries strings and the 16-byte trace id verbatim.
    assert!(contains(b"handle_webhook"), "span name exported");
    assert!(
        contains(b"task_id") && contains(task_id.as_str().as_bytes()),
        "task_id attribute exported"
    );
    assert!(
        contains(&hex::decode(trace_id.as_str()).unwrap()),
        "trace id exported"
    );
    assert!(contains(b"rave-otlp-test"), "service.name exported");
}
