//! The reference tables cannot drift from the code (issue 23): every key of the config structs
//! in `src/config/mod.rs` has a row in config/README.md's key table, every metric of
//! `src/telemetry/names.rs` a row in README.md's metrics table, and every source file of
//! `src/` a row in proxy/README.md's module table; a row naming what no longer exists fails
//! too. The sources are read as text: the config types are private to the crate.

use crate::common::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The cells of each body row of the first table from the line starting with `heading` (a
/// heading, with no other heading before the table, or the table's header row). A blank line
/// ends a Markdown table: rows after one are another table, and not read.
fn table_after(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(heading)).peekable();
    assert!(lines.peek().is_some(), "no line starting with {heading:?}");
    if !heading.starts_with('|') {
        lines.next();
    }
    let mut rows = Vec::new();
    for line in lines.by_ref() {
        if line.trim_start().starts_with('|') {
            rows.push(line);
            break;
        }
        assert!(!line.starts_with('#'), "no table under {heading:?} before {line:?}");
    }
    rows.extend(lines.take_while(|l| l.trim_start().starts_with('|')));
    // The header row and the `| --- |` row.
    rows.iter().skip(2).map(|l| l.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect()).collect()
}

/// The `code spans` of a Markdown cell.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Whether `word` occurs in `text` with no identifier character on either side.
fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    text.match_indices(word).any(|(i, _)| !ident(text[..i].chars().next_back()) && !ident(text[i + word.len()..].chars().next()))
}

// ----- config keys -------------------------------------------------------------------------

struct Field {
    /// As written in TOML (a `#[serde(rename)]` applied).
    name: String,
    ty: String,
    flatten: bool,
}

/// The named-field structs of a Rust source that serde reads as tables, with their fields.
/// Structs deserialized through another type (`try_from`, `from`, `transparent`) are values.
fn structs(src: &str) -> BTreeMap<String, Vec<Field>> {
    let mut out = BTreeMap::new();
    let mut attrs: Vec<String> = Vec::new();
    let mut lines = src.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("#[") {
            let mut attr = line.to_string();
            while !attr.ends_with(']') {
                attr.push_str(lines.next().expect("an attribute ends"));
            }
            attrs.push(attr);
            continue;
        }
        if line.starts_with("//") || line.is_empty() {
            continue;
        }
        let decl = line.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
        let Some(name) = decl.strip_prefix("struct ").filter(|_| line.ends_with('{')) else {
            attrs.clear();
            continue;
        };
        let name = name.trim_end_matches('{').trim().split('<').next().unwrap().to_string();
        let serde: String = attrs.iter().filter(|a| a.starts_with("#[serde(")).cloned().collect();
        attrs.clear();
        assert!(!serde.contains("rename_all"), "struct {name}: `rename_all` is not read by this test yet: teach it");
        let is_value = ["try_from", "from =", "transparent"].iter().any(|k| serde.contains(k));
        let mut fields = Vec::new();
        let mut field_attrs = String::new();
        for line in lines.by_ref().map(str::trim) {
            if line == "}" {
                break;
            }
            if line.starts_with("#[") {
                field_attrs.push_str(line);
                continue;
            }
            if line.starts_with("//") || line.is_empty() {
                continue;
            }
            let field = line.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
            let (fname, ty) = field.split_once(':').unwrap_or_else(|| panic!("struct {name}: cannot read the field line {line:?}"));
            assert!(ty.ends_with(','), "struct {name}: the field line {line:?} does not end its type on the line: teach the test");
            let a = std::mem::take(&mut field_attrs);
            if a.contains("skip") && !a.contains("skip_serializing_if") {
                continue;
            }
            let renamed = a.split("rename = \"").nth(1).and_then(|r| r.split('"').next());
            fields.push(Field {
                name: renamed.unwrap_or(fname.trim()).to_string(),
                ty: ty.trim_end_matches(',').trim().to_string(),
                flatten: a.contains("flatten"),
            });
        }
        if !is_value {
            out.insert(name, fields);
        }
    }
    out
}

