//! A throw-away PostgreSQL database for tests (used by this crate's and the broker's tests).

use sqlx::{Connection, Executor, PgConnection};

/// A database created on the local PostgreSQL server for one test and dropped when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL, for `store:`.
    pub url: String,
    name: String,
    admin: String,
}

impl TestDatabase {
    /// Creates one on the server named by `SWITCHYARD_TEST_POSTGRES` (default
    /// `postgres://postgres@127.0.0.1:5432/postgres`). `None` (with a printed reason) when the server
    /// does not answer, so a developer without PostgreSQL can run the rest.
    ///
    /// # Panics
    /// When the server does not answer and `CI=true`: in CI a missing service is a failure, not a skip.
    pub async fn create() -> Option<Self> {
        let admin = std::env::var("SWITCHYARD_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let mut conn = match PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("PostgreSQL is required in CI but {admin} does not answer: {e}")
            }
            Err(e) => {
                eprintln!("skipping: PostgreSQL at {admin} does not answer: {e}");
                return None;
            }
        };
        let name = format!("switchyard_test_{}", uuid::Uuid::new_v4().simple());
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create the test database");
        let mut url = url::Url::parse(&admin).expect("SWITCHYARD_TEST_POSTGRES is a URL");
        url.set_path(&format!("/{name}"));
        Some(Self { url: url.to_string(), name, admin })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
                }
            });
        })
        .join();
    }
}
