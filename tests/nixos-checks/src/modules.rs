//! RAVE's NixOS modules read with a real Nix parser (rnix): which options
//! each declares, which it sets, at which priority and under which
//! condition, and what it imports. Nothing is evaluated: a value is kept as
//! its source text, and a definition under `mkIf` is marked conditional.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rnix::ast::{self, HasEntry};
use rowan::ast::AstNode;

use crate::options::{Found, OptionInfo, OptionTree, merge_of};

/// One module: a file, or a module written inline in another file.
#[derive(Clone, Debug)]
pub struct Module {
    /// The file, with `#attr` for an inline module (`tests/rave-vm.nix#nodes.server`).
    pub name: String,
    pub file: PathBuf,
    pub imports: Vec<PathBuf>,
    body: ast::Expr,
    scope: Scope,
}

type Scope = Vec<HashMap<String, ast::Expr>>;

/// One definition of an option.
#[derive(Clone, Debug)]
pub struct Definition {
    /// The path, a name with a dot in it quoted as Nix writes it.
    pub path: String,
    pub segments: Vec<String>,
    pub priority: u32,
    /// The value's source text, whitespace collapsed.
    pub value: String,
    pub module: String,
    pub conditional: bool,
}

/// The priorities of nixpkgs' `lib/modules.nix`.
const PLAIN: u32 = 100;

/// Parses a file; a parse error is reported with the file's name.
pub fn parse(file: &Path) -> ast::Expr {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let parsed = rnix::Root::parse(&text);
    assert!(
        parsed.errors().is_empty(),
        "{}: {:?}",
        file.display(),
        parsed.errors()
    );
    parsed
        .tree()
        .expr()
        .expect("a Nix file holds one expression")
}

/// A module file: `{ args }: let ... in { ... }` or a plain attribute set.
pub fn module_file(file: &Path, name: &str) -> Module {
    module_of(parse(file), file, name)
}

