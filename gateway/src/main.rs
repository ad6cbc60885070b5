//! `latchkey`: the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use latchkey::catalog::describe;
use latchkey::config::{ConfigHandle, LoadOptions};
use latchkey::secret::Secret;
use latchkey::server::{serve, ServeOptions};
use latchkey::store::{Db, KeyRing};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Latchkey: a self-hosted product-integrations gateway that speaks Nango's API.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway: the API, the Connect UI and the proxy on one listener.
    Serve(ServeArgs),
    /// Validate the configuration and the whole catalog; print every problem.
    Check(ConfigArgs),
    /// Apply the database migrations and exit (`serve` applies them too).
    Migrate(DatabaseArgs),
    /// Print a new random encryption key for LATCHKEY_ENCRYPTION_KEY.
    GenerateKey,
    /// Browse the provider catalog.
    Providers(ProvidersArgs),
    /// Run a sync or an action once against a connection and print its records or output.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The integration (provider config key).
    integration: String,
    /// The sync or action.
    function: String,
    /// The connection id.
    #[arg(long)]
    connection: String,
    /// The action's input, as JSON.
    #[arg(long)]
    input: Option<String>,
    /// Write the sync's records (as a recorded run) instead of printing them.
    #[arg(long)]
    save: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct ProvidersArgs {
    #[command(subcommand)]
    command: ProvidersCommand,
}

#[derive(Subcommand)]
enum ProvidersCommand {
    /// List the providers, optionally of one category or auth mode.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        category: Option<String>,
        /// OAUTH2, API_KEY, BASIC, …
        #[arg(long)]
        auth_mode: Option<String>,
        /// Print the resolved entries as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show everything about one provider.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
        name: String,
        /// Print the resolved entry as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// The configuration file.
    #[arg(long, env = "LATCHKEY_CONFIG", default_value = "nango.yaml")]
    config: PathBuf,
    /// The provider catalog directory [default: `providers/` beside the config file when it
    /// exists, else the catalog built into the binary].
    #[arg(long, env = "LATCHKEY_CATALOG_DIR")]
    catalog_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            config_path: self.config.clone(),
            config_required: std::env::var_os("LATCHKEY_CONFIG").is_some()
                || std::env::args().any(|a| a == "--config" || a.starts_with("--config=")),
            catalog_dir: self.catalog_dir.clone(),
        }
    }
}

