//! The layout rule of `src/`: each wing (a top-level folder or file of the library) uses only
//! the wings before it — shared (error, util, device, model, imaging) → infer | train → search
//! → eval → cmd — so there is no cycle between folders and nothing reaches up or sideways.
//! Read from the `crate::` paths in the sources, test code included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each wing's rank. A wing may use wings of lower rank; within rank 0 the uses must be
/// acyclic; other wings of the same rank (infer and train) must not use each other.
const RANKS: &[(&str, u8)] = &[
    ("error", 0),
    ("util", 0),
    ("device", 0),
    ("home", 0),
    ("model", 0),
    ("imaging", 0),
    ("infer", 1),
    ("train", 1),
    ("search", 2),
    ("eval", 3),
    ("serve", 4),
    ("cmd", 5),
];

/// One use of another wing: (from, to) → the first place it was seen.
type Uses = BTreeMap<(String, String), String>;

fn rank(wing: &str) -> Option<u8> {
    RANKS.iter().find(|(w, _)| *w == wing).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The wing a file belongs to: `src/train/run.rs` → train, `src/error.rs` → error.
fn wing_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The wings named by `crate::WING` in `text`, with line numbers; comment lines are skipped.
fn wings_used(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name.chars().next().unwrap().is_ascii_lowercase() {
                out.push((n + 1, name));
            }
        }
    }
    out
}

fn uses_in(src: &Path) -> Uses {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut uses = Uses::new();
    for f in files {
        let from = wing_of(src, &f);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (line, to) in wings_used(&text) {
            if to != from {
                uses.entry((from.clone(), to))
                    .or_insert_with(|| format!("{}:{line}", f.display()));
            }
        }
    }
    uses
}

/// Every use that breaks the rule, one line each.
fn violations(uses: &Uses) -> Vec<String> {
    let mut out = Vec::new();
    for ((from, to), at) in uses {
        let (Some(rf), Some(rt)) = (rank(from), rank(to)) else {
            out.push(format!("{at}: {from} → {to}: a wing missing from RANKS"));
            continue;
        };
        if rt > rf || (rt == rf && rf > 0) {
            out.push(format!("{at}: {from} (rank {rf}) uses {to} (rank {rt})"));
        }
    }
    if let Some(cycle) = find_cycle(uses) {
        out.push(format!("cycle between folders: {}", cycle.join(" → ")));
    }
    out
}

/// A cycle in the wing graph, if there is one (depth-first search).
fn find_cycle(uses: &Uses) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in uses.keys() {
        next.entry(from).or_default().push(to);
    }
    fn visit<'a>(
        w: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == w) {
            let mut c: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            c.push(w.to_string());
            return Some(c);
        }
        if !done.insert(w) {
            return None;
        }
        path.push(w);
        for n in next.get(w).into_iter().flatten() {
            if let Some(c) = visit(n, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    let starts: Vec<&str> = next.keys().copied().collect();
    starts
        .into_iter()
        .find_map(|w| visit(w, &next, &mut Vec::new(), &mut done))
}

#[test]
fn wings_use_only_the_wings_before_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let uses = uses_in(&src);
    assert!(
        uses.contains_key(&("search".into(), "infer".into())),
        "the scan found no uses at all: {uses:?}"
    );
    let bad = violations(&uses);
    assert!(bad.is_empty(), "layout broken:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_and_an_upward_use() {
    let mut uses = Uses::new();
    uses.insert(("model".into(), "imaging".into()), "a.rs:1".into());
    uses.insert(("imaging".into(), "model".into()), "b.rs:2".into());
    uses.insert(("train".into(), "search".into()), "c.rs:3".into());
    uses.insert(("train".into(), "infer".into()), "d.rs:4".into());
    let bad = violations(&uses);
    assert!(bad.iter().any(|v| v.contains("cycle")), "{bad:?}");
    assert!(bad.iter().any(|v| v.starts_with("c.rs:3")), "{bad:?}");
    assert!(bad.iter().any(|v| v.starts_with("d.rs:4")), "{bad:?}");
    assert_eq!(bad.len(), 3, "{bad:?}");
}

#[test]
fn crate_paths_are_read_from_code_not_comments() {
    let text =
        "use crate::model::{Conv};\n// crate::search is named here only\nx(crate::train::run);";
    let got: Vec<_> = wings_used(text).into_iter().map(|(_, w)| w).collect();
    assert_eq!(got, ["model", "train"]);
}