/// A module written as an expression (inline in a flake or a test).
pub fn module_of(expr: ast::Expr, file: &Path, name: &str) -> Module {
    let mut scope = Scope::new();
    let mut body = expr;
    loop {
        body = match body {
            ast::Expr::Lambda(l) => l.body().unwrap(),
            ast::Expr::Paren(p) => p.expr().unwrap(),
            ast::Expr::LetIn(l) => {
                scope.push(bindings(&l));
                l.body().unwrap()
            }
            other => break body = other,
        };
    }
    let dir = file.parent().unwrap();
    let imports = match top_value(&body, "imports") {
        Some(ast::Expr::List(list)) => list
            .items()
            .filter_map(|item| match item {
                ast::Expr::PathRel(p) => Some(normalize(&dir.join(p.syntax().text().to_string()))),
                // A module bound in the same file's `let` (see inline_modules).
                ast::Expr::Ident(i) => Some(PathBuf::from(format!(
                    "{}#{}",
                    file.display(),
                    i.syntax().text()
                ))),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Module {
        name: name.to_owned(),
        file: file.to_owned(),
        imports,
        body,
        scope,
    }
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// The modules a flake-like file writes inline: the items of every
/// `modules = [ ... ]` list and the values of `nodes.<name>` (a NixOS test)
/// that are attribute sets or functions, and `nixosModules.<name>` lambdas.
pub fn inline_modules(file: &Path, rel: &str) -> Vec<Module> {
    let root = parse(file);
    // The file's own `let`: a module may be bound there and used by name.
    let mut lets = HashMap::new();
    let mut top = root.clone();
    while let ast::Expr::Lambda(l) = &top {
        top = l.body().unwrap();
    }
    if let ast::Expr::LetIn(l) = &top {
        lets = bindings(l);
    }
    let mut out = Vec::new();
    let mut named = Vec::new();
    for node in root.syntax().descendants() {
        let Some(apv) = ast::AttrpathValue::cast(node) else {
            continue;
        };
        let path = attr_names(&apv.attrpath().unwrap());
        let Some(value) = apv.value() else { continue };
        let first = path.first().map(String::as_str);
        match (first, path.last().map(String::as_str), value) {
            (_, Some("modules"), ast::Expr::List(list)) => {
                for (i, item) in list.items().enumerate() {
                    if matches!(item, ast::Expr::AttrSet(_) | ast::Expr::Lambda(_)) {
                        out.push(module_of(item, file, &format!("{rel}#modules[{i}]")));
                    }
                }
            }
            (_, Some("imports"), ast::Expr::List(list)) => {
                named.extend(list.items().filter_map(|i| match i {
                    ast::Expr::Ident(i) => Some(i.syntax().text().to_string()),
                    _ => None,
                }));
            }
            (Some("nodes"), _, value) if path.len() == 2 => {
                let value = match &value {
                    ast::Expr::Ident(i) => lets
                        .get(&i.syntax().text().to_string())
                        .cloned()
                        .unwrap_or(value),
                    _ => value,
                };
                out.push(module_of(value, file, &format!("{rel}#{}", path.join("."))));
            }
            (Some("nixosModules"), _, value @ ast::Expr::Lambda(_)) => {
                out.push(module_of(value, file, &format!("{rel}#{}", path.join("."))));
            }
            _ => {}
        }
    }
    named.sort();
    named.dedup();
    for name in named {
        if let Some(value) = lets.get(&name) {
            out.push(module_of(value.clone(), file, &format!("{rel}#{name}")));
        }
    }
    out
}

fn bindings(node: &impl HasEntry) -> HashMap<String, ast::Expr> {
    let mut out = HashMap::new();
    for apv in node.attrpath_values() {
        let names = attr_names(&apv.attrpath().unwrap());
        if names.len() == 1
            && let Some(v) = apv.value()
        {
            out.insert(names[0].clone(), v);
        }
    }
    out
}

/// An attribute path's names; an interpolated one is `<name>`.
fn attr_names(path: &ast::Attrpath) -> Vec<String> {
    path.attrs()
        .map(|attr| match attr {
            ast::Attr::Ident(i) => i.syntax().text().to_string(),
            ast::Attr::Str(s) => {
                let parts = s.normalized_parts();
                match parts.as_slice() {
                    [ast::InterpolPart::Literal(l)] => l.clone(),
                    [] => String::new(),
                    _ => "<name>".to_owned(),
                }
            }
            ast::Attr::Dynamic(_) => "<name>".to_owned(),
        })
        .collect()
}

/// The entries of a module section: `options.a.b = v` is (["a", "b"], v)
/// of `options`.
fn section(body: &ast::Expr, name: &str) -> Vec<(Vec<String>, ast::Expr)> {
    let ast::Expr::AttrSet(set) = body else {
        return Vec::new();
    };
    set.attrpath_values()
        .filter_map(|apv| {
            let names = attr_names(&apv.attrpath()?);
            (names.first().map(String::as_str) == Some(name))
                .then(|| Some((names[1..].to_vec(), apv.value()?)))?
        })
        .collect()
}

/// The value bound to a top-level name of an attribute set.
fn top_value(body: &ast::Expr, name: &str) -> Option<ast::Expr> {
    let ast::Expr::AttrSet(set) = body else {
        return None;
    };
    set.attrpath_values().find_map(|apv| {
        let names = attr_names(&apv.attrpath()?);
        (names == [name]).then(|| apv.value()).flatten()
    })
}

/// The function a call applies and its arguments, `lib.` stripped:
/// `lib.mkOverride 900 "x"` is ("mkOverride", [900, "x"]).
fn call(expr: &ast::Expr) -> Option<(String, Vec<ast::Expr>)> {
    let mut args = Vec::new();
    let mut head = expr.clone();
    while let ast::Expr::Apply(a) = &head {
        args.push(a.argument()?);
        head = a.lambda()?;
    }
    if args.is_empty() {
        return None;
    }
    args.reverse();
    let name = head.syntax().text().to_string();
    let name = name.strip_prefix("lib.").unwrap_or(&name).to_owned();
    Some((name, args))
}

fn unparen(expr: ast::Expr) -> ast::Expr {
    match expr {
        ast::Expr::Paren(p) => unparen(p.expr().unwrap()),
        e => e,
    }
}

/// An option path as the NixOS manual prints it.
pub fn show(path: &[String]) -> String {
    path.iter()
        .map(|s| {
            if s.contains('.') {
                format!("\"{s}\"")
            } else {
                s.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn lookup<'s>(scope: &'s Scope, name: &str) -> Option<&'s ast::Expr> {
    scope.iter().rev().find_map(|s| s.get(name))
}

impl Module {
    fn has_explicit_sections(&self) -> bool {
        !section(&self.body, "config").is_empty() || !section(&self.body, "options").is_empty()
    }

    /// The options this module declares (its `options` section).
    pub fn declared(&self, problems: &mut Vec<String>) -> Vec<OptionInfo> {
        let mut out = Vec::new();
        for (mut path, options) in section(&self.body, "options") {
            self.declare(&mut path, options, &mut out, problems);
        }
        out
    }

    fn declare(
        &self,
        path: &mut Vec<String>,
        expr: ast::Expr,
        out: &mut Vec<OptionInfo>,
        problems: &mut Vec<String>,
    ) {
        let expr = unparen(expr);
        if let Some((name, args)) = call(&expr) {
            match name.as_str() {
                "mkOption" => return self.declare_leaf(path, args.first().cloned(), out, problems),
                "mkEnableOption" => {
                    return out.push(self.info(path, "types.bool".to_owned(), false));
                }
                "mkPackageOption" => {
                    return out.push(self.info(path, "types.package".to_owned(), false));
                }
                _ => {}
            }
            // A call of a function of this module's own `let`.
            if let Some(ast::Expr::Lambda(l)) = lookup(&self.scope, &name) {
                let mut body = l.body().unwrap();
                while let ast::Expr::Lambda(inner) = body {
                    body = inner.body().unwrap();
                }
                return self.declare(path, body, out, problems);
            }
        }
        match expr {
            ast::Expr::AttrSet(set) => {
                for apv in set.attrpath_values() {
                    let names = attr_names(&apv.attrpath().unwrap());
                    let depth = path.len();
                    path.extend(names);
                    self.declare(path, apv.value().unwrap(), out, problems);
                    path.truncate(depth);
                }
            }
            // `mkEnableOption ".." // { default = ..; }` is one option.
            ast::Expr::BinOp(op)
                if call(&unparen(op.lhs().unwrap())).is_some_and(|(n, _)| n.starts_with("mk")) =>
            {
                self.declare(path, op.lhs().unwrap(), out, problems)
            }
            ast::Expr::BinOp(op) => {
                self.declare(path, op.lhs().unwrap(), out, problems);
                self.declare(path, op.rhs().unwrap(), out, problems);
            }
            other => problems.push(format!(
                "{}: cannot read the option declared at {}: `{}`",
                self.name,
                path.join("."),
                squash(&other.syntax().text().to_string())
            )),
        }
    }

    fn info(&self, path: &[String], ty: String, free: bool) -> OptionInfo {
        OptionInfo {
            path: path.join("."),
            merge: merge_of(&ty),
            ty,
            declared: self.file.display().to_string(),
            free,
            source: "rave".to_owned(),
            read_at: None,
        }
    }

    fn declare_leaf(
        &self,
        path: &mut Vec<String>,
        arg: Option<ast::Expr>,
        out: &mut Vec<OptionInfo>,
        problems: &mut Vec<String>,
    ) {
        let Some(ast::Expr::AttrSet(set)) = arg.map(unparen) else {
            return problems.push(format!(
                "{}: mkOption at {} without an attribute set",
                self.name,
                path.join(".")
            ));
        };
        let Some(ty) = top_value(&ast::Expr::AttrSet(set), "type") else {
            return problems.push(format!("{}: {} has no type", self.name, path.join(".")));
        };
        let ty_text = squash(&ty.syntax().text().to_string());
        // A submodule's own options are options too; freeform ones are data.
        let mut submodule = None;
        for node in ty.syntax().descendants() {
            if let Some(ast::Expr::Apply(a)) = ast::Expr::cast(node)
                && a.lambda()
                    .is_some_and(|f| f.syntax().text().to_string().ends_with("submodule"))
            {
                submodule = a.argument().map(unparen);
                break;
            }
        }
        // The text test is for a type without a submodule: a submodule's
        // own options may hold `attrsOf types.str` without making it data.
        let free = match &submodule {
            Some(s) => top_value(s, "freeformType").is_some(),
            None => ty_text.contains("attrsOf types.str") || ty_text.contains("attrsOf secretPath"),
        };
        out.push(self.info(path, ty_text.clone(), free));
        if let Some(options) = submodule.as_ref().and_then(|s| top_value(s, "options")) {
            let depth = path.len();
            if ty_text.starts_with("types.attrsOf") || ty_text.starts_with("attrsOf") {
                path.push("<name>".to_owned());
            }
            self.declare(path, options, out, problems);
            path.truncate(depth);
        }
    }

    /// Every option this module sets, walked down to the options `tree` names.
    pub fn definitions(&self, tree: &OptionTree, problems: &mut Vec<String>) -> Vec<Definition> {
        let mut out = Vec::new();
        let mut walk = Walk {
            module: self,
            tree,
            out: &mut out,
            problems,
        };
        if self.has_explicit_sections() {
            for (names, config) in section(&self.body, "config") {
                walk.path(&mut Vec::new(), &names, config, PLAIN, false);
            }
        } else if let ast::Expr::AttrSet(set) = &self.body {
            for apv in set.attrpath_values() {
                let names = attr_names(&apv.attrpath().unwrap());
                if ["imports", "_file", "key", "disabledModules", "meta"]
                    .contains(&names[0].as_str())
                {
                    continue;
                }
                walk.path(&mut Vec::new(), &names, apv.value().unwrap(), PLAIN, false);
            }
        }
        out
    }
}

struct Walk<'a> {
    module: &'a Module,
    tree: &'a OptionTree,
    out: &'a mut Vec<Definition>,
    problems: &'a mut Vec<String>,
}

impl Walk<'_> {
    /// Walks `names` down from `path`, then the value.
    fn path(
        &mut self,
        path: &mut Vec<String>,
        names: &[String],
        value: ast::Expr,
        prio: u32,
        cond: bool,
    ) {
        let depth = path.len();
        for (i, name) in names.iter().enumerate() {
            path.push(name.clone());
            match self.tree.lookup(path) {
                Found::Option {
                    children: false, ..
                } => {
                    // The rest of the names are inside the option's value.
                    let rest = &names[i + 1..];
                    let text = if rest.is_empty() {
                        None
                    } else {
                        Some(format!("{} = {}", rest.join("."), value.syntax().text()))
                    };
                    self.leaf(path, value, prio, cond, text);
                    path.truncate(depth);
                    return;
                }
                Found::Unknown => {
                    path.extend(names[i + 1..].iter().cloned());
                    self.unknown(path, value);
                    path.truncate(depth);
                    return;
                }
                _ => {}
            }
        }
        self.value(path, value, prio, cond);
        path.truncate(depth);
    }

    /// A value at `path`, which is a prefix of options or an option with
    /// options below it.
    fn value(&mut self, path: &mut Vec<String>, expr: ast::Expr, prio: u32, cond: bool) {
        let expr = unparen(expr);
        if let Some((prio, cond, inner)) = self.modifier(&expr, prio, cond) {
            return inner
                .into_iter()
                .for_each(|e| self.value(path, e, prio, cond));
        }
        match expr {
            ast::Expr::AttrSet(set) => {
                for apv in set.attrpath_values() {
                    let names = attr_names(&apv.attrpath().unwrap());
                    self.path(path, &names, apv.value().unwrap(), prio, cond);
                }
                for inherit in set.inherits() {
                    for attr in inherit.attrs() {
                        path.push(attr.syntax().text().to_string());
                        if let Found::Unknown = self.tree.lookup(path) {
                            self.problems.push(format!(
                                "{}: inherits {}, not an option",
                                self.module.name,
                                path.join(".")
                            ));
                        }
                        path.pop();
                    }
                }
            }
            // The bindings serve the values, which are read as text.
            ast::Expr::LetIn(l) => self.value(path, l.body().unwrap(), prio, cond),
            ast::Expr::BinOp(op) if op.operator() == Some(ast::BinOpKind::Update) => {
                self.value(path, op.lhs().unwrap(), prio, cond);
                self.value(path, op.rhs().unwrap(), prio, cond);
            }
            ast::Expr::Ident(ref i)
                if lookup(&self.module.scope, &i.syntax().text().to_string()).is_some() =>
            {
                let bound = lookup(&self.module.scope, &i.syntax().text().to_string())
                    .unwrap()
                    .clone();
                self.value(path, bound, prio, cond)
            }
            other => match self.tree.lookup(path) {
                // A whole attrsOf option given at once (`lib.listToAttrs ...`).
                Found::Option { .. } => self.leaf(path, other, prio, cond, None),
                _ => self.problems.push(format!(
                    "{}: cannot see which options `{}` sets under {}",
                    self.module.name,
                    squash(&other.syntax().text().to_string()),
                    path.join(".")
                )),
            },
        }
    }

    /// Below a path no option names: reports each leaf it sets.
    fn unknown(&mut self, path: &mut Vec<String>, expr: ast::Expr) {
        let expr = unparen(expr);
        if let Some((_, _, inner)) = self.modifier(&expr, PLAIN, false) {
            return inner.into_iter().for_each(|e| self.unknown(path, e));
        }
        if let ast::Expr::AttrSet(set) = expr {
            for apv in set.attrpath_values() {
                let depth = path.len();
                path.extend(attr_names(&apv.attrpath().unwrap()));
                self.unknown(path, apv.value().unwrap());
                path.truncate(depth);
            }
        } else {
            self.problems.push(format!(
                "{}: sets {}, which is not in nixos/options.toml nor declared by a RAVE module",
                self.module.name,
                path.join(".")
            ));
        }
    }

    /// `mkIf`, `mkMerge`, `optionalAttrs`, `if`, and the priority setters:
    /// the priority and condition they give, and the values they wrap.
    fn modifier(
        &self,
        expr: &ast::Expr,
        prio: u32,
        cond: bool,
    ) -> Option<(u32, bool, Vec<ast::Expr>)> {
        if let ast::Expr::IfElse(i) = expr {
            return Some((prio, true, vec![i.body()?, i.else_body()?]));
        }
        let (name, args) = call(expr)?;
        let last = || args.last().cloned().into_iter().collect::<Vec<_>>();
        Some(match (name.as_str(), args.len()) {
            ("mkIf" | "optionalAttrs", 2) => (prio, true, last()),
            ("mkMerge", 1) => match unparen(args[0].clone()) {
                ast::Expr::List(l) => (prio, cond, l.items().collect()),
                _ => return None,
            },
            ("mkDefault", 1) => (1000, cond, last()),
            ("mkForce", 1) => (50, cond, last()),
            ("mkOptionDefault", 1) => (1500, cond, last()),
            ("mkVMOverride", 1) => (10, cond, last()),
            ("mkOverride", 2) => {
                let n = args[0].syntax().text().to_string().parse().ok()?;
                (n, cond, last())
            }
            ("mkBefore" | "mkAfter", 1) => (prio, cond, last()),
            _ => return None,
        })
    }

    fn leaf(
        &mut self,
        path: &[String],
        expr: ast::Expr,
        prio: u32,
        cond: bool,
        text: Option<String>,
    ) {
        let expr = unparen(expr);
        if text.is_none()
            && let Some((prio, cond, inner)) = self.modifier(&expr, prio, cond)
        {
            return inner
                .into_iter()
                .for_each(|e| self.leaf(path, e, prio, cond, None));
        }
        self.out.push(Definition {
            path: show(path),
            segments: path.to_vec(),
            priority: prio,
            value: squash(&text.unwrap_or_else(|| expr.syntax().text().to_string())),
            module: self.module.name.clone(),
            conditional: cond,
        });
    }
}
