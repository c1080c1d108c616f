//! The layers of `src/` as DESIGN.md's data flow draws them: the policy
//! language, the model and the decision core know nothing of where
//! documents come from or how answers leave. A `use` that points the
//! other way fails here, naming the file and line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// For each pure layer, the modules of the crate it may use.
const LAYERS: &[(&str, &[&str])] = &[
    ("policy", &["policy", "json", "finding", "catalog"]),
    ("model", &["model", "policy", "finding"]),
    (
        "engine",
        &["engine", "model", "policy", "finding", "catalog"],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn pure_layers_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (layer, allowed) in LAYERS {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "no sources under src/{layer}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Comments may name any module; code may not.
            let code: Vec<&str> = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or_default())
                .collect();
            let code = code.join("\n");
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                // `crate::{a::X, b}` (over several lines, too) names several modules.
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .collect(),
                    None => vec![rest],
                };
                for name in names {
                    let module: String = name
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if module.is_empty() || allowed.contains(&module.as_str()) {
                        continue;
                    }
                    wrong.push(format!(
                        "{}:{}: src/{layer} uses crate::{module}",
                        file.strip_prefix(&src).unwrap_or(&file).display(),
                        code[..at].matches('\n').count() + 1
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}
