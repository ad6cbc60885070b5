//! The functions and records benchmarks that `bench/functions.sh` prints: function cold start
//! and warm invocation, `batchSave` throughput on SQLite and PostgreSQL, and the latency of a
//! 1,000-record page of `GET /records` with 1,000,000 records stored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::app::App;
use latchkey::config::{Config, ConfigHandle, LoadOptions};
use latchkey::connection::Credentials;
use latchkey::functions::{self, catalog, Context, Limits};
use latchkey::records::{decode_cursor, Dataset, ListQuery, Records};
use latchkey::secret::Secret;
use latchkey::store::connections::NewConnection;
use latchkey::store::{Db, KeyRing, Store};
use serde_json::{json, Value};

const SAVE_RECORDS: usize = 100_000;
const BATCH: usize = 1_000;

/// How many records to store before timing pages (`LATCHKEY_BENCH_RECORDS`, default 1,000,000).
fn stored() -> usize {
    std::env::var("LATCHKEY_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
        .max(SAVE_RECORDS + 10_000)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("latchkey-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("functions/bench/actions"))?;
    std::env::set_var("LATCHKEY_DATA_DIR", dir.join("data"));

    let sqlite = format!("sqlite://{}", dir.join("bench.db").display());
    let app = open(&sqlite).await?;
    functions_bench(&app, &dir).await?;
    records_bench("SQLite", &app.store.db, &app).await?;

    let admin_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("latchkey_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let admin = Db::connect(&admin_url).await?;
    if let Db::Postgres(pool) = &admin {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(pool).await?;
    }
    let mut url = url::Url::parse(&admin_url)?;
    url.set_path(&format!("/{name}"));
    let result = async {
        let pg = open(url.as_str()).await?;
        records_bench("PostgreSQL", &pg.store.db, &pg).await
    }
    .await;
    if let Db::Postgres(pool) = &admin {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(pool).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn open(url: &str) -> Result<Arc<App>, Box<dyn std::error::Error>> {
    let db = Db::connect(url).await?;
    db.migrate().await?;
    let store = Store::open(db, KeyRing::from_base64(&KeyRing::generate_key(), &[])?).await?;
    let options = LoadOptions { config_path: PathBuf::from("nango.yaml"), config_required: false, catalog_dir: None };
    let config = Arc::new(ConfigHandle::with(Config::empty(), options));
    Ok(App::new(config, store, Secret::new("bench"), "http://localhost"))
}

async fn connection(app: &App) -> Result<Arc<latchkey::connection::Connection>, Box<dyn std::error::Error>> {
    let (connection, _) = app
        .store
        .connections
        .upsert(&NewConnection {
            provider_config_key: "bench".into(),
            connection_id: "bench".into(),
            provider: "github".into(),
            credentials: Credentials::OAuth2 {
                access_token: "x".into(),
                refresh_token: None,
                expires_at: None,
                raw: Value::Null,
                config_override: None,
            },
            connection_config: Default::default(),
            metadata: None,
            tags: BTreeMap::new(),
            end_user: None,
            webhook_url_override: None,
        })
        .await?;
    Ok(connection)
}

async fn functions_bench(app: &Arc<App>, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::write(
        dir.join("functions/bench/actions/noop.ts"),
        "export default async function run(nango: unknown, input: { n: number }): Promise<number> { return input.n + 1; }\n",
    )?;
    let document = json!({ "integrations": { "bench": { "actions": { "noop": {} } } } });
    let loaded = catalog::load(&document, &dir.join("nango.yaml"), dir);
    let function = loaded.functions.get("bench", "noop").cloned().ok_or("the bench function did not load")?;
    let connection = connection(app).await?;

    let started = Instant::now();
    tokio::task::spawn_blocking(|| functions::sandbox::Sandbox::get().and_then(|s| s.js_engine()).map(|_| ()))
        .await??;
    println!(
        "JavaScript engine compiled (once per build; later starts load it from the data directory): {:?}",
        started.elapsed()
    );

    let invoke = |n: i64| {
        let context = Context {
            function: Arc::clone(&function),
            connection: Arc::clone(&connection),
            input: json!({ "n": n }),
            run: None,
            save: false,
            paginate: None,
            limits: Limits::from_env(),
        };
        functions::invoke(Arc::clone(app), context)
    };
    let started = Instant::now();
    let first = invoke(1).await;
    let cold = started.elapsed();
    assert_eq!(first.result.ok(), Some(json!(2)));
    let mut warm = Vec::new();
    for n in 0..300 {
        let started = Instant::now();
        let finished = invoke(n).await;
        warm.push(started.elapsed());
        assert_eq!(finished.result.ok(), Some(json!(n + 1)));
    }
    warm.sort();
    println!("function cold start (first run: fresh instance, QuickJS, SDK and function modules): {cold:?}");
    println!(
        "function warm invocation (every run is a fresh sandboxed instance): median {:?}, p95 {:?}",
        warm[warm.len() / 2],
        warm[warm.len() * 95 / 100]
    );
    Ok(())
}

fn records(from: usize, count: usize) -> Vec<Value> {
    (from..from + count)
        .map(|i| {
            json!({
                "id": format!("issue-{i}"),
                "number": i,
                "title": format!("Issue number {i} about something"),
                "state": if i % 3 == 0 { "closed" } else { "open" },
                "labels": ["bug", "p2"],
                "author": "octocat",
                "updated_at": "2026-11-25T10:00:00.000Z"
            })
        })
        .collect()
}

async fn records_bench(name: &str, db: &Db, app: &App) -> Result<(), Box<dyn std::error::Error>> {
    let connection = connection(app).await?;
    let store = Records::new(db.clone());
    let dataset = Dataset::new(connection.id, "Issue", None);
    let mut saving = Duration::ZERO;
    for from in (0..SAVE_RECORDS).step_by(BATCH) {
        let batch = records(from, BATCH);
        let started = Instant::now();
        store.save(&dataset, batch, 1, latchkey::time::now_millis()).await?;
        saving += started.elapsed();
    }
    println!(
        "{name}: batchSave of {SAVE_RECORDS} new records in batches of {BATCH}: {:.0} records/s",
        SAVE_RECORDS as f64 / saving.as_secs_f64()
    );
    let started = Instant::now();
    store.save(&dataset, records(0, BATCH), 2, latchkey::time::now_millis()).await?;
    println!("{name}: batchSave of {BATCH} unchanged records: {:?}", started.elapsed());

    let stored = stored();
    let started = Instant::now();
    for from in (SAVE_RECORDS..stored).step_by(10_000) {
        store.save(&dataset, records(from, 10_000), 1, latchkey::time::now_millis()).await?;
    }
    println!("{name}: stored {stored} records ({:?} to add the rest)", started.elapsed());
    if let Db::Postgres(pool) = db {
        sqlx::query("ANALYZE records").execute(pool).await?;
    }
    let first = store.list(&dataset, &ListQuery { limit: 1, ..Default::default() }).await?;
    let first_seq = decode_cursor(first.records[0]["_nango_metadata"]["cursor"].as_str().unwrap_or_default())?;
    let mut pages = Vec::new();
    for i in 0..40 {
        let after = first_seq + (i * 24_989) % (stored as i64 - 2_000);
        let started = Instant::now();
        let page =
            store.list(&dataset, &ListQuery { after_seq: Some(after), limit: 1_000, ..Default::default() }).await?;
        let body = json!({ "records": page.records, "next_cursor": page.next_cursor }).to_string();
        pages.push(started.elapsed());
        assert_eq!(page.records.len(), 1_000);
        assert!(body.len() > 100_000);
    }
    pages.sort();
    println!(
        "{name}: a 1,000-record page (query and JSON) with {stored} records stored: median {:?}, p95 {:?}",
        pages[pages.len() / 2],
        pages[pages.len() * 95 / 100]
    );
    Ok(())
}
