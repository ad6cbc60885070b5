//! The provider catalog: every external API Latchkey knows, loaded from YAML in the format of
//! Nango's providers.yaml, validated, with aliases resolved.
//!
//! Two layouts are read. Latchkey's own catalog is a directory with one provider per file
//! (`providers/github.yaml`, the file name being the provider's name, the file the entry). Extra
//! catalogs named in the config's `catalogs:` are single files in Nango's format, one mapping
//! from provider name to entry. Entries in later sources replace earlier ones of the same name.

mod check;
pub mod describe;
mod provider;
pub mod template;

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use serde_json::{Map, Value};

pub use provider::{AuthMode, Field, Limit, Provider, ProxySpec, RateLimit, Retry, TokenUrl, Verification};

use crate::problem::{escape_pointer, Problem, Problems};
use crate::schema::Schema;

static PROVIDER_SCHEMA: LazyLock<Schema> = LazyLock::new(|| Schema::compile(include_str!("provider.schema.json")));

/// The catalog that ships inside the binary: the repository's `providers/` directory.
static BUILT_IN: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/../providers");

/// Where provider entries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory of `<name>.yaml` files, one entry each.
    Directory(PathBuf),
    /// One file in Nango's format: a mapping from provider name to entry.
    File(PathBuf),
    /// The directory layout, compiled into the binary.
    BuiltIn,
}

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    providers: BTreeMap<String, Arc<Provider>>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    pub fn len(&self) -> usize {
        self.providers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Providers in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.values()
    }
}

/// A catalog, every problem found while loading it, and the files it was read from (for
/// hot reload). Entries with problems are left out of the catalog.
pub struct Loaded {
    pub catalog: Catalog,
    pub problems: Problems,
    pub files: Vec<PathBuf>,
    /// A hash of every file read, so a reload can tell that nothing changed.
    pub fingerprint: u64,
}

pub fn load(sources: &[Source]) -> Loaded {
    let mut reader = Reader::default();
    for source in sources {
        match source {
            Source::Directory(dir) => reader.read_directory(dir),
            Source::File(file) => reader.read_single_file(file),
            Source::BuiltIn => reader.read_built_in(),
        }
    }
    let Reader { entries, mut problems, files, texts } = reader;

    let mut providers = BTreeMap::new();
    let mut resolver = Resolver { raw: &entries, resolved: BTreeMap::new(), problems: &mut problems };
    for name in entries.keys() {
        let Some(entry) = resolver.resolve(name, &mut HashSet::new()) else { continue };
        let raw = &entries[name];
        match serde_json::from_value::<Provider>(entry.clone()) {
            Ok(mut provider) => {
                provider.name = name.clone();
                provider.entry = entry;
                provider.origin = raw.file.clone();
                let found = check::check(&provider, &raw.base, raw.strict);
                if found.is_empty() {
                    providers.insert(name.clone(), Arc::new(provider));
                } else {
                    resolver.problems.0.extend(found);
                }
            }
            Err(e) => resolver.problems.push(Problem::new(&raw.file, raw.base.clone(), e.to_string())),
        }
    }
    let mut hasher = std::hash::DefaultHasher::new();
    for (file, text) in &texts {
        problems.locate(file, text);
        (file, text).hash(&mut hasher);
    }
    Loaded { catalog: Catalog { providers }, problems, files, fingerprint: hasher.finish() }
}

struct RawEntry {
    value: Map<String, Value>,
    file: PathBuf,
    /// The pointer of the entry inside its file: empty for one-entry files, `/<name>` otherwise.
    base: String,
    /// Whether the entry is Latchkey's own, checked for completeness too.
    strict: bool,
}

#[derive(Default)]
struct Reader {
    entries: BTreeMap<String, RawEntry>,
    problems: Problems,
    files: Vec<PathBuf>,
    /// File texts, kept to find the lines of problems.
    texts: Vec<(PathBuf, String)>,
}

