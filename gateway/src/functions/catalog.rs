//! The syncs and actions `nango.yaml` declares, with their code compiled: part of the config
//! snapshot, so a function that does not compile keeps the previous snapshot (and the previous
//! version of the function) in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use wasmtime::InstancePre;

use super::compile::compile;
use super::native::NativeFunction;
use super::sandbox::{Sandbox, State};
use crate::problem::{escape_pointer, Problem};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sync,
    Action,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sync => "sync",
            Kind::Action => "action",
        }
    }
}

/// A function's code, ready to run.
#[derive(Clone)]
pub enum Code {
    /// An ES module, types stripped, for the JavaScript engine.
    JavaScript(Arc<str>),
    /// A module compiled from WebAssembly (binary or text) that speaks the plugin ABI.
    Wasm(Arc<InstancePre<State>>),
    /// A native library that speaks the plugin ABI.
    Native(Arc<NativeFunction>),
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Code::JavaScript(js) => write!(f, "JavaScript({} bytes)", js.len()),
            Code::Wasm(_) => f.write_str("Wasm"),
            Code::Native(_) => f.write_str("Native"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncSpec {
    pub frequency: Duration,
    /// `runs` as written, which `GET /sync/status` reports.
    pub runs: String,
    /// `sync_type: incremental`: runs see `lastSyncDate`; otherwise every run is a full sync.
    pub incremental: bool,
    /// Whether a successful full run marks deleted what it did not save.
    pub track_deletes: bool,
    pub auto_start: bool,
}

#[derive(Debug)]
pub struct Function {
    pub integration: String,
    pub name: String,
    pub kind: Kind,
    pub path: PathBuf,
    pub code: Code,
    /// The models a sync writes (its `output`).
    pub models: Vec<String>,
    pub sync: Option<SyncSpec>,
}

/// Every function of a snapshot, by integration and name.
#[derive(Debug, Default)]
pub struct Functions {
    by_key: IndexMap<(String, String), Arc<Function>>,
}

impl Functions {
    pub fn get(&self, integration: &str, name: &str) -> Option<&Arc<Function>> {
        self.by_key.get(&(integration.to_string(), name.to_string()))
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Function>> {
        self.by_key.values()
    }

    pub fn syncs_of<'a>(&'a self, integration: &'a str) -> impl Iterator<Item = &'a Arc<Function>> + 'a {
        self.by_key.values().filter(move |f| f.kind == Kind::Sync && f.integration == integration)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// What loading found: the functions, the problems, and the source files read (to watch them
/// and to fingerprint the snapshot).
pub struct Loaded {
    pub functions: Functions,
    pub problems: Vec<Problem>,
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

impl Loaded {
    pub fn empty() -> Loaded {
        Loaded { functions: Functions::default(), problems: Vec::new(), files: Vec::new() }
    }
}

const EXTENSIONS: [&str; 8] = ["ts", "js", "mjs", "wasm", "wat", "so", "dylib", "dll"];

/// Reads the syncs and actions of every integration of the (schema-checked) document.
pub fn load(document: &Value, file: &Path, base_dir: &Path) -> Loaded {
    let mut loaded = Loaded::empty();
    let Some(integrations) = document.get("integrations").and_then(Value::as_object) else { return loaded };
    for (key, entry) in integrations {
        for (section, kind) in [("syncs", Kind::Sync), ("actions", Kind::Action)] {
            let Some(functions) = entry.get(section).and_then(Value::as_object) else { continue };
            for (name, spec) in functions {
                let pointer = format!("/integrations/{}/{section}/{}", escape_pointer(key), escape_pointer(name));
                match function(key, name, kind, spec, base_dir, &mut loaded.files) {
                    Ok(Some(function)) => {
                        loaded.functions.by_key.insert((key.clone(), name.clone()), Arc::new(function));
                    }
                    // A file copied from a Nango project may declare functions whose code lives
                    // elsewhere; they are not runnable here, which is worth a warning only.
                    Ok(None) => tracing::warn!(
                        "{} `{name}` of `{key}` has no code: put it in functions/{key}/{section}/{name}.ts \
                         (or .js, .wasm, .wat), or name it with `file:`",
                        kind.as_str()
                    ),
                    Err(found) => loaded.problems.extend(found.into_iter().map(|p| {
                        if p.file.as_os_str().is_empty() {
                            Problem { file: file.to_path_buf(), pointer: pointer.clone(), ..p }
                        } else {
                            p
                        }
                    })),
                }
            }
        }
    }
    loaded
}

fn function(
    integration: &str,
    name: &str,
    kind: Kind,
    spec: &Value,
    base_dir: &Path,
    files: &mut Vec<(PathBuf, Vec<u8>)>,
) -> Result<Option<Function>, Vec<Problem>> {
    let here = |message: String| vec![Problem::new(PathBuf::new(), "", message)];
    let path = match spec.get("file").and_then(Value::as_str) {
        Some(file) => base_dir.join(file),
        None => match locate(integration, name, kind, base_dir) {
            Some(path) => path,
            None => return Ok(None),
        },
    };
    let bytes = std::fs::read(&path).map_err(|e| here(format!("cannot read {}: {e}", path.display())))?;
    files.push((path.clone(), bytes.clone()));
    let code = match path.extension().and_then(|e| e.to_str()) {
        Some("so" | "dylib" | "dll") => {
            let native = NativeFunction::load(&path).map_err(|e| vec![Problem::new(&path, "", e)])?;
            Code::Native(Arc::new(native))
        }
        Some("wasm" | "wat") => {
            let sandbox = Sandbox::get().map_err(|e| here(e.to_string()))?;
            let guest = sandbox.prepare(&bytes).map_err(|e| vec![Problem::new(&path, "", e.to_string())])?;
            Code::Wasm(Arc::new(guest))
        }
        _ => {
            let source =
                String::from_utf8(bytes).map_err(|_| vec![Problem::new(&path, "", "the file is not UTF-8 text")])?;
            Code::JavaScript(compile(&path, &source)?.into())
        }
    };
    let models = match spec.get("output") {
        Some(Value::String(model)) => vec![model.clone()],
        Some(Value::Array(models)) => models.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let sync = match kind {
        Kind::Action => None,
        Kind::Sync => {
            let runs = spec.get("runs").and_then(Value::as_str).unwrap_or_default();
            let frequency = frequency(runs).ok_or_else(|| {
                here(format!("`runs: {runs}` is not a frequency; write it like `every 30 minutes` or `every hour`"))
            })?;
            let incremental =
                spec.get("sync_type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("incremental"));
            let track_deletes = spec.get("track_deletes").and_then(Value::as_bool).unwrap_or(false);
            if incremental && track_deletes {
                return Err(here(
                    "`track_deletes` needs a full sync: an incremental run does not see every record; call batchDelete instead"
                        .into(),
                ));
            }
            Some(SyncSpec {
                frequency,
                runs: runs.trim().to_string(),
                incremental,
                track_deletes,
                auto_start: spec.get("auto_start").and_then(Value::as_bool).unwrap_or(true),
            })
        }
    };
    Ok(Some(Function { integration: integration.into(), name: name.into(), kind, path, code, models, sync }))
}

/// `functions/<integration>/<syncs|actions>/<name>.<ext>`, or Nango's layout without the
/// `functions/` folder.
fn locate(integration: &str, name: &str, kind: Kind, base_dir: &Path) -> Option<PathBuf> {
    let section = format!("{}s", kind.as_str());
    [base_dir.join("functions"), base_dir.to_path_buf()].into_iter().find_map(|root| {
        EXTENSIONS
            .iter()
            .map(|ext| root.join(integration).join(&section).join(format!("{name}.{ext}")))
            .find(|p| p.is_file())
    })
}

/// Nango's frequencies: `every 30 minutes`, `every hour`, `every 2h`, `every day`,
/// `every half hour`.
pub fn frequency(runs: &str) -> Option<Duration> {
    let text = runs.trim().strip_prefix("every")?.trim().to_ascii_lowercase();
    let text = match text.as_str() {
        "half hour" => "30 minutes",
        "hour" => "1 hour",
        "day" => "1 day",
        "minute" => "1 minute",
        "week" => "1 week",
        other => other,
    };
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let amount: f64 = text[..split].trim().parse().ok()?;
    let unit = match text[split..].trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        _ => return None,
    };
    let seconds = amount * unit;
    (seconds >= 1.0).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_read_like_nangos() {
        assert_eq!(frequency("every 30 minutes"), Some(Duration::from_secs(1800)));
        assert_eq!(frequency("every hour"), Some(Duration::from_secs(3600)));
        assert_eq!(frequency("every half hour"), Some(Duration::from_secs(1800)));
        assert_eq!(frequency("every 2h"), Some(Duration::from_secs(7200)));
        assert_eq!(frequency("every day"), Some(Duration::from_secs(86_400)));
        assert_eq!(frequency("every 5 seconds"), Some(Duration::from_secs(5)));
        assert_eq!(frequency("sometimes"), None);
        assert_eq!(frequency("every 3 fortnights"), None);
    }
}
