//! Shared set-up of the end-to-end tests: a fresh database (SQLite file or a new
//! PostgreSQL database) and the real server on an ephemeral loopback port.

#![allow(dead_code)]

pub mod replay;

use std::sync::Arc;

use usher::clock::SystemClock;
use usher::config::{Config, hash_token};
use usher::server::Running;
use usher::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests create their databases in.
pub fn pg_admin_url() -> String {
    std::env::var("USHER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database that exists only for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(kind: Db) -> TestDb {
        match kind {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("usher.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Db::Postgres => {
                use sqlx::Connection;
                let admin = pg_admin_url();
                let name = format!("usher_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL must run at USHER_TEST_PG (scripts/test.sh starts it)");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_string())
                    .unwrap_or(admin);
                TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Best effort, off the async runtime: a leftover database only costs disk.
            let admin = pg_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async move {
                        use sqlx::Connection;
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&mut c)
                            .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// One integration of a test server.
pub struct TestIntegration {
    pub id: &'static str,
    pub token: String,
}

pub fn integration(id: &'static str) -> TestIntegration {
    TestIntegration {
        id,
        token: format!("{id}-token-{}", uuid::Uuid::new_v4().simple()),
    }
}

pub fn config_text(db_url: &str, integrations: &[TestIntegration], extra: &str) -> String {
    let mut text = format!("listen: 127.0.0.1:0\ndatabase: {db_url}\n{extra}integrations:\n");
    for i in integrations {
        text.push_str(&format!(
            "  - id: {id}\n    name: Test {id}\n    app: Fixture\n    playbook: playbooks/none.yaml\n    base_url: http://127.0.0.1:9\n    service_account: svc-{id}\n    scim_token_sha256: {hash}\n",
            id = i.id,
            hash = hex::encode(hash_token(&i.token)),
        ));
    }
    text
}

/// The real server on an ephemeral port over a fresh database.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub running: Option<Running>,
    pub db: TestDb,
    pub integrations: Vec<TestIntegration>,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start(kind: Db, integrations: Vec<TestIntegration>) -> TestServer {
        Self::start_with(kind, integrations, "").await
    }

    pub async fn start_with(
        kind: Db,
        integrations: Vec<TestIntegration>,
        extra: &str,
    ) -> TestServer {
        let db = TestDb::new(kind).await;
        let config = Config::parse("test.yaml", &config_text(&db.url, &integrations, extra))
            .expect("config");
        let running = usher::server::start(&config).await.expect("server starts");
        TestServer {
            addr: running.addr,
            running: Some(running),
            db,
            integrations,
            client: reqwest::Client::new(),
        }
    }

    pub fn root(&self, id: &str) -> String {
        format!("http://{}/scim/v2/{id}", self.addr)
    }

    pub fn token(&self, id: &str) -> &str {
        &self
            .integrations
            .iter()
            .find(|i| i.id == id)
            .expect("integration")
            .token
    }

    pub fn store(&self) -> &Store {
        &self.running.as_ref().expect("running").store
    }

    /// A request to `path` under the gateway `id`, with its token.
    pub fn req(&self, method: reqwest::Method, id: &str, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.root(id)))
            .bearer_auth(self.token(id))
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A store opened beside the server, to look at what it wrote.
pub async fn open_store(url: &str) -> Store {
    Store::connect(url, Arc::new(SystemClock))
        .await
        .expect("store")
}

/// Runs each named `async fn name(db: Db)` of the file once on SQLite and once on
/// PostgreSQL, as `sqlite::name` and `postgres::name`.
#[allow(unused_macros)]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Db::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Db::Postgres).await } )*
        }
    };
}
