//! The layout's rules, checked from the sources: the module import graph of `src/` has no
//! circle, and the lower layers import nothing above them.
//!
//! A module is a file (`engine/read.rs` is `engine::read`; a folder's `mod.rs` is the folder).
//! An import is a `crate::…` or `super::…` path anywhere in a file (tests included, comments
//! not), resolved to the longest module it names. Importing through a re-export counts as
//! importing the re-exporting module (`lib.rs`, a folder's `mod.rs`), so a circle through one
//! shows: inside the crate, import from the defining module.
//!
//! The layers, top to bottom: `net/`; the public face (the files at the root); `fanout/`;
//! `engine/`; `store/`; then `error`, `stats`, `validators`, `source` (the source traits) and
//! `sync/`. `store/` imports nothing
//! above it, `engine/` neither the face, nor `fanout/`, nor `net/`; neither names a public handle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every module of `src/` (but the binaries) and its source, comments removed.
fn modules() -> BTreeMap<Module, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Module = rel.iter().map(|p| p.to_string_lossy().into()).collect();
            if module.last().is_some_and(|l| l == "mod" || l == "lib") {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            found.insert(module, strip_comments(&text));
        }
    }
    found
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How a path starts.
#[derive(Clone, Copy, PartialEq)]
enum Root {
    /// `crate::`
    Crate,
    /// `super::` of the file.
    Super,
    /// `super::` inside an inline module (`mod tests { use super::*; }`): the file itself.
    Inline,
    /// A child module named from a folder's `mod.rs` or `lib.rs` (`pub use buffer::X`).
    Child,
}

/// Where the file's first inline module (`mod tests {`) starts.
fn inline_start(text: &str) -> usize {
    text.match_indices("mod ")
        .find(|(at, _)| {
            let rest = &text[at + 4..];
            let name = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(0);
            name > 0 && rest[name..].trim_start().starts_with('{')
        })
        .map_or(text.len(), |(at, _)| at)
}

/// The paths a file names: `crate::a::b` and `super::a`, groups `crate::a::{b, c::d}` expanded,
/// and, in a folder's `mod.rs` or `lib.rs` (`children`), the children it re-exports from.
fn paths(text: &str, children: &[String]) -> Vec<(Root, Vec<String>)> {
    let mut out = Vec::new();
    let inline = inline_start(text);
    let mut roots: Vec<(String, Root)> = vec![
        ("crate::".into(), Root::Crate),
        ("super::".into(), Root::Super),
    ];
    for child in children {
        roots.push((format!("use {child}::"), Root::Child));
        roots.push((format!("use self::{child}::"), Root::Child));
    }
    for (root, kind) in &roots {
        let mut rest = text;
        while let Some(at) = rest.find(root.as_str()) {
            let before = rest[..at].chars().last();
            let offset = text.len() - rest.len() + at;
            let kind = if *kind == Root::Super && offset > inline {
                Root::Inline
            } else {
                *kind
            };
            rest = &rest[at + root.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut base = Vec::new();
            let mut tail = rest;
            loop {
                let len = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                if len == 0 {
                    break;
                }
                base.push(tail[..len].to_string());
                tail = &tail[len..];
                match tail.strip_prefix("::") {
                    Some(next) => tail = next,
                    None => break,
                }
            }
            if kind == Root::Child {
                let child = root.trim_end_matches("::").rsplit([' ', ':']).next();
                base.insert(0, child.unwrap_or_default().to_string());
            }
            if tail.starts_with('{') {
                let group = &tail[1..tail.find('}').unwrap_or(tail.len())];
                for item in group.split(',') {
                    let item = item.split(" as ").next().unwrap_or("").trim();
                    let mut path = base.clone();
                    if item != "self" && !item.is_empty() {
                        path.extend(item.split("::").map(|s| s.trim().to_string()));
                    }
                    out.push((kind, path));
                }
            } else {
                out.push((kind, base));
            }
        }
    }
    out
}

/// The import graph: module -> the modules it names.
fn graph(modules: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges = BTreeMap::new();
    for (module, text) in modules {
        let children: Vec<String> = modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m[module.len()].clone())
            .collect();
        let mut to = BTreeSet::new();
        for (root, path) in paths(text, &children) {
            let full: Module = match root {
                Root::Crate => path,
                // `super` of a folder's mod.rs is the folder's parent; of a file, its folder.
                Root::Super => {
                    let parent = &module[..module.len().saturating_sub(1)];
                    parent.iter().cloned().chain(path).collect()
                }
                Root::Inline => module.iter().cloned().chain(path).collect(),
                Root::Child => module.iter().cloned().chain(path).collect(),
            };
            let target = (0..=full.len())
                .rev()
                .map(|k| full[..k].to_vec())
                .find(|m| modules.contains_key(m));
            if let Some(target) = target.filter(|t| t != module) {
                to.insert(target);
            }
        }
        edges.insert(module.clone(), to);
    }
    edges
}

