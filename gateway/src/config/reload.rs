//! The current configuration snapshot and how a new one replaces it.
//!
//! Readers take the snapshot with one atomic load (`ArcSwap`) and keep it for the whole request,
//! so a request that started on version N finishes on version N. A reload builds the next
//! snapshot off to the side and swaps it in only when it is valid; otherwise the error is kept
//! for `GET /admin/config` and the old snapshot keeps serving.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{load, Config, LoadOptions};
use crate::problem::Problems;

#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The problems of the last reload, when it failed; cleared by the next success.
    pub last_error: Option<Problems>,
}

pub struct ConfigHandle {
    current: ArcSwap<Config>,
    options: LoadOptions,
    status: Mutex<ReloadStatus>,
    /// Reloads run one at a time, so versions are handed out in order.
    reloading: Mutex<()>,
}

impl ConfigHandle {
    /// Loads the first snapshot (version 1).
    pub fn load(options: LoadOptions) -> Result<ConfigHandle, Problems> {
        let config = load(&options, 1)?;
        Ok(Self::with(config, options))
    }

    pub fn with(config: Config, options: LoadOptions) -> ConfigHandle {
        ConfigHandle {
            current: ArcSwap::from_pointee(config),
            options,
            status: Mutex::new(ReloadStatus::default()),
            reloading: Mutex::new(()),
        }
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Config> {
        self.current.load_full()
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Builds a new snapshot from the files and swaps it in when valid. Files that read the
    /// same as the current snapshot's keep its version: one edit often wakes the watcher twice,
    /// and a version number should mean a change. Blocking: file reads and validation run on
    /// the calling thread.
    pub fn reload(&self) -> Result<u64, Problems> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        let next_version = current.version + 1;
        let result = load(&self.options, next_version);
        let mut status = self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        status.last_attempt_at = Some(Utc::now());
        match result {
            Ok(config) if config.fingerprint == current.fingerprint => {
                tracing::debug!(version = current.version, "configuration unchanged");
                status.last_error = None;
                Ok(current.version)
            }
            Ok(config) => {
                tracing::info!(
                    version = config.version,
                    providers = config.catalog.len(),
                    integrations = config.integrations.len(),
                    "configuration reloaded"
                );
                self.current.store(Arc::new(config));
                status.last_error = None;
                Ok(next_version)
            }
            Err(problems) => {
                tracing::error!(
                    problems = problems.len(),
                    "configuration change rejected, still serving version {}:\n{problems}",
                    next_version - 1
                );
                status.last_error = Some(problems.clone());
                Err(problems)
            }
        }
    }

    /// Reloads whenever a file of the current snapshot changes (or a file appears in one of
    /// their directories with a YAML name), and on SIGHUP. Runs until the process ends.
    pub fn spawn_watchers(self: &Arc<Self>) {
        let (tx, rx) = mpsc::unbounded_channel::<()>();
        let watched = Arc::new(Mutex::new(self.watch_set()));
        let filter = Arc::clone(&watched);
        let notify_tx = tx.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            let relevant = filter.lock().map(|w| event.paths.iter().any(|p| w.concerns(p))).unwrap_or(false);
            if relevant {
                let _ = notify_tx.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("file watching is unavailable ({e}); reload with SIGHUP or POST /admin/reload");
                return;
            }
        };
        let mut watching: BTreeSet<PathBuf> = BTreeSet::new();
        refresh_watches(&mut watcher, &mut watching, &watched);

        #[cfg(unix)]
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                    return;
                };
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP received, reloading the configuration");
                    let _ = tx.send(());
                }
            });
        }

        let handle = Arc::clone(self);
        tokio::spawn(async move {
            let mut rx = rx;
            while rx.recv().await.is_some() {
                // Editors write a file in several steps; wait for them to settle.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
                let reloader = Arc::clone(&handle);
                let reloaded = tokio::task::spawn_blocking(move || reloader.reload()).await;
                if matches!(reloaded, Ok(Ok(_))) {
                    if let Ok(mut w) = watched.lock() {
                        *w = handle.watch_set();
                    }
                    refresh_watches(&mut watcher, &mut watching, &watched);
                }
            }
        });
    }

    fn watch_set(&self) -> WatchSet {
        let config = self.current();
        let mut set =
            WatchSet { files: config.files.iter().filter_map(|f| absolute(f)).collect(), dirs: BTreeSet::new() };
        if let Some(dir) = &self.options.catalog_dir {
            set.dirs.extend(absolute(dir));
        }
        for file in &config.files {
            if let Some(parent) = absolute(file).and_then(|f| f.parent().map(Path::to_path_buf)) {
                set.dirs.insert(parent);
            }
        }
        set
    }
}

fn absolute(path: &Path) -> Option<PathBuf> {
    std::path::absolute(path).ok()
}

struct WatchSet {
    files: BTreeSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl WatchSet {
    fn concerns(&self, path: &Path) -> bool {
        self.files.contains(path)
            || (matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                && path.parent().is_some_and(|p| self.dirs.contains(p)))
    }
}

fn refresh_watches(
    watcher: &mut notify::RecommendedWatcher,
    watching: &mut BTreeSet<PathBuf>,
    wanted: &Arc<Mutex<WatchSet>>,
) {
    let Ok(wanted) = wanted.lock() else { return };
    for dir in wanted.dirs.difference(&watching.clone()) {
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watching.insert(dir.clone());
            }
            Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch for changes: {e}"),
        }
    }
}
