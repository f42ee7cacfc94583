//! The top-level modules form no import cycle: each `use crate::x` (or
//! `crate::x::...` path) outside test modules is an edge from the module the
//! file belongs to, and the graph must be acyclic, so that lower layers
//! (config, fsutil, wal, ...) never reach up into the ones that use them.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Edges that still close a cycle, each with its owner: remove an entry
/// when the edge goes (the test says so).
const KNOWN: &[(&str, &str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its test module and comments.
fn production_code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap();
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `code` names: `crate::x` and `crate::{x, y::z}`.
fn targets(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                out.insert(ident(item.trim()));
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let code = production_code(&std::fs::read_to_string(&f).unwrap());
        let edges = g.entry(module.clone()).or_default();
        edges.extend(targets(&code).into_iter().filter(|t| *t != module));
    }
    g
}

/// A cycle through `start`, as "a -> b -> a", if there is one.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if let Some(pos) = path.iter().position(|n| n == node) {
            let mut c = path[pos..].to_vec();
            c.push(node.to_string());
            return Some(c.join(" -> "));
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_import_no_cycle() {
    let mut g = graph();
    assert!(g.len() > 10, "{g:?}");
    for (from, to, owner) in KNOWN {
        let present = g.get_mut(*from).is_some_and(|e| e.remove(*to));
        assert!(
            present,
            "{from} -> {to} is gone: remove it from KNOWN in tests/layering.rs ({owner})"
        );
    }
    if let Some(c) = cycle(&g) {
        panic!("import cycle between top-level modules: {c}; move what the lower module needs down into it (or into a small shared module)");
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    assert_eq!(
        targets("use crate::{config::X, fsutil};\nlet x = crate::wal::f();"),
        ["config", "fsutil", "wal"].map(String::from).into()
    );
    let mut g = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")] {
        g.entry(a.to_string())
            .or_insert_with(BTreeSet::new)
            .insert(b.to_string());
    }
    assert_eq!(cycle(&g).as_deref(), Some("a -> b -> c -> a"));
    g.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&g), None);
}
