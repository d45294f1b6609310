//! Absolute runbook links. The repository's alerts link to
//! [`PLACEHOLDER_BASE`]`#<alert>`; whoever loads them (`ravectl up`, the
//! NixOS module) replaces the base with one people can open: a wiki or
//! repository URL of docs/runbook.md, or by default the copy written next
//! to the stack.

/// The base of every `runbook_url` in prometheus/rules/rave-alerts.yml.
pub const PLACEHOLDER_BASE: &str = "https://runbooks.rave.invalid/runbook.md";

/// docs/runbook.md, written beside the local stack's config.
pub const RUNBOOK: &str = include_str!("../../../docs/runbook.md");

/// `rules` with every runbook link under `base` (no trailing `#`).
pub fn with_base(rules: &str, base: &str) -> String {
    rules.replace(
        &format!("runbook_url: {PLACEHOLDER_BASE}#"),
        &format!("runbook_url: {}#", base.trim_end_matches('#')),
    )
}

/// A `file://` URL of a local path (made absolute).
pub fn file_url(path: &std::path::Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    format!("file://{}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_link_gets_the_base_and_keeps_its_anchor() {
        let rules = "      runbook_url: https://runbooks.rave.invalid/runbook.md#ravetargetdown\n";
        assert_eq!(
            with_base(
                rules,
                "https://git.example.org/rave/-/blob/main/docs/runbook.md"
            ),
            "      runbook_url: https://git.example.org/rave/-/blob/main/docs/runbook.md#ravetargetdown\n"
        );
        assert_eq!(
            with_base(rules, "file:///var/lib/rave/docs/runbook.md#"),
            "      runbook_url: file:///var/lib/rave/docs/runbook.md#ravetargetdown\n"
        );
    }
}
