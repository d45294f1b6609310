# The repository's Prometheus rules as a host loads them: the alerts'
# runbook links moved from the placeholder base (ravectl's
# runbook::PLACEHOLDER_BASE) to `runbookBaseUrl`. Plain Nix; the README's
# test command evaluates it and checks the result with promtool.
{ runbookBaseUrl }:
let
  placeholder = "https://runbooks.rave.invalid/runbook.md";
  base = builtins.head (builtins.match "([^#]*)#*" runbookBaseUrl);
in
{
  alerts = builtins.replaceStrings
    [ "runbook_url: ${placeholder}#" ]
    [ "runbook_url: ${base}#" ]
    (builtins.readFile ../../prometheus/rules/rave-alerts.yml);
  recording = builtins.readFile ../../prometheus/rules/rave-recording.yml;
}
