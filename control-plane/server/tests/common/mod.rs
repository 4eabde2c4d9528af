//! Shared harness of the control-plane integration tests: a fresh real database per test
//! (SQLite file by default, a new PostgreSQL database when `SASE_TEST_DATABASE_URL` names a
//! server), the real axum router driven in-process, and small request helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use ed25519_dalek::SigningKey;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use rand::RngCore as _;
use sase_control::state::{AppState, Hub, SharedState};
use sase_control::store::{Backend, Store};
use sase_control::tls::DeviceCertVerifier;
use serde_json::Value;
use sqlx::AnyPool;
use tower::ServiceExt as _;

/// Environment variable naming a PostgreSQL server to test against (any database on it; each
/// test creates and later drops its own `sase_test_<hex>` database).
pub const PG_ENV: &str = "SASE_TEST_DATABASE_URL";

/// Password of the bootstrapped admin.
pub const ADMIN_PASSWORD: &str = "pw";

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Replaces the database name (the URL path) of a PostgreSQL URL, keeping any query.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// A test's own database; removed when dropped (kept, and named on stderr, when the test
/// failed, to look at).
pub struct TestDb {
    /// URL the store (and any raw pool) connects to.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    SqliteDir(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    /// True when this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self.cleanup, Cleanup::Postgres { .. })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed; its database is kept: {}", self.url);
            return;
        }
        match &self.cleanup {
            Cleanup::SqliteDir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                // Drop is synchronous and may run inside the test's runtime: use a thread with
                // its own runtime. FORCE ends the test's still-open pool connections.
                let admin_url = admin_url.clone();
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let done = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.block_on(async move {
                        let pool = sqlx::any::AnyPoolOptions::new()
                            .max_connections(1)
                            .connect(&admin_url)
                            .await?;
                        sqlx::raw_sql(&sql).execute(&pool).await?;
                        pool.close().await;
                        Ok::<(), sqlx::Error>(())
                    })
                })
                .join();
                if let Ok(Err(err)) = done {
                    eprintln!("could not drop test database {name}: {err}");
                }
            }
        }
    }
}

/// A migrated store on a database of its own: a SQLite file in a new temporary directory, or,
/// with `SASE_TEST_DATABASE_URL` set, a new database created on that PostgreSQL server.
pub async fn fresh_store() -> (Store, TestDb) {
    sqlx::any::install_default_drivers();
    let db = match std::env::var(PG_ENV) {
        Ok(admin_url) if !admin_url.trim().is_empty() => {
            let name = format!("sase_test_{}", random_hex(8));
            let admin = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("connecting to {PG_ENV}={admin_url}: {e}"));
            sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .expect("CREATE DATABASE");
            admin.close().await;
            TestDb {
                url: with_database(&admin_url, &name),
                cleanup: Cleanup::Postgres { admin_url, name },
            }
        }
        _ => {
            let dir = std::env::temp_dir().join(format!("sase-control-test-{}", random_hex(8)));
            std::fs::create_dir_all(&dir).expect("temp dir");
            TestDb {
                url: format!("sqlite://{}?mode=rwc", dir.join("control.db").display()),
                cleanup: Cleanup::SqliteDir(dir),
            }
        }
    };
    let store = Store::connect(&db.url).await.expect("Store::connect");
    assert_eq!(
        store.backend() == Backend::Postgres,
        db.is_postgres(),
        "the store runs on the backend the test asked for"
    );
    (store, db)
}

/// A running control plane (in-process) on a fresh database.
pub struct TestApp {
    /// The state handed to the router.
    pub state: SharedState,
    /// The real router.
    pub router: Router,
    /// A second, independent connection pool on the same database, for raw SQL (tampering).
    pub raw: AnyPool,
    /// Dropped last: removes the database.
    pub db: TestDb,
}

