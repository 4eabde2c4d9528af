//! Tamper evidence through the store and the API: signed batches are verified on ingest and
//! stored with their signature, checkpoints are signed over the tenant's Merkle log, the export
//! verifies offline with `sase-audit`, and a direct edit of the database is found and named.
//! Runs on SQLite, and on PostgreSQL when `SASE_TEST_DATABASE_URL` is set.

mod common;

use base64::Engine as _;
use common::{new_csr, TestApp};
use http::StatusCode;
use sase_audit::verify::{parse, verify, Class, Options};
use sase_control::audit_log::device_key_from_cert;
use sase_control::channel::{ingest_batch, verify_batch_signature};
use sase_model::audit::{
    batch_signing_bytes, BatchSignature, ChainWriter, Decision, EventKind, HttpDetails,
    ALG_ECDSA_P256_SHA256,
};
use sase_model::fleet::Device;
use sase_model::{AuditEvent, Reason, GENESIS_HASH};

struct Edge {
    device: Device,
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    writer: ChainWriter,
}

async fn enrol(app: &TestApp, token: &str) -> Edge {
    let tenant = app.create_tenant(token, "audit-co").await;
    let site = app.create_site(token, &tenant, "branch").await;
    let code = app.claim_code(token, &site).await;
    let (key, csr) = new_csr();
    let body = app
        .enroll(&code, &csr, "edge")
        .await
        .expect_status(StatusCode::OK);
    let device_id = body["device_id"].as_str().expect("device id").to_string();
    let device = app
        .state
        .store
        .devices(&tenant)
        .await
        .expect("devices")
        .into_iter()
        .find(|d| d.id == device_id)
        .expect("stored");
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.serialize_der(),
        &rng,
    )
    .expect("the device key is P-256");
    Edge {
        device,
        key,
        rng,
        writer: ChainWriter::resume(0, GENESIS_HASH.into()),
    }
}

impl Edge {
    fn batch(&mut self, n: u64) -> (Vec<AuditEvent>, BatchSignature) {
        self.batch_at(n, 1_700_000_000_000)
    }

    fn batch_at(&mut self, n: u64, ts_ms: i64) -> (Vec<AuditEvent>, BatchSignature) {
        let events: Vec<AuditEvent> = (0..n)
            .map(|i| {
                let mut e = AuditEvent {
                    seq: 0,
                    prev_hash: String::new(),
                    ts_ms: ts_ms + i as i64,
                    tenant_id: self.device.tenant_id.clone(),
                    device_id: self.device.id.clone(),
                    kind: EventKind::HttpRequest,
                    decision: Decision::Allow,
                    reason: Reason::Allowed,
                    reference: format!("ref-{}", self.writer.next_seq()),
                    policy_version: 1,
                    identity: None,
                    http: Some(HttpDetails::default()),
                    detail: None,
                    waf: None,
                    quic: None,
                    tunnel: None,
                };
                self.writer.link(&mut e);
                e
            })
            .collect();
        let (first, last) = (&events[0], &events[events.len() - 1]);
        let msg = batch_signing_bytes(
            &self.device.tenant_id,
            &self.device.id,
            first.seq,
            last.seq,
            &last.hash(),
        );
        let sig = self.key.sign(&self.rng, &msg).expect("sign");
        let signature = BatchSignature {
            alg: ALG_ECDSA_P256_SHA256.into(),
            sig: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
        };
        (events, signature)
    }
}

async fn upload(app: &TestApp, edge: &Edge, events: &[AuditEvent], sig: &BatchSignature) {
    let pem = app
        .state
        .store
        .device_cert_pem(&edge.device.id)
        .await
        .expect("cert")
        .expect("some cert");
    let key = device_key_from_cert(&pem).expect("P-256 key in the certificate");
    let batch = verify_batch_signature(&edge.device, Some(&key), events, Some(sig))
        .expect("signature verifies");
    ingest_batch(&app.state, &edge.device, events, batch.as_ref())
        .await
        .expect("no store failure")
        .expect("chain continues");
}

async fn export_and_verify(app: &TestApp, token: &str, tenant: &str) -> sase_audit::verify::Report {
    let reply = app
        .get(&format!("/api/tenants/{tenant}/audit/export"), token)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8(reply.body).expect("utf-8");
    let records = parse(&text).expect("a well-formed export");
    verify(
        &records,
        &Options {
            control_plane_key: app.state.signing_key.verifying_key(),
            allow_unsigned: false,
        },
    )
}

