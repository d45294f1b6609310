//! Grafana's part of the local stack. Grafana is not packaged for Debian,
//! so `up` does not run it; it writes the provisioning a Grafana of your own
//! loads (`GF_PATHS_PROVISIONING=STATE_DIR/grafana/provisioning`): the
//! datasources from grafana/datasources.json, the one definition the NixOS
//! hosts use too, and the three dashboards.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The three dashboards, as shipped.
pub const DASHBOARDS: [(&str, &str); 3] = [
    (
        "project-health",
        include_str!("../../../grafana/dashboards/project-health.json"),
    ),
    (
        "agent-performance",
        include_str!("../../../grafana/dashboards/agent-performance.json"),
    ),
    (
        "system-health",
        include_str!("../../../grafana/dashboards/system-health.json"),
    ),
];

const DATASOURCES: &str = include_str!("../../../grafana/datasources.json");

/// The datasources for a stack whose Prometheus is at `prometheus_url`. The
/// local stack has no Tempo (`ravectl trace` reads its spans), so the Tempo
/// datasource and the exemplars' link to it are left out.
pub fn local_datasources(prometheus_url: &str, scrape_interval: &str) -> anyhow::Result<Value> {
    let text = DATASOURCES
        .replace("@PROMETHEUS_URL@", prometheus_url)
        .replace("@SCRAPE_INTERVAL@", scrape_interval);
    let mut provisioned: Value = serde_json::from_str(&text)?;
    let all = provisioned["datasources"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("grafana/datasources.json has no datasources"))?;
    all.retain(|d| d["type"] != "tempo");
    for datasource in all.iter_mut() {
        if let Some(json) = datasource["jsonData"].as_object_mut() {
            json.remove("exemplarTraceIdDestinations");
        }
    }
    Ok(provisioned)
}

/// Writes `dir/provisioning/{datasources,dashboards}/rave.yaml` (JSON is
/// YAML) and the dashboards to `dir/dashboards/`; returns the provisioning
/// directory.
pub fn write_provisioning(
    dir: &Path,
    prometheus_url: &str,
    scrape_interval: &str,
) -> anyhow::Result<PathBuf> {
    let provisioning = dir.join("provisioning");
    let dashboards = dir.join("dashboards");
    for sub in ["datasources", "dashboards"] {
        std::fs::create_dir_all(provisioning.join(sub))?;
    }
    std::fs::create_dir_all(&dashboards)?;
    for (name, json) in DASHBOARDS {
        std::fs::write(dashboards.join(format!("{name}.json")), json)?;
    }
    std::fs::write(
        provisioning.join("datasources/rave.yaml"),
        serde_json::to_string_pretty(&local_datasources(prometheus_url, scrape_interval)?)?,
    )?;
    let provider = serde_json::json!({
        "apiVersion": 1,
        "providers": [{
            "name": "rave", "orgId": 1, "folder": "RAVE", "folderUid": "rave",
            "type": "file", "disableDeletion": true, "allowUiUpdates": false,
            "options": { "path": dashboards },
        }],
    });
    std::fs::write(
        provisioning.join("dashboards/rave.yaml"),
        serde_json::to_string_pretty(&provider)?,
    )?;
    Ok(provisioning)
}