impl Reader {
    fn read_directory(&mut self, dir: &Path) {
        let listing = match std::fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(e) => {
                self.problems.push(
                    Problem::new(dir, "", format!("cannot read the catalog directory: {e}"))
                        .hint("create it, or point --catalog-dir at the directory that holds the provider files"),
                );
                return;
            }
        };
        let mut paths: Vec<PathBuf> = listing
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        paths.sort();
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => self.add_entry_file(path, text),
                Err(e) => self.problems.push(Problem::new(&path, "", format!("cannot read the file: {e}"))),
            }
        }
    }

    fn read_built_in(&mut self) {
        let mut files: Vec<&include_dir::File<'_>> = BUILT_IN
            .files()
            .filter(|f| matches!(f.path().extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort_by_key(|f| f.path());
        for file in files {
            let path = Path::new("<built-in>/providers").join(file.path());
            let text = String::from_utf8_lossy(file.contents()).into_owned();
            self.add_entry_file(path, text);
        }
    }

    /// A file in the directory layout: the file is the entry, its stem the name.
    fn add_entry_file(&mut self, path: PathBuf, text: String) {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if !path.starts_with("<built-in>") {
            self.files.push(path.clone());
        }
        if !valid_name(&name) {
            self.problems.push(
                Problem::new(&path, "", format!("`{name}` is not a valid provider name"))
                    .hint("name the file with lowercase letters, digits and dashes, such as `google-calendar.yaml`"),
            );
            return;
        }
        if let Some(Value::Object(value)) = self.parse(&path, &text) {
            self.insert(name, value, &path, String::new());
        } else if self.problems.0.last().map(|p| p.file != path).unwrap_or(true) {
            self.problems.push(Problem::new(&path, "", "the file must hold one provider entry, a mapping"));
        }
        self.texts.push((path, text));
    }

    fn read_single_file(&mut self, path: &Path) {
        self.files.push(path.to_path_buf());
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                self.problems.push(
                    Problem::new(path, "", format!("cannot read the catalog file: {e}"))
                        .hint("fix the path in `catalogs:`; relative paths start at the config file's directory"),
                );
                return;
            }
        };
        match self.parse(path, &text) {
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    let base = format!("/{}", escape_pointer(&name));
                    if !valid_name(&name) {
                        self.problems.push(Problem::new(path, base, format!("`{name}` is not a valid provider name")));
                        continue;
                    }
                    match value {
                        Value::Object(value) => self.insert(name, value, path, base),
                        _ => self.problems.push(Problem::new(path, base, "a provider entry must be a mapping")),
                    }
                }
            }
            Some(_) => self.problems.push(Problem::new(
                path,
                "",
                "a catalog file must be a mapping from provider name to entry",
            )),
            None => {}
        }
        self.texts.push((path.to_path_buf(), text));
    }

    fn parse(&mut self, path: &Path, text: &str) -> Option<Value> {
        match crate::config::yaml::parse(text) {
            Ok(value) => Some(value),
            Err(problem) => {
                self.problems.push(problem.in_file(path));
                None
            }
        }
    }

    fn insert(&mut self, name: String, value: Map<String, Value>, file: &Path, base: String) {
        let problems = PROVIDER_SCHEMA.check(&Value::Object(value.clone()), file, &base);
        if !problems.is_empty() {
            self.problems.0.extend(problems);
            return;
        }
        let strict = base.is_empty();
        self.entries.insert(name, RawEntry { value, file: file.to_path_buf(), base, strict });
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Alias resolution: an entry with `alias: other` is `other`'s resolved entry with the alias'
/// own keys laid over it (a shallow merge, as in Nango). Chains are followed in any order; a
/// cycle or a missing target is a problem.
struct Resolver<'a> {
    raw: &'a BTreeMap<String, RawEntry>,
    resolved: BTreeMap<String, Option<Value>>,
    problems: &'a mut Problems,
}

impl Resolver<'_> {
    fn resolve(&mut self, name: &str, visiting: &mut HashSet<String>) -> Option<Value> {
        if let Some(done) = self.resolved.get(name) {
            return done.clone();
        }
        let raw = &self.raw[name];
        let result = match raw.value.get("alias").and_then(Value::as_str) {
            None => Some(Value::Object(raw.value.clone())),
            Some(target) => {
                let pointer = format!("{}/alias", raw.base);
                if !visiting.insert(name.to_string()) || target == name {
                    self.problems.push(
                        Problem::new(&raw.file, pointer, format!("alias `{target}` leads back to `{name}`"))
                            .hint("an alias must end at an entry that is not an alias of this one"),
                    );
                    None
                } else if !self.raw.contains_key(target) {
                    self.problems.push(
                        Problem::new(
                            &raw.file,
                            pointer,
                            format!("alias names `{target}`, which is not in the catalog"),
                        )
                        .hint("name an existing provider, or add the missing entry"),
                    );
                    None
                } else {
                    self.resolve(target, visiting).map(|base| {
                        let mut merged = match base {
                            Value::Object(map) => map,
                            _ => Map::new(),
                        };
                        for (k, v) in &raw.value {
                            if k != "alias" {
                                merged.insert(k.clone(), v.clone());
                            }
                        }
                        Value::Object(merged)
                    })
                }
            }
        };
        self.resolved.insert(name.to_string(), result.clone());
        result
    }
}

#[cfg(test)]
mod tests;