/// What a field's type is in TOML, for the structs in `tables`.
enum Shape<'a> {
    Value,
    Table(&'a str),
    /// An array of tables.
    List(&'a str),
    /// Tables under names the user chooses (`[upstreams.<name>]`).
    Map(&'a str),
}

fn shape<'a>(ty: &'a str, tables: &BTreeMap<String, Vec<Field>>) -> Shape<'a> {
    let inner = |ty: &'a str, wrapper: &str| ty.strip_prefix(wrapper).and_then(|t| t.strip_suffix('>')).map(str::trim);
    let table = |ty: &'a str| {
        let last = ty.rsplit("::").next().unwrap_or(ty);
        tables.contains_key(last).then_some(last)
    };
    let mut ty = ty.trim();
    while let Some(t) = inner(ty, "Option<").or_else(|| inner(ty, "Box<")) {
        ty = t;
    }
    if let Some(t) = inner(ty, "Vec<") {
        return table(t).map_or(Shape::Value, Shape::List);
    }
    for map in ["BTreeMap<", "HashMap<", "std::collections::BTreeMap<", "std::collections::HashMap<"] {
        if let Some((_, v)) = inner(ty, map).and_then(|kv| kv.split_once(',')) {
            return table(v.trim()).map_or(Shape::Value, Shape::Map);
        }
    }
    table(ty).map_or(Shape::Value, Shape::Table)
}

/// A config key as config/README.md writes it (`limits.body_timeout`, `upstreams.<name>.tls`,
/// `[[routes]] ttl`), and the keys inside it when it is a table.
struct Key {
    doc: String,
    name: String,
    inside: Vec<Key>,
}

fn keys(tables: &BTreeMap<String, Vec<Field>>, table: &str, prefix: &str) -> Vec<Key> {
    let mut out = Vec::new();
    for f in &tables[table] {
        let doc = format!("{prefix}{}", f.name);
        let inside = match shape(&f.ty, tables) {
            Shape::Value => Vec::new(),
            Shape::Table(t) if f.flatten => {
                out.extend(keys(tables, t, prefix));
                continue;
            }
            Shape::Table(t) => keys(tables, t, &format!("{doc}.")),
            Shape::Map(t) => keys(tables, t, &format!("{doc}.<name>.")),
            // `[[routes]]` at the top; an inline array of tables further down.
            Shape::List(t) if prefix.is_empty() => keys(tables, t, &format!("[[{}]] ", f.name)),
            Shape::List(t) => keys(tables, t, &format!("{doc}[].")),
        };
        out.push(Key { doc, name: f.name.clone(), inside });
    }
    out
}

/// A key is documented by its own row; a table also by a row of its own that names each of
/// its keys (`{ path = "/health", interval = "5s", ... }`), or by rows for each of its keys.
fn undocumented(key: &Key, rows: &BTreeMap<String, String>, out: &mut Vec<String>) {
    match rows.get(&key.doc) {
        Some(_) if key.inside.is_empty() => {}
        None if key.inside.is_empty() => out.push(key.doc.clone()),
        Some(row) => key.inside.iter().filter(|k| !has_word(row, &k.name)).for_each(|k| undocumented(k, rows, out)),
        None => key.inside.iter().for_each(|k| undocumented(k, rows, out)),
    }
}

fn all_docs(keys: &[Key], out: &mut BTreeSet<String>) {
    for k in keys {
        out.insert(k.doc.clone());
        all_docs(&k.inside, out);
    }
}

/// The keys a row's first cell names: `limits.max_header` / `max_headers` / `max_header_count`
/// is three keys, `[[invalidation]] method`, `path` two.
fn row_keys(cell: &str) -> Vec<String> {
    let spans = code_spans(cell);
    let Some(first) = spans.first() else { return Vec::new() };
    let prefix = match first.rfind("]] ") {
        Some(i) => &first[..i + 3],
        None => first.rfind('.').map_or("", |i| &first[..=i]),
    };
    let mut out = vec![first.to_string()];
    out.extend(spans[1..].iter().map(|s| if s.contains('.') || s.starts_with("[[") { s.to_string() } else { format!("{prefix}{s}") }));
    out
}