#[tokio::test]
async fn signed_batches_checkpoints_and_export_verify_and_edits_are_named() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let mut edge = enrol(&app, &token).await;
    let tenant = edge.device.tenant_id.clone();

    // A batch whose signature does not match is refused before anything is stored.
    let (events, sig) = edge.batch(5);
    let mut forged = sig.clone();
    forged.sig = sig.sig.chars().rev().collect();
    let pem = app
        .state
        .store
        .device_cert_pem(&edge.device.id)
        .await
        .expect("cert")
        .expect("cert");
    let key = device_key_from_cert(&pem).expect("key");
    assert!(verify_batch_signature(&edge.device, Some(&key), &events, Some(&forged)).is_err());
    let mut altered = events.clone();
    altered[4].decision = Decision::Deny;
    assert!(verify_batch_signature(&edge.device, Some(&key), &altered, Some(&sig)).is_err());

    upload(&app, &edge, &events, &sig).await;
    for _ in 0..3 {
        let (events, s) = edge.batch(7);
        upload(&app, &edge, &events, &s).await;
    }

    // Checkpoint: signed over all 26 events, verifiable with the published key.
    let view = app
        .send_json(
            http::Method::POST,
            &format!("/api/tenants/{tenant}/audit/checkpoint"),
            Some(&token),
            &serde_json::json!({}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(view["checkpoint"]["tree_size"], 26);
    let proof = app
        .get(
            &format!(
                "/api/tenants/{tenant}/audit/proof?device={}&seq=9",
                edge.device.id
            ),
            &token,
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(proof["log_index"], 8);

    let report = export_and_verify(&app, &token, &tenant).await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.summary.events, 26);
    assert_eq!(report.summary.batches_verified, 4);

    // Edit one stored event directly in the database: named by device and seq.
    let row: (String,) =
        sqlx::query_as("SELECT event_json FROM audit_events WHERE device_id = $1 AND seq = 12")
            .bind(&edge.device.id)
            .fetch_one(&app.raw)
            .await
            .expect("row");
    let edited = row.0.replace("\"allow\"", "\"deny\"");
    sqlx::query("UPDATE audit_events SET event_json = $1 WHERE device_id = $2 AND seq = 12")
        .bind(&edited)
        .bind(&edge.device.id)
        .execute(&app.raw)
        .await
        .expect("edit");
    let report = export_and_verify(&app, &token, &tenant).await;
    let first = report.findings.first().expect("the edit is found");
    assert_eq!(first.class, Class::Chain, "{first}");
    assert_eq!(first.device.as_deref(), Some(edge.device.id.as_str()));
    assert_eq!(first.seq_from, Some(12), "{first}");
    sqlx::query("UPDATE audit_events SET event_json = $1 WHERE device_id = $2 AND seq = 12")
        .bind(&row.0)
        .bind(&edge.device.id)
        .execute(&app.raw)
        .await
        .expect("restore");

    // Change a stored hash (the leaf): the checkpoint is not re-signed over the changed log.
    sqlx::query("UPDATE audit_events SET hash = $1 WHERE device_id = $2 AND seq = 3")
        .bind("ab".repeat(32))
        .bind(&edge.device.id)
        .execute(&app.raw)
        .await
        .expect("edit hash");
    let report = export_and_verify(&app, &token, &tenant).await;
    let first = report.findings.first().expect("the hash edit is found");
    assert_eq!(first.seq_from, Some(3), "{first}");
    let alerts = app.state.store.alerts(50).await.expect("alerts");
    assert!(alerts.iter().any(|a| a.kind == "audit_checkpoint_mismatch"));
}

#[tokio::test]
async fn consistency_proofs_connect_checkpoints_and_expose_a_rewritten_log() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let mut edge = enrol(&app, &token).await;
    let tenant = edge.device.tenant_id.clone();
    let (events, sig) = edge.batch(6);
    upload(&app, &edge, &events, &sig).await;
    // The head an auditor keeps.
    let kept: sase_model::merkle::SignedTreeHead =
        serde_json::from_value(sign_checkpoint(&app, &token, &tenant).await["checkpoint"].clone())
            .expect("head");
    assert_eq!(kept.tree_size, 6);
    let (events, sig) = edge.batch(9);
    upload(&app, &edge, &events, &sig).await;
    assert_eq!(
        sign_checkpoint(&app, &token, &tenant).await["checkpoint"]["tree_size"],
        15
    );

    let key = app.state.signing_key.verifying_key();
    let check = |answer: &serde_json::Value| {
        let new: sase_model::merkle::SignedTreeHead =
            serde_json::from_value(answer["second_checkpoint"].clone()).expect("later head");
        let proof: Vec<String> = serde_json::from_value(answer["proof"].clone()).expect("proof");
        sase_audit::consistency::check(&kept, &new, &proof, &key)
    };
    let uri = format!("/api/tenants/{tenant}/audit/consistency?first=6");
    let answer = app.get(&uri, &token).await.expect_status(StatusCode::OK);
    assert_eq!(answer["second_checkpoint"]["tree_size"], 15);
    assert_eq!(
        answer["first_checkpoint"]["root_hash"],
        kept.root_hash.as_str()
    );
    assert_eq!(check(&answer), Ok(()));

    // Bad sizes are refused clearly.
    for bad in ["first=0", "first=16", "first=6&second=7"] {
        let reply = app
            .get(
                &format!("/api/tenants/{tenant}/audit/consistency?{bad}"),
                &token,
            )
            .await;
        assert!(reply.status.is_client_error(), "{bad}: {}", reply.status);
    }

    // Whoever rewrites an event the kept head covered cannot produce a proof that passes.
    sqlx::query("UPDATE audit_events SET hash = $1 WHERE device_id = $2 AND seq = 2")
        .bind("cd".repeat(32))
        .bind(&edge.device.id)
        .execute(&app.raw)
        .await
        .expect("edit hash");
    let answer = app.get(&uri, &token).await.expect_status(StatusCode::OK);
    assert!(matches!(
        check(&answer),
        Err(sase_audit::consistency::ConsistencyError::Inconsistent { old: 6, new: 15 })
    ));
}

