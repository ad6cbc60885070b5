//! Starting a gateway: configuration, database, keys, the control plane and the Pingora edge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};

use crate::app::App;
use crate::config::{ConfigHandle, LoadOptions};
use crate::problem::Problems;
use crate::proxy::Edge;
use crate::secret::Secret;
use crate::store::{self, Db, KeyRing, Store, StoreError};

/// Everything `latchkey serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub load: LoadOptions,
    pub listen: SocketAddr,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub secret_key: Option<Secret>,
    pub encryption_key: Option<Secret>,
    pub previous_encryption_keys: Vec<Secret>,
    pub server_url: String,
    pub threads: usize,
    pub shutdown_grace_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the configuration has problems:\n{0}")]
    Config(Problems),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "LATCHKEY_ENCRYPTION_KEY is required with PostgreSQL, and every node must use the same key. \
         Make one with `latchkey generate-key` (or `openssl rand -base64 32`) and set it on every node"
    )]
    EncryptionKeyRequired,
    #[error("LATCHKEY_ENCRYPTION_KEY: {0}")]
    BadEncryptionKey(#[from] store::crypto::KeyError),
    #[error("cannot use the data directory `{path}`: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs until the process is told to stop.
pub fn serve(options: ServeOptions) -> Result<(), StartError> {
    let config = ConfigHandle::load(options.load.clone()).map_err(StartError::Config)?;
    let config = Arc::new(config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("latchkey-control")
        .enable_all()
        .build()?;
    let app = runtime.block_on(open_app(&options, Arc::clone(&config)))?;

    let socket_dir = control_socket_dir()?;
    let socket = socket_dir.join("control.sock");
    {
        let listener = runtime.block_on(async { tokio::net::UnixListener::bind(&socket) })?;
        let service = crate::api::service(Arc::clone(&app));
        runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, service).await {
                tracing::error!("the control plane stopped: {e}");
            }
        });
    }
    runtime.block_on(async {
        config.spawn_watchers();
        app.store.spawn_change_listener();
        app.webhooks.spawn_worker();
    });

    let mut conf = ServerConf {
        threads: options.threads.max(1),
        grace_period_seconds: Some(options.shutdown_grace_seconds),
        graceful_shutdown_timeout_seconds: Some(options.shutdown_grace_seconds),
        pid_file: socket_dir.join("pingora.pid").to_string_lossy().into_owned(),
        upgrade_sock: socket_dir.join("upgrade.sock").to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    conf.upstream_keepalive_pool_size = 256;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut edge =
        pingora::proxy::http_proxy_service(&server.configuration, Edge::new(Arc::clone(&app), socket.clone()));
    edge.add_tcp(&options.listen.to_string());
    server.add_service(edge);

    let current = config.current();
    tracing::info!(
        listen = %options.listen,
        database = %store::redact_url(&options.database_url),
        config = %current.path.display(),
        providers = current.catalog.len(),
        integrations = current.integrations.len(),
        "Latchkey is listening on http://{}",
        options.listen
    );
    server.run(RunArgs::default());
    let _ = std::fs::remove_dir_all(&socket_dir);
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}

async fn open_app(options: &ServeOptions, config: Arc<ConfigHandle>) -> Result<Arc<App>, StartError> {
    let db = Db::connect(&options.database_url).await?;
    db.migrate().await?;
    let keys = key_ring(options, &db)?;
    let store = Store::open(db, keys).await?;
    let secret_key = match &options.secret_key {
        Some(key) => key.clone(),
        None => stored_secret_key(&store).await?,
    };
    let webhooks = crate::webhooks::Webhooks::new(store.db.clone(), Arc::clone(&config), secret_key.clone());
    Ok(Arc::new(App {
        config,
        store,
        secret_key,
        server_url: options.server_url.trim_end_matches('/').to_string(),
        webhooks,
    }))
}

fn key_ring(options: &ServeOptions, db: &Db) -> Result<KeyRing, StartError> {
    let previous: Vec<String> = options.previous_encryption_keys.iter().map(|k| k.expose().to_string()).collect();
    if let Some(key) = &options.encryption_key {
        return Ok(KeyRing::from_base64(key.expose(), &previous)?);
    }
    if db.is_postgres() {
        return Err(StartError::EncryptionKeyRequired);
    }
    let path = options.data_dir.join("encryption.key");
    let key = match std::fs::read_to_string(&path) {
        Ok(key) => key,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyRing::generate_key();
            write_private(&path, &key)?;
            tracing::warn!(
                "LATCHKEY_ENCRYPTION_KEY is not set: generated a key in {} (mode 0600). Back it up, or set \
                 LATCHKEY_ENCRYPTION_KEY to its content; without it the stored credentials cannot be read",
                path.display()
            );
            key
        }
        Err(source) => return Err(StartError::DataDir { path: path.display().to_string(), source }),
    };
    Ok(KeyRing::from_base64(&key, &previous)?)
}

/// The API secret key kept in the database; generated and printed once on first start.
async fn stored_secret_key(store: &Store) -> Result<Secret, StartError> {
    let existing = store::settings::get(&store.db, &store.keys, "secret_key").await?;
    if let Some(key) = existing {
        tracing::info!("using the API secret key stored in the database (set LATCHKEY_SECRET_KEY to choose one)");
        return Ok(Secret::new(key));
    }
    let generated = uuid::Uuid::new_v4().to_string();
    let stored = store::settings::get_or_insert(&store.db, &store.keys, "secret_key", &generated).await?;
    if stored == generated {
        // Printed once, on the terminal, never logged again.
        println!(
            "\nGenerated the API secret key:\n\n    {stored}\n\nIt is stored encrypted in the database and will not be \
             shown again. To choose your own, set LATCHKEY_SECRET_KEY (or --secret-key).\n"
        );
    }
    Ok(Secret::new(stored))
}

fn write_private(path: &Path, content: &str) -> Result<(), StartError> {
    use std::io::Write;
    let dir_error = |source| StartError::DataDir { path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(dir_error)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(dir_error)?;
    file.write_all(content.as_bytes()).map_err(dir_error)?;
    Ok(())
}

/// A private directory for the control-plane socket, readable by this user only.
fn control_socket_dir() -> Result<PathBuf, StartError> {
    let dir = std::env::temp_dir().join(format!("latchkey-{}-{}", std::process::id(), rand::random::<u32>()));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(|source| StartError::DataDir { path: dir.display().to_string(), source })?;
    Ok(dir)
}
