//! The crate's layers point one way: every `crate::` path in a module names a module of its own
//! layer or of a layer below, in the order `src/lib.rs` documents (its numbered "Layers" list,
//! read here, so that the documentation and the check cannot drift apart).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The documented layers: top-level module name → rank (1 = bottom).
fn documented_layers(lib: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    for line in lib.lines() {
        let Some(item) = line.strip_prefix("//! ") else {
            continue;
        };
        let Some((number, rest)) = item.split_once(". `") else {
            continue;
        };
        let Ok(rank) = number.trim().parse::<usize>() else {
            continue;
        };
        // "`a`, `b`: description" → a, b
        let names = rest.split(':').next().unwrap_or_default();
        for name in names.split(", `").map(|n| n.trim_matches('`')) {
            layers.insert(name.to_string(), rank);
        }
    }
    layers
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules that `crate::` paths in `code` name, with their line numbers. Comment
/// lines (docs and links) are skipped; `use crate::{a, b}` names both.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let code = trimmed.split(" //").next().unwrap_or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or_default();
                for item in group.split(',') {
                    let module = item.trim().split("::").next().unwrap_or_default();
                    found.push((number + 1, module.to_string()));
                }
            } else {
                let module: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push((number + 1, module));
            }
        }
    }
    found
}

#[test]
fn imports_only_point_down_the_documented_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = documented_layers(&lib);
    assert!(
        layers.len() >= 12,
        "src/lib.rs documents only {layers:?} as layers"
    );
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.iter().next().unwrap().to_string_lossy();
        let module = top.trim_end_matches(".rs");
        if module == "lib" {
            continue; // the crate root re-exports every layer
        }
        let Some(&rank) = layers.get(module) else {
            violations.push(format!(
                "src/{} belongs to `{module}`, which src/lib.rs does not list as a layer",
                relative.display()
            ));
            continue;
        };
        let code = std::fs::read_to_string(file).unwrap();
        for (line, target) in crate_paths(&code) {
            checked += 1;
            match layers.get(&target) {
                Some(&target_rank) if target_rank <= rank => {}
                Some(&target_rank) => violations.push(format!(
                    "src/{}:{line}: `{module}` (layer {rank}) uses `crate::{target}` (layer {target_rank}, above it)",
                    relative.display()
                )),
                None => violations.push(format!(
                    "src/{}:{line}: `crate::{target}` is not a documented layer",
                    relative.display()
                )),
            }
        }
    }
    assert!(checked > 50, "only {checked} crate:: paths found");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_check_sees_upward_paths() {
    let code = "use crate::model::AdapterHost;\n// crate::io in a comment\nlet x = crate::{io, names::FusionKey};";
    let paths: Vec<String> = crate_paths(code).into_iter().map(|(_, m)| m).collect();
    assert_eq!(paths, ["model", "io", "names"]);
    let layers =
        documented_layers("//! 1. `error`: e.\n//! 2. `a`, `b`: both.\n//!    wrapped: 3. `no`");
    assert_eq!(layers.get("b"), Some(&2));
    assert_eq!(layers.len(), 3);
}
