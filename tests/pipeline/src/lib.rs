//! No library: the checks are the integration tests in `tests/it`.
