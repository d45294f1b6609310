//! Whole-pipeline tests live in `tests/it`; telemetry is process-global, so
//! they need a test binary of their own.