/// A response, read whole.
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body text when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the status, showing the body when it differs; returns the JSON body (or Null
    /// for an empty one).
    pub fn expect_status(&self, status: StatusCode) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

impl TestApp {
    /// State built as `main.rs` does (random signing key, empty hub, verifier without roots),
    /// the first admin bootstrapped as `admin` / [`ADMIN_PASSWORD`].
    pub async fn new() -> TestApp {
        let (store, db) = fresh_store().await;
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        let state = Arc::new(AppState {
            store,
            signing_key: SigningKey::from_bytes(&seed),
            policy_keys: sase_control::key_rotation::PolicyKeys::new(SigningKey::from_bytes(&seed)),
            hub: Hub::default(),
            public_url: "https://127.0.0.1:1".to_string(),
            device_verifier: Arc::new(DeviceCertVerifier::new(&[]).expect("verifier")),
            crs: sase_waf::CrsPaths::default(),
            waf_known_good: Default::default(),
        });
        let generated =
            sase_control::auth::bootstrap_admin(&state, "admin", Some(ADMIN_PASSWORD.into()))
                .await
                .expect("bootstrap admin");
        assert_eq!(generated, None, "a password from the caller is not echoed");
        let raw = sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&db.url)
            .await
            .expect("raw pool");
        TestApp {
            router: sase_control::router(state.clone()),
            state,
            raw,
            db,
        }
    }

    /// Sends one request through the router.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request with an optional bearer credential and an optional typed body.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        bearer: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = bearer {
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some((content_type, bytes)) => builder
                .header(http::header::CONTENT_TYPE, content_type)
                .body(Body::from(bytes)),
            None => builder.body(Body::empty()),
        }
        .expect("request");
        self.send(request).await
    }

    /// GET with a bearer credential.
    pub async fn get(&self, uri: &str, bearer: &str) -> Reply {
        self.call(Method::GET, uri, Some(bearer), None).await
    }

    /// A JSON request with a bearer credential.
    pub async fn send_json(
        &self,
        method: Method,
        uri: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> Reply {
        let bytes = serde_json::to_vec(body).expect("json");
        self.call(method, uri, bearer, Some(("application/json", bytes)))
            .await
    }

    /// Signs in as the bootstrapped admin; returns the session secret.
    pub async fn login(&self) -> String {
        let reply = self
            .send_json(
                Method::POST,
                "/api/login",
                None,
                &serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}),
            )
            .await;
        let body = reply.expect_status(StatusCode::OK);
        body["session"].as_str().expect("session").to_string()
    }

    /// Creates a tenant; returns its id.
    pub async fn create_tenant(&self, bearer: &str, name: &str) -> String {
        let reply = self
            .send_json(
                Method::POST,
                "/api/tenants",
                Some(bearer),
                &serde_json::json!({ "name": name }),
            )
            .await;
        let body = reply.expect_status(StatusCode::CREATED);
        body["id"].as_str().expect("tenant id").to_string()
    }

    /// Creates a site; returns its id.
    pub async fn create_site(&self, bearer: &str, tenant_id: &str, name: &str) -> String {
        let reply = self
            .send_json(
                Method::POST,
                &format!("/api/tenants/{tenant_id}/sites"),
                Some(bearer),
                &serde_json::json!({ "name": name }),
            )
            .await;
        let body = reply.expect_status(StatusCode::CREATED);
        body["id"].as_str().expect("site id").to_string()
    }

    /// Creates a claim code for a site (default lifetime); returns the code.
    pub async fn claim_code(&self, bearer: &str, site_id: &str) -> String {
        let reply = self
            .call(
                Method::POST,
                &format!("/api/sites/{site_id}/claim-codes"),
                Some(bearer),
                None,
            )
            .await;
        let body = reply.expect_status(StatusCode::CREATED);
        body["code"].as_str().expect("code").to_string()
    }

    /// Sends an enrolment request (no credential: the claim code is the credential).
    pub async fn enroll(&self, code: &str, csr_pem: &str, name: &str) -> Reply {
        self.send_json(
            Method::POST,
            "/api/enroll",
            None,
            &serde_json::json!({
                "claim_code": code,
                "csr_pem": csr_pem,
                "name": name,
                "edge_version": "test-0.1",
            }),
        )
        .await
    }

    /// Creates a tenant, a site and enrols one device with a fresh key; returns the stored
    /// device.
    pub async fn enrolled_device(
        &self,
        bearer: &str,
        tenant_name: &str,
    ) -> sase_model::fleet::Device {
        let tenant = self.create_tenant(bearer, tenant_name).await;
        let site = self.create_site(bearer, &tenant, "branch").await;
        let code = self.claim_code(bearer, &site).await;
        let (_, csr) = new_csr();
        let body = self
            .enroll(&code, &csr, "edge")
            .await
            .expect_status(StatusCode::OK);
        let device_id = body["device_id"].as_str().expect("device id");
        self.state
            .store
            .devices(&tenant)
            .await
            .expect("devices")
            .into_iter()
            .find(|d| d.id == device_id)
            .expect("enrolled device is stored")
    }
}

/// A fresh device key and a CSR for it (PEM), as an edge makes them.
pub fn new_csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (key, csr)
}

#[test]
fn database_name_is_replaced_keeping_the_query() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
}
