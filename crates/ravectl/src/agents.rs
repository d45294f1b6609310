//! `ravectl agents create`: a new agent token, printed once.

use std::io::Write as _;

use crate::cli::AgentsCreateArgs;

fn sha256_hex(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    hex::encode(digest.as_ref())
}

/// The `[[agents]]` entry for the dispatcher's config.
pub fn entry(name: &str, token: &str, kinds: &[String]) -> String {
    let kinds: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
    format!(
        "[[agents]]\nname = {name:?}\ntoken_sha256 = \"{}\"\nkinds = [{}]\n",
        sha256_hex(token),
        kinds.join(", ")
    )
}

pub fn run(args: AgentsCreateArgs) -> anyhow::Result<i32> {
    rave_service::ids::AgentId::parse(args.name.clone())?;
    for kind in &args.kinds {
        rave_service::ids::TaskKind::parse(kind.clone())?;
    }
    let token = format!("rave_agent_{}", crate::secrets::hex_token(24));
    let entry = entry(&args.name, &token, &args.kinds);
    if args.state_dir.join("config").exists() {
        let agents_file = args.state_dir.join("config/agents.toml");
        let existing = std::fs::read_to_string(&agents_file).unwrap_or_default();
        anyhow::ensure!(
            !existing.contains(&format!("name = {:?}", args.name)),
            "an agent named {} exists already in {}",
            args.name,
            agents_file.display()
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&agents_file)?
            .write_all(format!("\n{entry}").as_bytes())?;
        let token_file = args
            .state_dir
            .join(format!("secrets/agent-{}.token", args.name));
        crate::secrets::ensure(&token_file, || token.clone())?;
        println!("added agent {} to {}", args.name, agents_file.display());
        println!("token saved in {} (mode 0600)", token_file.display());
        println!("run `ravectl reload` for a running stack to load it (no restart)");
    } else {
        println!("add this to task-dispatcher's settings (or its agents_file):\n\n{entry}");
    }
    println!("\nthe agent's token, shown this once:\n  {token}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_holds_the_digest_never_the_token() {
        let e = entry("bot", "secret-token", &["review".into()]);
        assert!(!e.contains("secret-token"));
        assert!(e.contains(&sha256_hex("secret-token")));
        assert!(e.contains("kinds = [\"review\"]"));
    }
}
