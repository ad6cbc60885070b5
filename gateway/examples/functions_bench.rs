//! The functions and records benchmarks that `bench/functions.sh` prints: function cold start
//! and warm invocation, `batchSave` throughput on SQLite and PostgreSQL, and the latency of a
//! 1,000-record page of `GET /records` with 1,000,000 records stored. Each figure is printed with
//! its target and, as the developers' guide asks, as a ratio against a baseline measured in the
//! same run on the same machine: a bare sandboxed WebAssembly call and a `GET /health` round
//! trip for functions, a plain bulk INSERT of the same rows for `batchSave`, a `SELECT 1` round
//! trip for pages.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::app::App;
use latchkey::config::{Config, ConfigHandle, LoadOptions};
use latchkey::connection::Credentials;
use latchkey::functions::{self, catalog, Context, Limits};
use latchkey::records::{decode_cursor, Action, Dataset, ListQuery, Records};
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
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, dir] = args.as_slice() {
        if flag == "--cold" {
            return cold_start(std::path::Path::new(dir)).await;
        }
    }
    let dir = std::env::temp_dir().join(format!("latchkey-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("functions/bench/actions"))?;
    std::env::set_var("LATCHKEY_DATA_DIR", dir.join("data"));

    println!("{}", machine());
    let sqlite = format!("sqlite://{}", dir.join("bench.db").display());
    let app = open(&sqlite, bench_config(&dir)?).await?;
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
        let pg = open(url.as_str(), Config::empty()).await?;
        records_bench("PostgreSQL", &pg.store.db, &pg).await
    }
    .await;
    if let Db::Postgres(pool) = &admin {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(pool).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("load average at the end: {}", load_average());
    result
}

/// The CPUs, memory and load average, for the reader to judge the figures by.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']));
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map(|kb| format!("{} GiB", kb / (1024 * 1024)))
        .unwrap_or_default();
    format!(
        "machine: {} × {}, {memory}; load average at the start: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        model.unwrap_or("unknown CPU"),
        load_average()
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// One figure, its target and whether this run met it.
fn report(what: &str, figure: String, target: &str, met: bool, baseline: String) {
    let verdict = if met { "met" } else { "NOT met" };
    println!("{what}: {figure} (target {target}: {verdict}); {baseline}");
}

async fn open(url: &str, config: Config) -> Result<Arc<App>, Box<dyn std::error::Error>> {
    let db = Db::connect(url).await?;
    db.migrate().await?;
    let store = Store::open(db, KeyRing::from_base64(&KeyRing::generate_key(), &[])?).await?;
    let options = LoadOptions { config_path: PathBuf::from("nango.yaml"), config_required: false, catalog_dir: None };
    let config = Arc::new(ConfigHandle::with(config, options));
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

/// The configuration the function figures run with: one action, `bench/noop`, which returns
/// its input plus one.
fn bench_config(dir: &std::path::Path) -> Result<Config, Box<dyn std::error::Error>> {
    std::fs::write(
        dir.join("functions/bench/actions/noop.ts"),
        "export default async function run(nango: unknown, input: { n: number }): Promise<number> { return input.n + 1; }\n",
    )?;
    let document = json!({ "integrations": { "bench": { "actions": { "noop": {} } } } });
    let loaded = catalog::load(&document, &dir.join("nango.yaml"), dir);
    let mut config = Config::empty();
    config.functions = Arc::new(loaded.functions);
    Ok(config)
}

/// The context of a run of the bench's action, for `functions::invoke`.
async fn noop_function(app: &Arc<App>) -> Result<impl Fn(i64) -> functions::Context, Box<dyn std::error::Error>> {
    let function =
        app.config.current().functions.get("bench", "noop").cloned().ok_or("the bench function did not load")?;
    let connection = connection(app).await?;
    Ok(move |n: i64| Context {
        function: Arc::clone(&function),
        connection: Arc::clone(&connection),
        input: json!({ "n": n }),
        run: None,
        save: false,
        paginate: None,
        limits: Limits::from_env(),
    })
}

/// A cold start, in a process of its own (`functions_bench --cold DIR`): the engine loaded from
/// the data directory, then the function's first run. Prints the time for the parent to read.
async fn cold_start(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let url = format!("sqlite://{}", dir.join(format!("cold-{}.db", uuid::Uuid::new_v4())).display());
    let app = open(&url, bench_config(dir)?).await?;
    let context = noop_function(&app).await?;
    let started = Instant::now();
    tokio::task::spawn_blocking(|| functions::sandbox::Sandbox::get().and_then(|s| s.js_engine()).map(|_| ()))
        .await??;
    let first = functions::invoke(Arc::clone(&app), context(1)).await;
    let cold = started.elapsed();
    assert_eq!(first.result.ok(), Some(json!(2)));
    println!("COLD {}", cold.as_micros());
    Ok(())
}

/// The host side of the baseline guest: every call answers `{}`.
struct NoHost;

impl functions::sandbox::Host for NoHost {
    fn call(&mut self, _op: &str, _arg: &[u8]) -> Vec<u8> {
        b"{}".to_vec()
    }
}

/// The least a sandboxed run costs: a fresh instance of a WebAssembly guest that makes one host
/// call and returns.
const BASELINE_GUEST: &str = r#"(module
  (import "latchkey" "call" (func $call (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "output")
  (data (i32.const 16) "2")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (drop (call $call (i32.const 0) (i32.const 6) (i32.const 16) (i32.const 1)))
    (i32.const 0)))"#;

fn median(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() * 95 / 100])
}

async fn functions_bench(app: &Arc<App>, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let context = noop_function(app).await?;
    let started = Instant::now();
    tokio::task::spawn_blocking(|| functions::sandbox::Sandbox::get().and_then(|s| s.js_engine()).map(|_| ()))
        .await??;
    println!(
        "JavaScript engine compiled (once per build; later starts load it from the data directory): {:?}",
        started.elapsed()
    );

    let mut colds = Vec::new();
    for _ in 0..5 {
        let output = std::process::Command::new(std::env::current_exe()?).arg("--cold").arg(dir).output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let micros = text.lines().find_map(|l| l.strip_prefix("COLD ")).and_then(|m| m.trim().parse().ok());
        let micros: u64 = micros
            .ok_or_else(|| format!("the cold-start process failed: {}", String::from_utf8_lossy(&output.stderr)))?;
        colds.push(Duration::from_micros(micros));
    }

    // What a user sees: `POST /action/trigger` to the gateway's API over loopback HTTP, the
    // function already loaded; beside it, the same client's `GET /health` round trip.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, latchkey::api::service(Arc::clone(app))).into_future());
    let client = reqwest::Client::new();
    let trigger = |n: i64| {
        client
            .post(format!("http://{address}/action/trigger"))
            .bearer_auth("bench")
            .header("Provider-Config-Key", "bench")
            .header("Connection-Id", "bench")
            .json(&json!({ "action_name": "noop", "input": { "n": n } }))
            .send()
    };
    assert_eq!(trigger(1).await?.json::<Value>().await?, json!(2));
    let mut warm = Vec::new();
    for n in 0..300 {
        let started = Instant::now();
        let output: Value = trigger(n).await?.json().await?;
        warm.push(started.elapsed());
        assert_eq!(output, json!(n + 1));
    }
    let mut health = Vec::new();
    for _ in 0..300 {
        let started = Instant::now();
        let body = client.get(format!("http://{address}/health")).send().await?.bytes().await?;
        health.push(started.elapsed());
        assert!(!body.is_empty());
    }
    let (round_trip, _) = median(health);
    let mut in_process = Vec::new();
    for n in 0..300 {
        let started = Instant::now();
        let finished = functions::invoke(Arc::clone(app), context(n)).await;
        in_process.push(started.elapsed());
        assert_eq!(finished.result.ok(), Some(json!(n + 1)));
    }
    let baseline = tokio::task::spawn_blocking(|| -> Result<Vec<Duration>, functions::sandbox::SandboxError> {
        let sandbox = functions::sandbox::Sandbox::get()?;
        let guest = sandbox.prepare(BASELINE_GUEST.as_bytes())?;
        (0..300)
            .map(|_| {
                let started = Instant::now();
                sandbox.run(&guest, b"{}", Box::new(NoHost), Duration::from_secs(5), 16 << 20)?;
                Ok(started.elapsed())
            })
            .collect()
    })
    .await??;
    let (bare, _) = median(baseline);

    let (cold, cold_worst) = (median(colds.clone()).0, colds.iter().max().copied().unwrap_or_default());
    report(
        "function cold start (new process: engine loaded from the data directory, first run)",
        format!("median of 5 {cold:?}, worst {cold_worst:?}"),
        "< 20 ms",
        cold < Duration::from_millis(20),
        format!("{:.0} × a bare sandboxed WebAssembly call ({bare:?})", cold.as_secs_f64() / bare.as_secs_f64()),
    );
    let (median_warm, p95) = median(warm);
    report(
        "function warm invocation (POST /action/trigger over loopback HTTP, each run a fresh sandboxed instance)",
        format!("median {median_warm:?}, p95 {p95:?}"),
        "< 1 ms",
        median_warm < Duration::from_millis(1),
        format!(
            "{:.1} × a GET /health round trip ({round_trip:?}), {:.1} × a bare sandboxed WebAssembly call ({bare:?})",
            median_warm.as_secs_f64() / round_trip.as_secs_f64(),
            median_warm.as_secs_f64() / bare.as_secs_f64()
        ),
    );
    let (median_run, run_p95) = median(in_process);
    println!(
        "  of which the run itself (functions::invoke, in process): median {median_run:?}, p95 {run_p95:?}; \
         {:.1} × a bare sandboxed WebAssembly call",
        median_run.as_secs_f64() / bare.as_secs_f64()
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

/// The baseline for `batchSave`: the same rows, serialized the same way, written by one plain
/// bulk INSERT per batch and one transaction per batch into a scratch table keyed like
/// `records`, on the same database. Returns records per second.
async fn bulk_insert_baseline(db: &Db) -> Result<f64, Box<dyn std::error::Error>> {
    const TABLE: &str = "CREATE TABLE bench_baseline (connection BIGINT NOT NULL, model TEXT NOT NULL,
        external_id TEXT NOT NULL, data TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (connection, model, external_id))";
    let mut elapsed = Duration::ZERO;
    for from in (0..SAVE_RECORDS).step_by(BATCH) {
        let batch = records(from, BATCH);
        let started = Instant::now();
        let ids: Vec<String> = batch.iter().map(|r| r["id"].as_str().unwrap_or_default().to_string()).collect();
        let data: Vec<String> = batch.iter().map(Value::to_string).collect();
        let seqs: Vec<i64> = (from as i64..(from + BATCH) as i64).collect();
        match db {
            Db::Postgres(pool) => {
                if from == 0 {
                    sqlx::query(TABLE).execute(pool).await?;
                }
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO bench_baseline (connection, model, external_id, data, seq)
                     SELECT 1, 'Issue', t.id, t.data, t.seq FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS t(id, data, seq)",
                )
                .bind(&ids)
                .bind(&data)
                .bind(&seqs)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Db::Sqlite(pool) => {
                if from == 0 {
                    sqlx::query(TABLE).execute(pool).await?;
                }
                let mut tx = pool.begin().await?;
                let mut q =
                    sqlx::QueryBuilder::new("INSERT INTO bench_baseline (connection, model, external_id, data, seq) ");
                q.push_values(ids.iter().zip(&data).zip(&seqs), |mut row, ((id, data), seq)| {
                    row.push_bind(1_i64).push_bind("Issue").push_bind(id).push_bind(data).push_bind(*seq);
                });
                q.build().execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        elapsed += started.elapsed();
    }
    Ok(SAVE_RECORDS as f64 / elapsed.as_secs_f64())
}

/// The baseline for pages: the median `SELECT 1` round trip to the same database.
async fn select_one_baseline(db: &Db) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut times = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let one: i64 = match db {
            Db::Postgres(pool) => sqlx::query_scalar("SELECT 1::bigint").fetch_one(pool).await?,
            Db::Sqlite(pool) => sqlx::query_scalar("SELECT 1").fetch_one(pool).await?,
        };
        times.push(started.elapsed());
        assert_eq!(one, 1);
    }
    Ok(median(times).0)
}

/// A page query, given a cursor position that varies from page to page.
type PageQuery = Box<dyn Fn(i64) -> ListQuery>;

async fn records_bench(name: &str, db: &Db, app: &App) -> Result<(), Box<dyn std::error::Error>> {
    let connection = connection(app).await?;
    let store = Records::new(db.clone());
    let dataset = Dataset::new(connection.id, "Issue", None);
    let baseline = bulk_insert_baseline(db).await?;
    let mut saving = Duration::ZERO;
    for from in (0..SAVE_RECORDS).step_by(BATCH) {
        let batch = records(from, BATCH);
        let started = Instant::now();
        store.save(&dataset, batch, 1, latchkey::time::now_millis()).await?;
        saving += started.elapsed();
    }
    let rate = SAVE_RECORDS as f64 / saving.as_secs_f64();
    let target = if db.is_postgres() { 50_000.0 } else { 0.0 };
    report(
        &format!("{name}: batchSave of {SAVE_RECORDS} new records in batches of {BATCH}"),
        format!("{rate:.0} records/s"),
        if db.is_postgres() { ">= 50,000 records/s" } else { "none on SQLite" },
        rate >= target,
        format!("{:.2} × a plain bulk INSERT of the same rows ({baseline:.0} records/s)", rate / baseline),
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
    // Changes to page through by action and time, after every record was added: every 10th
    // record updated, every 100th deleted.
    let changed_since = latchkey::time::now_millis();
    for from in (0..stored).step_by(100_000) {
        let updated: Vec<Value> = records(from, 100_000)
            .into_iter()
            .step_by(10)
            .map(|mut r| {
                r["state"] = json!("changed");
                r
            })
            .collect();
        store.update(&dataset, updated, 1, latchkey::time::now_millis()).await?;
        let deleted: Vec<Value> =
            (from..from + 100_000).step_by(100).map(|i| json!({ "id": format!("issue-{i}") })).collect();
        store.delete(&dataset, deleted, latchkey::time::now_millis()).await?;
    }
    match db {
        Db::Postgres(pool) => {
            sqlx::query("ANALYZE records").execute(pool).await?;
        }
        Db::Sqlite(pool) => {
            sqlx::query("ANALYZE").execute(pool).await?;
        }
    }
    let round_trip = select_one_baseline(db).await?;
    let first = store.list(&dataset, &ListQuery { limit: 1, ..Default::default() }).await?;
    let first_record: Value = serde_json::from_str(first.records[0].get())?;
    let first_seq = decode_cursor(first_record["_nango_metadata"]["cursor"].as_str().unwrap_or_default())?;
    let pages: [(&str, PageQuery); 3] = [
        ("after a cursor", Box::new(|after| ListQuery { after_seq: Some(after), limit: 1_000, ..Default::default() })),
        (
            "after a cursor, filter=updated,deleted",
            Box::new(|after| ListQuery {
                after_seq: Some(after / 2),
                actions: vec![Action::Updated, Action::Deleted],
                limit: 1_000,
                ..Default::default()
            }),
        ),
        (
            "modified_after, filter=deleted",
            Box::new(move |_| ListQuery {
                modified_after: Some(changed_since),
                actions: vec![Action::Deleted],
                limit: 1_000,
                ..Default::default()
            }),
        ),
    ];
    for (what, query) in pages {
        let mut times = Vec::new();
        for i in 0..40 {
            let after = first_seq + (i * 24_989) % (stored as i64 - 2_000);
            let started = Instant::now();
            let page = store.list(&dataset, &query(after)).await?;
            let body = serde_json::to_string(&page)?;
            times.push(started.elapsed());
            assert_eq!(page.records.len(), 1_000, "{what}");
            assert!(body.len() > 100_000);
        }
        let (median_page, p95) = median(times);
        report(
            &format!("{name}: a 1,000-record page {what} (query and JSON), {stored} records stored"),
            format!("median {median_page:?}, p95 {p95:?}"),
            "< 20 ms",
            median_page < Duration::from_millis(20),
            format!(
                "{:.1} × a SELECT 1 round trip ({round_trip:?})",
                median_page.as_secs_f64() / round_trip.as_secs_f64()
            ),
        );
    }
    Ok(())
}
