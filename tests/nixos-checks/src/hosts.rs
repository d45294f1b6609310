//! The hosts as NixOS assembles them (each host file and what it imports,
//! plus what the flake or the VM test adds), and the definitions that would
//! collide in them: two at the winning priority of an option whose type
//! accepts only equal values (or only one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::modules::{Definition, Module, inline_modules, module_file};
use crate::options::{Merge, OptionFile, OptionTree};

/// Every module of the repository, the option tree and what they define.
#[derive(Debug)]
pub struct Repo {
    pub root: PathBuf,
    pub modules: Vec<Module>,
    pub tree: OptionTree,
    pub list: OptionFile,
    pub definitions: Vec<Definition>,
    /// Paths not in the list, values the reader cannot see through.
    pub problems: Vec<String>,
}

/// The files holding modules: nixos/modules, nixos/hosts, and the modules
/// written inline in flake.nix and tests/rave-vm.nix.
pub fn load(root: &Path) -> Repo {
    let rel = |p: &Path| p.strip_prefix(root).unwrap().display().to_string();
    let mut modules = Vec::new();
    for dir in ["nixos/modules", "nixos/hosts"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "nix"))
            .collect();
        files.sort();
        for file in files {
            modules.push(module_file(&file, &rel(&file)));
        }
    }
    for file in ["flake.nix", "tests/rave-vm.nix"] {
        modules.extend(inline_modules(&root.join(file), file));
    }
    let list = OptionFile::load(&root.join("nixos/options.toml"));
    let mut problems = Vec::new();
    let mut tree = OptionTree::default();
    for info in list.options.iter().cloned() {
        if let Err(e) = tree.insert(info) {
            problems.push(e);
        }
    }
    for module in &modules {
        for mut info in module.declared(&mut problems) {
            info.declared = rel(Path::new(&info.declared));
            if let Err(e) = tree.insert(info) {
                problems.push(e);
            }
        }
    }
    let definitions = modules
        .iter()
        .flat_map(|m| m.definitions(&tree, &mut problems))
        .collect();
    Repo {
        root: root.to_owned(),
        modules,
        tree,
        list,
        definitions,
        problems,
    }
}

/// A host: the modules NixOS combines for it.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub modules: Vec<String>,
    /// Definitions the framework adds (the NixOS test's own).
    pub extra: Vec<Definition>,
}

impl Repo {
    fn module(&self, name: &str) -> &Module {
        self.modules
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no module {name}"))
    }

    /// `root` and everything it imports, transitively.
    pub fn closure(&self, roots: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut todo: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
        while let Some(name) = todo.pop() {
            if out.contains(&name) {
                continue;
            }
            for import in &self.module(&name).imports {
                todo.push(
                    import
                        .strip_prefix(&self.root)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
            out.push(name);
        }
        out.sort();
        out
    }

    /// The flake's `nixosConfigurations` (host file plus the flake's inline
    /// module) and the VM test's nodes (with the test framework's own
    /// `networking.hostName = mkDefault <node name>`, nixpkgs
    /// nixos/lib/testing/network.nix).
    pub fn hosts(&self) -> Vec<Host> {
        let flake_inline: Vec<&str> = self
            .modules
            .iter()
            .filter(|m| m.name.starts_with("flake.nix#modules"))
            .map(|m| m.name.as_str())
            .collect();
        let mut hosts = Vec::new();
        for host in ["p0", "p1-production", "p2-production"] {
            let file = format!("nixos/hosts/{host}.nix");
            let mut roots = vec![file.as_str()];
            roots.extend(&flake_inline);
            hosts.push(Host {
                name: host.to_owned(),
                modules: self.closure(&roots),
                extra: Vec::new(),
            });
        }
        for node in self
            .modules
            .iter()
            .filter(|m| m.name.starts_with("tests/rave-vm.nix#nodes."))
        {
            let node_name = node.name.rsplit('.').next().unwrap().to_owned();
            hosts.push(Host {
                name: format!("vm-test {node_name}"),
                modules: self.closure(&[node.name.as_str()]),
                extra: vec![Definition {
                    path: "networking.hostName".to_owned(),
                    segments: vec!["networking".to_owned(), "hostName".to_owned()],
                    priority: 1000,
                    value: format!("\"{node_name}\""),
                    module: "nixpkgs nixos/lib/testing/network.nix".to_owned(),
                    conditional: false,
                }],
            });
        }
        hosts
    }

    /// The definitions in effect in a host.
    pub fn host_definitions<'a>(&'a self, host: &'a Host) -> Vec<&'a Definition> {
        self.definitions
            .iter()
            .filter(|d| host.modules.contains(&d.module))
            .chain(host.extra.iter())
            .collect()
    }

    /// The value that wins for `path` in `host`: the one definition at the
    /// lowest priority number.
    pub fn effective(&self, host: &Host, path: &str) -> Result<String, String> {
        let defs: Vec<_> = self
            .host_definitions(host)
            .into_iter()
            .filter(|d| d.path == path)
            .collect();
        let best = defs
            .iter()
            .map(|d| d.priority)
            .min()
            .ok_or(format!("{path} is not set"))?;
        let mut winners: Vec<_> = defs
            .iter()
            .filter(|d| d.priority == best)
            .map(|d| d.value.clone())
            .collect();
        winners.dedup();
        match winners.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(format!("{path}: {winners:?} at priority {best}")),
        }
    }

    /// Options defined more than once at their winning priority with values
    /// their type cannot merge, per host (except the paths the list calls
    /// exclusive, with its reason).
    pub fn collisions(&self, host: &Host) -> Vec<String> {
        let mut by_path: BTreeMap<&[String], Vec<&Definition>> = BTreeMap::new();
        for d in self.host_definitions(host) {
            if !d.segments.iter().any(|s| s == "<name>") {
                by_path.entry(d.segments.as_slice()).or_default().push(d);
            }
        }
        let mut out = Vec::new();
        for (path, defs) in by_path {
            let crate::options::Found::Option { info, .. } = self.tree.lookup(path) else {
                continue;
            };
            let path = defs[0].path.as_str();
            if info.path.split('.').count() != defs[0].segments.len()
                || !matches!(info.merge, Merge::Equal | Merge::Unique)
                || self
                    .list
                    .exclusive
                    .iter()
                    .any(|e| e.paths.iter().any(|p| p == path))
            {
                continue;
            }
            let best = defs.iter().map(|d| d.priority).min().unwrap();
            let winners: Vec<_> = defs.iter().filter(|d| d.priority == best).collect();
            let mut values: Vec<_> = winners.iter().map(|d| d.value.as_str()).collect();
            values.sort();
            values.dedup();
            let collide = match info.merge {
                Merge::Unique => winners.len() > 1,
                _ => values.len() > 1,
            };
            if collide {
                let who: Vec<_> = winners
                    .iter()
                    .map(|d| format!("{} = {} in {}", path, d.value, d.module))
                    .collect();
                out.push(format!(
                    "{}: {} at priority {best}: {}",
                    host.name,
                    path,
                    who.join("; ")
                ));
            }
        }
        out
    }
}
