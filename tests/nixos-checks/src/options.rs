//! The NixOS options RAVE's modules may set: nixpkgs' and sops-nix's from
//! `nixos/options.toml` (each read from its declaring file), RAVE's own from
//! the `options` its modules declare. Paths use `<name>` for the keys of an
//! `attrsOf` option, as the NixOS manual writes them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// How definitions of one option at the same priority combine: what the
/// option's type does with them in nixpkgs' `lib/types.nix`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Merge {
    /// `mergeEqualOption` (str, bool, int, enum, port, strMatching, path):
    /// definitions must agree.
    Equal,
    /// `mergeOneOption` (package, raw): only one definition is allowed.
    Unique,
    /// listOf: concatenated.
    List,
    /// attrsOf, attrs, submodule, freeform settings: merged key by key.
    Attrs,
    /// lines, commas, separatedString: joined.
    Lines,
}

/// One option and what declares it.
#[derive(Clone, Debug, Deserialize)]
pub struct OptionInfo {
    pub path: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// The file that declares it, relative to its source's root.
    pub declared: String,
    pub merge: Merge,
    /// Keys below it are data (freeform settings, attrsOf plain values,
    /// systemd's unit options), not options.
    #[serde(default)]
    pub free: bool,
    /// "nixpkgs", "sops-nix" or "rave".
    #[serde(default = "nixpkgs")]
    pub source: String,
    /// The commit of the source copy the entry was checked against.
    #[serde(default)]
    pub read_at: Option<String>,
}

fn nixpkgs() -> String {
    "nixpkgs".to_owned()
}

/// Option paths known to be set in mutually exclusive conditions, which a
/// reading of the source cannot prove apart.
#[derive(Clone, Debug, Deserialize)]
pub struct Exclusive {
    pub paths: Vec<String>,
    pub because: String,
}

/// `nixos/options.toml`.
#[derive(Clone, Debug, Deserialize)]
pub struct OptionFile {
    /// The nixpkgs revision the entries were read at.
    pub nixpkgs_rev: String,
    #[serde(rename = "option")]
    pub options: Vec<OptionInfo>,
    #[serde(default)]
    pub exclusive: Vec<Exclusive>,
}

impl OptionFile {
    pub fn load(path: &Path) -> Self {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// What a path names in the option tree.
#[derive(Debug)]
pub enum Found<'a> {
    /// An option; `children` when options are declared below it (a
    /// submodule, or an attrsOf submodule).
    Option {
        info: &'a OptionInfo,
        children: bool,
    },
    /// Part of some option's path.
    Prefix,
    Unknown,
}

#[derive(Default, Debug)]
struct Node {
    children: BTreeMap<String, Node>,
    option: Option<OptionInfo>,
}

/// The options as a tree, to walk definitions down.
#[derive(Default, Debug)]
pub struct OptionTree {
    root: Node,
}

impl OptionTree {
    /// Adds an option; a second declaration of a path is an error.
    pub fn insert(&mut self, info: OptionInfo) -> Result<(), String> {
        let mut node = &mut self.root;
        for seg in info.path.split('.') {
            node = node.children.entry(seg.to_owned()).or_default();
        }
        if let Some(old) = &node.option {
            return Err(format!(
                "{} is declared twice: in {} and in {}",
                info.path, old.declared, info.declared
            ));
        }
        node.option = Some(info);
        Ok(())
    }

    pub fn lookup(&self, path: &[String]) -> Found<'_> {
        let mut node = &self.root;
        for (i, seg) in path.iter().enumerate() {
            // Above a free option, everything is data.
            if let Some(info) = &node.option
                && info.free
                && i > 0
            {
                return Found::Option {
                    info,
                    children: false,
                };
            }
            let next = if seg == "<name>" {
                node.children.get("<name>")
            } else {
                node.children
                    .get(seg)
                    .or_else(|| node.children.get("<name>"))
            };
            match next {
                Some(n) => node = n,
                None => return Found::Unknown,
            }
        }
        match &node.option {
            Some(info) => Found::Option {
                info,
                children: !info.free && !node.children.is_empty(),
            },
            None if node.children.is_empty() => Found::Unknown,
            None => Found::Prefix,
        }
    }

    /// Every option, in path order.
    pub fn all(&self) -> Vec<&OptionInfo> {
        fn collect<'a>(node: &'a Node, out: &mut Vec<&'a OptionInfo>) {
            if let Some(o) = &node.option {
                out.push(o);
            }
            for child in node.children.values() {
                collect(child, out);
            }
        }
        let mut out = Vec::new();
        collect(&self.root, &mut out);
        out
    }
}

/// The merge behaviour of a type written as RAVE's modules write types.
pub fn merge_of(ty: &str) -> Merge {
    let ty = ty
        .trim_start_matches("types.")
        .trim_start_matches("lib.types.");
    if ty.starts_with("listOf") {
        Merge::List
    } else if ty.starts_with("attrsOf")
        || ty.starts_with("lazyAttrsOf")
        || ty.starts_with("submodule")
    {
        Merge::Attrs
    } else if ty.starts_with("lines") || ty.starts_with("commas") {
        Merge::Lines
    } else if ty.starts_with("package") || ty.starts_with("raw") {
        Merge::Unique
    } else {
        Merge::Equal
    }
}
