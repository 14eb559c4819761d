//! The source tree's shape: every `crate::` path is an import of one source file by another;
//! no file reaches a layer above its own, and no files import each other in a circle.
//! Unit tests (a file's closing `mod tests`, and files compiled only for tests) may use
//! fixtures from anywhere, so they are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first. A file may import from its own layer or any below it.
const LAYERS: [&str; 9] = [
    "foundation",
    "policy",
    "telemetry",
    "upstream",
    "flow",
    "engine",
    "report",
    // The facade and the benchmark entry points, then the C ABI over them.
    "balancer.rs bench_support.rs",
    "ffi",
];

fn layer_of(file: &str) -> usize {
    let first = file.split('/').next().unwrap_or(file);
    LAYERS
        .iter()
        .position(|l| l.split(' ').any(|part| part == first))
        .unwrap_or_else(|| panic!("{file} is in no layer; add its folder to LAYERS"))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code before its unit tests (`#[cfg(test)] mod tests`, by convention last).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// Files declared only for tests: `#[cfg(test)]` right above their `mod` line.
fn test_only_files(src: &Path, files: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for parent in files
        .iter()
        .filter(|f| f.ends_with("mod.rs") || *f == "lib.rs")
    {
        let text = std::fs::read_to_string(src.join(parent)).expect("a source file");
        let dir = parent.trim_end_matches("mod.rs").trim_end_matches("lib.rs");
        let mut after_cfg_test = false;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line
                .strip_prefix("pub(crate) mod ")
                .or_else(|| line.strip_prefix("mod "))
                .and_then(|rest| rest.strip_suffix(';'))
            {
                if after_cfg_test {
                    out.insert(format!("{dir}{name}.rs"));
                }
            }
            after_cfg_test = line == "#[cfg(test)]";
        }
    }
    out
}

/// Code without comments and string literals, so neither can fake an import.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"\"");
            }
            c => out.push(c),
        }
    }
    out
}

/// Every path written after `crate::`, with `{a, b::c}` groups expanded one level.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let head = &rest[..end];
        if rest[end..].starts_with('{') {
            let prefix = head;
            let end = end + 1;
            let close = rest.find('}').unwrap_or(rest.len());
            let base: Vec<String> = prefix
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            for item in rest[end..close].split(',') {
                let mut path = base.clone();
                path.extend(
                    item.trim()
                        .split("::")
                        .map(|s| s.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'))
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
                paths.push(path);
            }
        } else {
            paths.push(
                head.split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
    }
    paths
}

/// The source file a path lands in: the longest prefix that names a file.
fn file_for(path: &[String], files: &BTreeSet<String>) -> Option<String> {
    (1..=path.len()).rev().find_map(|n| {
        let joined = path[..n].join("/");
        [format!("{joined}.rs"), format!("{joined}/mod.rs")]
            .into_iter()
            .find(|f| files.contains(f))
    })
}

/// What `lib.rs` re-exports at the crate root: `Name` -> the module path it comes from.
fn root_exports(lib: &str) -> BTreeMap<String, Vec<String>> {
    let mut map = BTreeMap::new();
    for statement in code_of(lib).split(';') {
        let Some(body) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (base, names) = match body.split_once("::{") {
            Some((base, names)) => (base, names.trim_end_matches('}').to_string()),
            None => match body.rsplit_once("::") {
                Some((base, name)) => (base, name.to_string()),
                None => continue,
            },
        };
        let base: Vec<String> = base.split("::").map(String::from).collect();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            map.insert(name.to_string(), base.clone());
        }
    }
    map
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let name = |p: &Path| {
        p.strip_prefix(&src)
            .expect("under src/")
            .to_string_lossy()
            .replace('\\', "/")
    };
    let mut files: BTreeSet<String> = paths.iter().map(|p| name(p)).collect();
    let test_only = test_only_files(&src, &files);
    files.retain(|f| !test_only.contains(f));
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let exports = root_exports(&lib);
    let mut graph = BTreeMap::new();
    for path in &paths {
        let file = name(path);
        if file == "lib.rs" || test_only.contains(&file) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("a source file");
        let code = code_of(without_tests(&text));
        let mut imports = BTreeSet::new();
        for mut target in crate_paths(&code) {
            if let Some(base) = target.first().and_then(|first| exports.get(first)) {
                let mut resolved = base.clone();
                resolved.append(&mut target);
                target = resolved;
            }
            if let Some(found) = file_for(&target, &files) {
                if found != file && found != "lib.rs" {
                    imports.insert(found);
                }
            }
        }
        graph.insert(file, imports);
    }
    graph
}

#[test]
fn no_file_imports_a_layer_above_its_own() {
    let mut upward = Vec::new();
    for (file, imports) in import_graph() {
        for target in imports {
            if layer_of(&target) > layer_of(&file) {
                upward.push(format!("{file} -> {target}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that climb a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_import_cycle_between_source_files() {
    let graph = import_graph();
    // The guard sees the engine's real arrows, or it would pass on anything.
    assert!(graph["engine/dispatch.rs"].contains("engine/runtime.rs"));
    assert!(graph["balancer.rs"].contains("engine/lifecycle.rs"));
    // Depth-first search; a grey node met again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Grey,
        Black,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        cycles: &mut Vec<String>,
    ) {
        marks.insert(node.to_string(), Mark::Grey);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Grey) => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    cycles.push(cycle.join(" -> "));
                }
                Some(Mark::Black) => {}
                None => visit(next, graph, marks, stack, cycles),
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Black);
    }
    let (mut marks, mut stack, mut cycles) = (BTreeMap::new(), Vec::new(), Vec::new());
    for node in graph.keys() {
        if !marks.contains_key(node.as_str()) {
            visit(node, &graph, &mut marks, &mut stack, &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_guard_sees_imports_written_every_way() {
    let code = code_of(
        "use crate::a::b::{C, d::E};\n// crate::not::this\nlet s = \"crate::nor::this\";\ncrate::x::y::z();",
    );
    let paths = crate_paths(&code);
    assert_eq!(
        paths,
        vec![
            vec!["a", "b", "C"],
            vec!["a", "b", "d", "E"],
            vec!["x", "y", "z"]
        ]
    );
}

#[test]
fn no_source_file_is_over_700_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let long: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            let lines = std::fs::read_to_string(p).ok()?.lines().count();
            (lines > 700).then(|| format!("{} ({lines} lines)", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "source files over 700 lines: {long:?}");
}