#[derive(Args, Clone)]
struct DatabaseArgs {
    /// Where Latchkey keeps its own files (the SQLite database, a generated encryption key).
    #[arg(long, env = "LATCHKEY_DATA_DIR", default_value = ".latchkey")]
    data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…` [default: sqlite://<data-dir>/latchkey.db].
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
}

impl DatabaseArgs {
    fn url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("latchkey.db").display()))
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    /// The address to listen on.
    #[arg(long, env = "LATCHKEY_LISTEN", default_value = "0.0.0.0:3003")]
    listen: SocketAddr,
    /// The API secret key callers send as `Authorization: Bearer <key>` [default: generated on
    /// first start, stored encrypted in the database, printed once].
    #[arg(long, env = "LATCHKEY_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// 32 bytes, base64: the key that encrypts credentials at rest [default with SQLite: a key
    /// generated into <data-dir>/encryption.key; required with PostgreSQL].
    #[arg(long, env = "LATCHKEY_ENCRYPTION_KEY", hide_env_values = true)]
    encryption_key: Option<String>,
    /// Older encryption keys, comma-separated, still accepted for reading after a rotation.
    #[arg(long, env = "LATCHKEY_PREVIOUS_ENCRYPTION_KEYS", hide_env_values = true, value_delimiter = ',')]
    previous_encryption_keys: Vec<String>,
    /// The public URL of this gateway, used in callback URLs and links.
    #[arg(long, env = "LATCHKEY_SERVER_URL", default_value = "http://localhost:3003")]
    server_url: String,
    /// Worker threads of the edge [default: the number of CPUs].
    #[arg(long, env = "LATCHKEY_THREADS")]
    threads: Option<usize>,
    /// Seconds between scans for connections whose tokens near expiry, which are refreshed in
    /// the background.
    #[arg(long, env = "LATCHKEY_REFRESH_SCAN_INTERVAL", default_value_t = 60)]
    refresh_scan_interval: u64,
    /// Seconds to let in-flight requests finish on SIGTERM.
    #[arg(long, env = "LATCHKEY_SHUTDOWN_GRACE", default_value_t = 10)]
    shutdown_grace: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Check(args) => run_check(&args),
        Command::Migrate(args) => run_migrate(&args),
        Command::GenerateKey => {
            println!("{}", KeyRing::generate_key());
            ExitCode::SUCCESS
        }
        Command::Providers(args) => run_providers(args),
        Command::Run(args) => run_function(args),
    }
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Pingora's debug and trace lines print whole request headers, injected credentials
    // included; they stay off whatever LATCHKEY_LOG asks for.
    let no_pingora_debug = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("pingora")
            && matches!(*meta.level(), tracing::Level::DEBUG | tracing::Level::TRACE))
    });
    let json = std::env::var("LATCHKEY_LOG_FORMAT").is_ok_and(|f| f == "json");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter).with(no_pingora_debug);
    if json {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
}

fn run_serve(args: ServeArgs) -> ExitCode {
    match serve(serve_options(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_function(args: RunArgs) -> ExitCode {
    let input = match args.input.as_deref().map(serde_json::from_str).transpose() {
        Ok(input) => input.unwrap_or(serde_json::Value::Null),
        Err(e) => {
            eprintln!("latchkey: --input is not JSON: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = serve_options(args.serve);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("latchkey: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let config =
            ConfigHandle::load(options.load.clone()).map_err(|p| format!("the configuration has problems:\n{p}"))?;
        let app = latchkey::server::open_app(&options, std::sync::Arc::new(config)).await.map_err(|e| e.to_string())?;
        latchkey::functions::cli::run_once(app, &args.integration, &args.function, &args.connection, input, args.save)
            .await
    });
    match result {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("latchkey: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve_options(args: ServeArgs) -> ServeOptions {
    ServeOptions {
        load: args.config.load_options(),
        listen: args.listen,
        database_url: args.database.url(),
        data_dir: args.database.data_dir.clone(),
        secret_key: args.secret_key.filter(|k| !k.is_empty()).map(Secret::new),
        encryption_key: args.encryption_key.filter(|k| !k.is_empty()).map(Secret::new),
        previous_encryption_keys: args
            .previous_encryption_keys
            .into_iter()
            .filter(|k| !k.is_empty())
            .map(Secret::new)
            .collect(),
        server_url: args.server_url,
        threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        shutdown_grace_seconds: args.shutdown_grace,
        refresh_scan_interval: std::time::Duration::from_secs(args.refresh_scan_interval.max(1)),
    }
}

fn run_check(args: &ConfigArgs) -> ExitCode {
    match ConfigHandle::load(args.load_options()) {
        Ok(handle) => {
            let config = handle.current();
            println!(
                "{}: ok ({} providers in the catalog, {} integrations declared, {} models)",
                config.path.display(),
                config.catalog.len(),
                config.integrations.len(),
                config.models.len()
            );
            for warning in latchkey::auth::unsupported_warnings(&config) {
                println!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            println!("{problems}");
            println!("\n{} problem(s) found", problems.len());
            ExitCode::FAILURE
        }
    }
}

fn run_providers(args: ProvidersArgs) -> ExitCode {
    let config_args = match &args.command {
        ProvidersCommand::List { config, .. } | ProvidersCommand::Show { config, .. } => config,
    };
    let handle = match ConfigHandle::load(config_args.load_options()) {
        Ok(handle) => handle,
        Err(problems) => {
            println!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    let config = handle.current();
    let entry = |p: &latchkey::catalog::Provider| {
        let mut value = serde_json::json!({ "name": p.name });
        if let (Some(out), Some(fields)) = (value.as_object_mut(), p.entry.as_object()) {
            out.extend(fields.clone());
        }
        value
    };
    match args.command {
        ProvidersCommand::List { category, auth_mode, json, .. } => {
            let filter = describe::Filter { category, auth_mode };
            let providers = describe::matching(&config.catalog, &filter);
            if json {
                let entries: Vec<serde_json::Value> = providers.iter().map(|p| entry(p)).collect();
                println!("{}", serde_json::Value::Array(entries));
            } else {
                println!("{}", describe::table(&providers));
            }
            ExitCode::SUCCESS
        }
        ProvidersCommand::Show { name, json, .. } => match config.catalog.get(&name) {
            Some(p) if json => {
                println!("{}", entry(p));
                ExitCode::SUCCESS
            }
            Some(p) => {
                println!("{}", describe::card(p));
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("latchkey: there is no provider `{name}`; `latchkey providers list` shows them all");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_migrate(args: &DatabaseArgs) -> ExitCode {
    let url = args.url();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("latchkey: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let db = Db::connect(&url).await?;
        db.migrate().await
    });
    match result {
        Ok(()) => {
            println!("migrations applied to {}", latchkey::store::redact_url(&url));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("latchkey: {e}");
            ExitCode::FAILURE
        }
    }
}
