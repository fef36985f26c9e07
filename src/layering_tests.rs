//! The module layering of `docs/architecture.md`, checked on the source: the top-level modules
//! use each other without cycles, except the loop with its futures and tasks.
//!
//! A module uses another when a line of its code (comments and `#[cfg(test)]` code left out)
//! names `crate::other`, or a crate-root re-export of `other`'s (`crate::Transport` is a use
//! of `transport`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The one cycle the layering allows.
const LOOP_CORE: [&str; 3] = ["event_loop", "future", "task"];

/// This file: its text names modules without using them.
const SELF: &str = "layering_tests";

#[test]
fn modules_form_no_cycle_but_the_loop_core() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let uses = module_uses(&src);
    assert!(uses.len() > 20, "found only {:?}", uses.keys());
    for (module, used) in &uses {
        for other in used {
            let allowed =
                LOOP_CORE.contains(&module.as_str()) && LOOP_CORE.contains(&other.as_str());
            if !allowed && reaches(&uses, other, module) {
                panic!("module cycle: {module} uses {other}, which reaches {module} again");
            }
        }
    }
}

#[test]
fn the_scan_sees_a_use_and_skips_comments_and_tests() {
    let text = "use crate::driver::Op;\n#[cfg(test)]\nmod probe;\n// crate::net in a comment\n\
                fn f() { crate::Transport::x() }\n#[cfg(test)]\nmod tests { use crate::server; }\n";
    let aliases = BTreeMap::from([("Transport".to_string(), "transport".to_string())]);
    let used = names_used(text, &aliases);
    assert_eq!(used, BTreeSet::from(["driver".to_string(), "transport".to_string()]));
}

/// Each top-level module of `src` and the top-level modules its code uses.
fn module_uses(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let lib = fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let aliases = root_aliases(&lib);
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(src).expect("src").flatten() {
        let path = entry.path();
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let not_rust = path.is_file() && path.extension().map_or(true, |e| e != "rs");
        if name == "lib" || name == SELF || not_rust {
            continue;
        }
        let mut used = BTreeSet::new();
        for file in rust_files(&path) {
            used.extend(names_used(&fs::read_to_string(&file).unwrap_or_default(), &aliases));
        }
        modules.insert(name, used);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    for (module, used) in modules.iter_mut() {
        used.retain(|other| other != module && names.contains(other));
    }
    modules
}

/// `path` if it is a Rust file, else every Rust file under it.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).into_iter().flatten().flatten() {
        files.extend(
            rust_files(&entry.path())
                .into_iter()
                .filter(|f| f.extension().is_some_and(|e| e == "rs")),
        );
    }
    files
}

/// The crate-root names `lib.rs` re-exports, each with its module (`Transport` → `transport`).
fn root_aliases(lib: &str) -> BTreeMap<String, String> {
    let mut aliases = BTreeMap::new();
    for item in lib.split(';') {
        let Some(path) = item.trim().strip_prefix("pub use ") else { continue };
        let module = path.split("::").next().unwrap_or_default().trim().to_string();
        let last = path.rsplit("::").next().unwrap_or_default();
        for name in last.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !name.is_empty() {
                aliases.insert(name.to_string(), module.clone());
            }
        }
    }
    aliases
}

/// The modules the code of `text` names after `crate::`: comments are skipped, and so is
/// test code (a `#[cfg(test)]` declaration such as `mod tests;`, or everything from a
/// `#[cfg(test)]` block on, which is where test modules sit).
fn names_used(text: &str, aliases: &BTreeMap<String, String>) -> BTreeSet<String> {
    let prefix = concat!("crate", "::");
    let mut used = BTreeSet::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("#[cfg(test)]") {
            match lines.next() {
                Some(item) if item.ends_with(';') => continue,
                _ => break,
            }
        }
        if line.starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices(prefix) {
            let rest = &line[at + prefix.len()..];
            let name: String =
                rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            used.insert(aliases.get(&name).cloned().unwrap_or(name));
        }
    }
    used
}

/// Whether `from` reaches `to` through the uses.
fn reaches(uses: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(module) = stack.pop() {
        if module == to {
            return true;
        }
        if seen.insert(module.clone()) {
            stack.extend(uses.get(&module).into_iter().flatten().cloned());
        }
    }
    false
}
