//! Replicas: each RAVE service's replicas, their names and ports, and whom
//! each calls first.

use crate::cli::UpArgs;

/// RAVE's services in start order: each one's callee before it.
pub(super) const SERVICES: [&str; 4] =
    ["task-dispatcher", "agent-reporter", "dedup-store", "ingest"];

/// Every replica of every service, by service.
pub(super) fn all(args: &UpArgs) -> anyhow::Result<BTreeMap<&'static str, Vec<Replica>>> {
    let mut replicas = BTreeMap::new();
    for service in SERVICES {
        replicas.insert(service, replicas_of(args, service)?);
    }
    Ok(replicas)
}

/// One replica of a RAVE service.
#[derive(Debug, Clone)]
pub struct Replica {
    pub service: &'static str,
    /// 1-based.
    pub index: u16,
    /// `ingest` with one replica; `ingest@1`, `ingest@2`, ... with several.
    pub name: String,
    pub port: u16,
}

impl Replica {
    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The port `--<service>-port` gives replica 1.
fn base_port(args: &UpArgs, service: &str) -> u16 {
    match service {
        "ingest" => args.ingest_port,
        "dedup-store" => args.store_port,
        "task-dispatcher" => args.dispatcher_port,
        _ => args.reporter_port,
    }
}

/// Every replica of `service`: replica k on its port + (k - 1) × step.
pub fn replicas_of(args: &UpArgs, service: &'static str) -> anyhow::Result<Vec<Replica>> {
    (1..=args.replicas)
        .map(|index| {
            let port = u32::from(base_port(args, service))
                + u32::from(index - 1) * u32::from(args.replica_port_step);
            let port = u16::try_from(port).map_err(|_| {
                anyhow::anyhow!(
                    "replica {index} of {service} would need port {port}; lower --replica-port-step"
                )
            })?;
            let name = if args.replicas == 1 {
                service.to_owned()
            } else {
                format!("{service}@{index}")
            };
            Ok(Replica {
                service,
                index,
                name,
                port,
            })
        })
        .collect()
}

/// `"http://127.0.0.1:p", ...` for every replica but `own`, starting after
/// it, so each replica falls back to a different one first.
pub(super) fn fallbacks(all: &[Replica], own: u16) -> String {
    let n = all.len();
    (1..n)
        .map(|step| &all[(usize::from(own) - 1 + step) % n])
        .map(|r| format!("\"{}\"", r.url()))
        .collect::<Vec<_>>()
        .join(", ")
}
use std::collections::BTreeMap;
