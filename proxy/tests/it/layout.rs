//! The crate's shape, checked: no import circle among its modules (issue 24). A module is a
//! top-level file or folder of `proxy/src`; inside a folder, each file is one too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::a::b` and `super::b` references of every module, outside comments and tests.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
            if e.is_dir() {
                walk(&e, out);
            } else if e.extension().is_some_and(|x| x == "rs") {
                out.push(e);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit()).collect::<String>();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel: Vec<String> =
            f.strip_prefix(&src).unwrap().iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
        let top = rel[0].clone();
        let sub = rel.get(1).cloned();
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let me = match &sub {
            Some(s) => format!("{top}/{s}"),
            None => top.clone(),
        };
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + 7..];
                let a = ident(rest);
                let b = rest.strip_prefix(&format!("{a}::")).map(ident).unwrap_or_default();
                if a.is_empty() {
                    continue;
                }
                if a != top {
                    edges.entry(top.clone()).or_default().insert(a);
                } else if sub.is_some() && !b.is_empty() && Some(&b) != sub.as_ref() && src.join(&top).join(format!("{b}.rs")).exists() {
                    edges.entry(me.clone()).or_default().insert(format!("{top}/{b}"));
                }
            }
            for (i, _) in line.match_indices("super::") {
                // `super::super::x` is counted from its second `super::`.
                if line[i + 7..].starts_with("super::") {
                    continue;
                }
                let nested = i >= 7 && &line[i - 7..i] == "super::";
                let b = ident(&line[i + 7..]);
                let is_top = |m: &str| src.join(format!("{m}.rs")).exists() || src.join(m).is_dir();
                if b.is_empty() {
                    continue;
                }
                match (&sub, nested) {
                    // In a folder: a sibling file, or (through `super::super::`) a top-level module.
                    (Some(s), false) if &b != s && src.join(&top).join(format!("{b}.rs")).exists() => {
                        edges.entry(me.clone()).or_default().insert(format!("{top}/{b}"));
                    }
                    (Some(_), true) if b != top && is_top(&b) => {
                        edges.entry(top.clone()).or_default().insert(b);
                    }
                    // A top-level file's `super::` is the crate root.
                    (None, _) if b != top && is_top(&b) => {
                        edges.entry(top.clone()).or_default().insert(b);
                    }
                    _ => {}
                }
            }
        }
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        e: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    fn visit(t: &mut T<'_>, v: &str) {
        let n = t.index.len();
        t.index.insert(v.to_string(), n);
        t.low.insert(v.to_string(), n);
        t.stack.push(v.to_string());
        t.on.insert(v.to_string());
        for w in t.e.get(v).cloned().unwrap_or_default() {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let lw = t.low[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(&w) {
                let iw = t.index[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(&w);
                let done = w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T { e: edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), out: Vec::new() };
    let nodes: BTreeSet<String> = edges.keys().cloned().chain(edges.values().flatten().cloned()).collect();
    for v in nodes {
        if !t.index.contains_key(&v) {
            visit(&mut t, &v);
        }
    }
    t.out
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let edges = imports();
    assert!(edges.get("gateway").is_some_and(|e| e.contains("cache")), "the scan reads imports: {edges:?}");
    let found = circles(&edges);
    assert!(found.is_empty(), "import circles: {found:?}");
    // The check can fail: a made-up circle is found.
    let mut with_circle = edges.clone();
    with_circle.entry("cache".into()).or_default().insert("gateway".into());
    assert!(!circles(&with_circle).is_empty());
}