/// The strongly connected components of more than one module (Tarjan).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in &self.edges[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("::")
    }
}

/// The layer of a module: higher numbers sit above lower ones, and a module imports only from
/// its own layer and those below (see ARCHITECTURE.md).
fn layer(module: &Module) -> u8 {
    match module.first().map(String::as_str) {
        None => 6, // the crate root re-exports every layer
        Some("net") => 5,
        Some("fanout") => 4,
        Some("engine") => 2,
        Some("store") => 1,
        Some("error" | "stats" | "validators" | "source" | "sync") => 0,
        Some(_) => 3, // the public face: buffer, builder, reader, writer, async_*
    }
}

#[test]
fn the_module_graph_has_no_circle() {
    let modules = modules();
    assert!(modules.len() > 20, "found {} modules", modules.len());
    let found = circles(&graph(&modules));
    let shown: Vec<String> = found
        .iter()
        .map(|c| c.iter().map(name).collect::<Vec<_>>().join(", "))
        .collect();
    assert!(
        shown.is_empty(),
        "import circles (each line: modules that import each other, directly or not):\n{}",
        shown.join("\n")
    );
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let modules = modules();
    let edges = graph(&modules);
    let mut wrong = Vec::new();
    for (from, to) in &edges {
        let floor = layer(from);
        for target in to {
            // A lower layer may import its own layer and those below, never one above.
            if layer(target) > floor {
                wrong.push(format!("{} imports {}", name(from), name(target)));
            }
        }
    }
    // Nor may the store and the engine name a public handle, through any path.
    let ours = own_roots(&modules);
    for (module, text) in &modules {
        if !(1..=2).contains(&layer(module)) || module.is_empty() {
            continue;
        }
        for handle in handles_named(text, &ours) {
            wrong.push(format!("{} names {handle}", name(module)));
        }
    }
    assert!(wrong.is_empty(), "layering:\n{}", wrong.join("\n"));
}

/// The public handles, which the store and the engine may not name.
const HANDLES: [&str; 8] = [
    "StreamBuffer",
    "Reader",
    "Writer",
    "Builder",
    "AsyncReader",
    "Emit",
    "Consumer",
    "Server",
];

/// The roots a path of this crate starts at: `crate`, `super`, `self` and its top-level modules.
fn own_roots(modules: &BTreeMap<Module, String>) -> BTreeSet<String> {
    modules
        .keys()
        .filter_map(|m| m.first().cloned())
        .chain(["crate", "super", "self"].map(String::from))
        .collect()
}

/// The handles `text` names as whole words, bare or through a path of this crate. A name under
/// another crate's path (`std::thread::Builder`, or `thread::Builder` after `use std::thread`)
/// is not one of ours.
fn handles_named(text: &str, ours: &BTreeSet<String>) -> Vec<&'static str> {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    HANDLES
        .into_iter()
        .filter(|handle| {
            text.match_indices(handle).any(|(at, _)| {
                let before = text[..at].chars().last();
                let after = text[at + handle.len()..].chars().next();
                let path_start = text[..at]
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .map_or(0, |i| i + 1);
                let path = &text[path_start..at];
                let root = path.split("::").next().unwrap_or("");
                let foreign = !path.is_empty() && !ours.contains(root);
                !word(before) && !word(after) && !foreign
            })
        })
        .collect()
}

#[test]
fn the_checker_tells_our_handles_from_other_crates_names() {
    let ours: BTreeSet<String> = ["crate", "super", "self", "engine"]
        .map(String::from)
        .into();
    assert_eq!(handles_named("let b: Builder = x;", &ours), ["Builder"]);
    assert_eq!(handles_named("use crate::Builder;", &ours), ["Builder"]);
    assert_eq!(handles_named("use crate::{Reader, x};", &ours), ["Reader"]);
    assert_eq!(
        handles_named("super::super::Server::new()", &ours),
        ["Server"]
    );
    assert!(handles_named("std::thread::Builder::new()", &ours).is_empty());
    assert!(handles_named("thread::Builder::new()", &ours).is_empty());
    assert!(handles_named("ReaderState BuilderLike", &ours).is_empty());
}

/// The checker itself finds what it must: a circle through a re-export, and a group import.
#[test]
fn the_checker_sees_circles_through_groups_and_re_exports() {
    let modules: BTreeMap<Module, String> = [
        (vec![], "pub use a::X;".to_string()),
        (vec!["a".into()], "use crate::{b::Y, sync::Z};".into()),
        (
            vec!["b".into()],
            "use crate::X; // crate::a in a comment".into(),
        ),
        (vec!["sync".into()], String::new()),
    ]
    .into_iter()
    .collect();
    let found = circles(&graph(&modules));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 3);
}