#[test]
fn docs_every_config_key_is_documented() {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/mod.rs")).unwrap();
    let tables = structs(&src);
    assert!(tables.contains_key("Config"), "struct Config found in config/mod.rs");
    let config = keys(&tables, "Config", "");

    // The reading of the source, checked against the list load.rs dispatches on.
    let top: BTreeSet<&str> = config.iter().map(|k| k.doc.as_str()).collect();
    let declared = src.split("TOP_LEVEL_KEYS").nth(1).and_then(|s| s.split(';').next()).expect("TOP_LEVEL_KEYS in config/mod.rs");
    let listed: BTreeSet<&str> = declared.split('"').skip(1).step_by(2).collect();
    assert_eq!(top, listed, "Config's fields, as this test reads them, are TOP_LEVEL_KEYS");

    let readme = read("config/README.md");
    let mut rows: BTreeMap<String, String> = BTreeMap::new();
    for row in table_after(&readme, "## Keys") {
        for k in row_keys(&row[0]) {
            let text = rows.entry(k).or_default();
            text.push_str(&row.join(" | "));
        }
    }
    let mut missing = Vec::new();
    config.iter().for_each(|k| undocumented(k, &rows, &mut missing));
    let mut known = BTreeSet::new();
    all_docs(&config, &mut known);
    let stale: Vec<&String> = rows.keys().filter(|k| !known.contains(*k)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "config/README.md's key table (the one table under `## Keys`: a blank line ends it) is out of date.\n\
         Keys in proxy/src/config/mod.rs with no row (a table's row may name its keys instead): {missing:?}\n\
         Rows naming keys config/mod.rs does not have: {stale:?}"
    );
}

// ----- metrics -----------------------------------------------------------------------------

/// The names passed to `m("...", ...)` in names.rs.
fn metric_names(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in src.match_indices("m(") {
        if src[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = src[i + 2..].trim_start();
        if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
            out.push(name.to_string());
        }
    }
    out
}

#[test]
fn docs_every_metric_is_documented() {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/telemetry/names.rs")).unwrap();
    let names = metric_names(&src);
    assert_eq!(names.len(), src.matches(": MetricName =").count(), "one name read per MetricName in names.rs: {names:?}");

    let readme = read("README.md");
    let mut documented = BTreeSet::new();
    for row in table_after(&readme, "### Metrics") {
        for span in code_spans(&row[0]) {
            // `portier_build_info{version}`, `..._bucket/_sum/_count`.
            let name = span.split(['{', '/']).next().unwrap_or_default().trim();
            documented.insert(name.to_string());
            for part in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(part) {
                    documented.insert(base.to_string());
                }
            }
        }
    }
    let missing: Vec<&String> = names.iter().filter(|n| !documented.contains(*n)).collect();
    let known: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    // The prometheus crate's process collector names its own series.
    let stale: Vec<&String> = documented
        .iter()
        .filter(|d| !known.contains(d.as_str()) && !d.starts_with("process_"))
        .filter(|d| !["_bucket", "_sum", "_count"].iter().any(|p| d.strip_suffix(p).is_some_and(|b| known.contains(b))))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README.md's metrics table (under `### Metrics`) is out of date.\n\
         Metrics in proxy/src/telemetry/names.rs with no row: {missing:?}\n\
         Rows naming metrics names.rs does not have: {stale:?}"
    );
}

// ----- modules -----------------------------------------------------------------------------

#[test]
fn docs_every_source_file_is_in_the_module_table() {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
            if e.is_dir() {
                walk(&e, src, out);
            } else if e.extension().is_some_and(|x| x == "rs") {
                out.insert(e.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeSet::new();
    walk(&src, &src, &mut files);

    let readme = read("proxy/README.md");
    let rows = table_after(&readme, "| module | concept |");
    let listed: BTreeSet<&str> = rows.iter().flat_map(|r| code_spans(&r[0])).collect();
    let missing: Vec<&String> = files.iter().filter(|f| !listed.contains(f.as_str())).collect();
    let stale: Vec<&&str> = listed.iter().filter(|l| !src.join(l).exists()).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "proxy/README.md's module table is out of date.\nFiles in proxy/src with no row: {missing:?}\nRows naming files that do not exist: {stale:?}"
    );
}
