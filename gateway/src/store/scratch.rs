//! Databases for tests: a SQLite file, and a new PostgreSQL database on the server named by
//! DATABASE_URL (default the local one) unless LATCHKEY_TEST_DATABASES leaves it out, as the
//! end-to-end tests do.

use super::Db;

/// A database that exists for one test: removed when dropped.
pub struct Scratch {
    pub url: String,
    postgres: Option<(String, String)>,
    dir: Option<std::path::PathBuf>,
}

impl Scratch {
    pub fn sqlite() -> Scratch {
        let dir = std::env::temp_dir().join(format!("latchkey-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { url: format!("sqlite://{}", dir.join("t.db").display()), postgres: None, dir: Some(dir) }
    }

    pub async fn postgres() -> Scratch {
        let admin =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("latchkey_test_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await.unwrap();
        pool.close().await;
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&format!("/{name}"));
        Scratch { url: url.to_string(), postgres: Some((admin, name)), dir: None }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin, name)) = self.postgres.take() {
            // Dropping happens inside the test's runtime, which cannot be blocked on.
            let dropped = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread().enable_all().build().map(|runtime| {
                    runtime.block_on(async {
                        let pool = sqlx::PgPool::connect(&admin).await?;
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                            .execute(&pool)
                            .await
                    })
                })
            });
            let _ = dropped.join();
        }
    }
}

/// A migrated scratch database of each kind the tests run against.
pub async fn databases() -> Vec<(Db, Scratch)> {
    let out = empty_databases().await;
    for (db, _) in &out {
        db.migrate().await.unwrap();
    }
    out
}

/// A scratch database of each kind, without a schema: tests of a migration start from it.
pub async fn empty_databases() -> Vec<(Db, Scratch)> {
    let wanted = std::env::var("LATCHKEY_TEST_DATABASES").unwrap_or_else(|_| "sqlite,postgres".into());
    let mut out = Vec::new();
    for kind in wanted.split(',').map(str::trim) {
        let scratch = match kind {
            "sqlite" => Scratch::sqlite(),
            "postgres" => Scratch::postgres().await,
            other => panic!("LATCHKEY_TEST_DATABASES names `{other}`"),
        };
        out.push((Db::connect(&scratch.url).await.unwrap(), scratch));
    }
    out
}

/// Stores a connection (with placeholder credentials) and returns its row id.
pub async fn connection(db: &Db, provider_config_key: &str, connection_id: &str) -> i64 {
    crate::with_pool!(db, pool => sqlx::query_scalar(
        "INSERT INTO connections (provider_config_key, connection_id, provider, credentials, credentials_nonce,
             credentials_key_id, created_at, updated_at)
         VALUES ($1, $2, 'github', $3, $3, 'k', 0, 0) RETURNING id",
    )
    .bind(provider_config_key)
    .bind(connection_id)
    .bind(vec![0u8])
    .fetch_one(pool)
    .await
    .unwrap())
}