async fn sign_checkpoint(app: &TestApp, token: &str, tenant: &str) -> serde_json::Value {
    app.send_json(
        http::Method::POST,
        &format!("/api/tenants/{tenant}/audit/checkpoint"),
        Some(token),
        &serde_json::json!({}),
    )
    .await
    .expect_status(StatusCode::OK)
}

#[tokio::test]
async fn retention_deletes_whole_expired_months_and_exports_still_verify() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let mut edge = enrol(&app, &token).await;
    let tenant = edge.device.tenant_id.clone();
    let now = sase_control::state::now_ms();
    // Five events from three years ago, five from today.
    let (old, sig) = edge.batch_at(5, now - 3 * 365 * 86_400_000);
    upload(&app, &edge, &old, &sig).await;
    let (recent, sig) = edge.batch_at(5, now);
    upload(&app, &edge, &recent, &sig).await;
    sign_checkpoint(&app, &token, &tenant).await;

    let base = format!("/api/tenants/{tenant}/audit/retention");
    let view = app.get(&base, &token).await.expect_status(StatusCode::OK);
    assert_eq!(view["months"], 18);
    assert_eq!(view["default"], true);
    let reply = app
        .send_json(
            http::Method::PUT,
            &base,
            Some(&token),
            &serde_json::json!({"months": 0}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    app.send_json(
        http::Method::PUT,
        &base,
        Some(&token),
        &serde_json::json!({"months": 12}),
    )
    .await
    .expect_status(StatusCode::OK);

    let record = app
        .send_json(
            http::Method::POST,
            &format!("{base}/run"),
            Some(&token),
            &serde_json::json!({}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(record["deleted_events"], 5);
    assert_eq!(record["months"], 12);
    assert_eq!(record["devices"][0]["through_seq"], 5);
    assert_eq!(record["devices"][0]["through_hash"], old[4].hash().as_str());
    let signed: sase_model::retention::RetentionRecord =
        serde_json::from_value(record.clone()).expect("record");
    assert_eq!(
        signed.verify(&app.state.signing_key.verifying_key()),
        Ok(())
    );
    // Nothing more has expired.
    let again = app
        .send_json(
            http::Method::POST,
            &format!("{base}/run"),
            Some(&token),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);

    // The content is gone; the skeleton keeps the log and the chain verifiable.
    let row: (String, String) = sqlx::query_as(
        "SELECT event_json, reference FROM audit_events WHERE device_id = $1 AND seq = 2",
    )
    .bind(&edge.device.id)
    .fetch_one(&app.raw)
    .await
    .expect("row");
    assert_eq!(row, (String::new(), String::new()));
    let listed = app
        .get(&format!("/api/audit?tenant={tenant}&limit=100"), &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(listed["events"].as_array().map(Vec::len), Some(5));
    let chain = app
        .get(
            &format!("/api/devices/{}/audit/verify", edge.device.id),
            &token,
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(chain["intact"], true, "{chain}");
    // Same leaves: the next checkpoint signs (no mismatch).
    assert_eq!(
        sign_checkpoint(&app, &token, &tenant).await["checkpoint"]["tree_size"],
        10
    );
    let report = export_and_verify(&app, &token, &tenant).await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.summary.events, 5);
    assert_eq!(report.summary.retention_deleted, 5);

    // Emptying a kept event by hand is not retention: the export shows it missing.
    sqlx::query("UPDATE audit_events SET event_json = '' WHERE device_id = $1 AND seq = 8")
        .bind(&edge.device.id)
        .execute(&app.raw)
        .await
        .expect("edit");
    let report = export_and_verify(&app, &token, &tenant).await;
    let first = report.findings.first().expect("found");
    assert_eq!(first.seq_from, Some(8), "{first}");
}
