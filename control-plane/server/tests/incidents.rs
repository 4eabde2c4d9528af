//! Incidents through the API: opened from stored audit events, NIS2 Art. 23 deadlines and
//! their alerts (the watch driven with simulated time), submissions in order, the report as
//! JSON and Markdown, and bad input refused with clear errors. Runs on SQLite, and on
//! PostgreSQL when `SASE_TEST_DATABASE_URL` is set.

mod common;

use common::{new_csr, TestApp};
use http::StatusCode;
use sase_control::channel::ingest_batch;
use sase_control::incidents::check_deadlines;
use sase_model::audit::{ChainWriter, Decision, EventKind, HttpDetails};
use sase_model::{AuditEvent, Reason, GENESIS_HASH};
use serde_json::json;

const HOUR: i64 = 3_600_000;

async fn tenant_with_events(app: &TestApp, token: &str) -> (String, Vec<String>) {
    let tenant = app.create_tenant(token, "incident-co").await;
    let site = app.create_site(token, &tenant, "branch").await;
    let code = app.claim_code(token, &site).await;
    let (_key, csr) = new_csr();
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
    let mut writer = ChainWriter::resume(0, GENESIS_HASH.into());
    let events: Vec<AuditEvent> = (0..3)
        .map(|i| {
            let mut e = AuditEvent {
                seq: 0,
                prev_hash: String::new(),
                ts_ms: 1_795_000_000_000 + i,
                tenant_id: tenant.clone(),
                device_id: device.id.clone(),
                kind: EventKind::HttpRequest,
                decision: Decision::Deny,
                reason: Reason::WafBlocked,
                reference: format!("incident-ref-{i}"),
                policy_version: 1,
                identity: None,
                http: Some(HttpDetails {
                    method: "POST".into(),
                    path: "/login|x".into(),
                    status: 403,
                    ..HttpDetails::default()
                }),
                detail: None,
                waf: None,
                quic: None,
                tunnel: None,
            };
            writer.link(&mut e);
            e
        })
        .collect();
    ingest_batch(&app.state, &device, &events, None)
        .await
        .expect("no store failure")
        .expect("chain continues");
    (tenant, events.iter().map(|e| e.reference.clone()).collect())
}

#[tokio::test]
async fn incidents_track_article_23_deadlines_and_export_a_report() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let (tenant, refs) = tenant_with_events(&app, &token).await;
    let base = format!("/api/tenants/{tenant}/incidents");
    let now = sase_control::state::now_ms();
    let aware = now - HOUR;

    // Bad input: unknown references, empty title, awareness in the future, unknown severity.
    for (body, needle) in [
        (
            json!({"title": "x", "severity": "high", "references": ["incident-ref-0", "nope"]}),
            "nope",
        ),
        (json!({"title": " ", "severity": "high"}), "title"),
        (
            json!({"title": "x", "severity": "high", "aware_at_ms": now + 10 * HOUR}),
            "aware_at_ms",
        ),
    ] {
        let reply = app
            .send_json(http::Method::POST, &base, Some(&token), &body)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json());
        assert!(
            reply.json().to_string().contains(needle),
            "{}",
            reply.json()
        );
    }
    let reply = app
        .send_json(
            http::Method::POST,
            &base,
            Some(&token),
            &json!({"title": "x", "severity": "catastrophic"}),
        )
        .await;
    assert!(reply.status.is_client_error());

    // Open from two events.
    let created = app
        .send_json(
            http::Method::POST,
            &base,
            Some(&token),
            &json!({"title": "Credential stuffing on /login", "severity": "high",
                   "description": "Burst of WAF blocks from one range.",
                   "aware_at_ms": aware, "references": [refs[0], refs[1]]}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["event_count"], 2);
    assert_eq!(created["next_milestone"], "early_warning");
    let milestones = created["milestones"].as_array().expect("milestones");
    assert_eq!(milestones[0]["due_ms"], aware + 24 * HOUR);
    assert_eq!(milestones[1]["due_ms"], aware + 72 * HOUR);
    assert!(milestones[0]["countdown"]
        .as_str()
        .is_some_and(|c| c.starts_with("22h") || c.starts_with("23h")));

    // The watch, in simulated time: 20 h after awareness the early warning is 4 h away.
    assert_eq!(
        check_deadlines(&app.state, aware + 20 * HOUR)
            .await
            .expect("watch"),
        1
    );
    assert_eq!(
        check_deadlines(&app.state, aware + 21 * HOUR)
            .await
            .expect("watch"),
        0,
        "each alert once"
    );
    // 25 h: the early warning is missed.
    assert_eq!(
        check_deadlines(&app.state, aware + 25 * HOUR)
            .await
            .expect("watch"),
        1
    );
    let alerts = app.get("/api/alerts", &token).await.json().to_string();
    assert!(alerts.contains("incident_deadline_approaching"), "{alerts}");
    assert!(alerts.contains("incident_deadline_missed"), "{alerts}");

    // Submissions: the final report needs the notification first; no double submission.
    let sub = format!("{base}/{id}/submissions");
    let reply = app
        .send_json(
            http::Method::POST,
            &sub,
            Some(&token),
            &json!({"milestone": "final_report"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    let after = app
        .send_json(
            http::Method::POST,
            &sub,
            Some(&token),
            &json!({"milestone": "early_warning", "authority_reference": "CSIRT-2026-118"}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(after["next_milestone"], "notification");
    assert_eq!(after["milestones"][0]["late"], false);
    let reply = app
        .send_json(
            http::Method::POST,
            &sub,
            Some(&token),
            &json!({"milestone": "early_warning"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    let reply = app
        .send_json(
            http::Method::POST,
            &sub,
            Some(&token),
            &json!({"milestone": "soon"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    app.send_json(
        http::Method::POST,
        &sub,
        Some(&token),
        &json!({"milestone": "notification"}),
    )
    .await
    .expect_status(StatusCode::OK);

    // More events, then the report.
    app.send_json(
        http::Method::POST,
        &format!("{base}/{id}/events"),
        Some(&token),
        &json!({"references": [refs[2]]}),
    )
    .await
    .expect_status(StatusCode::OK);
    let report = app
        .get(&format!("{base}/{id}/report"), &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(report["format"], "sase-incident-report-v1");
    assert_eq!(report["events"].as_array().map(Vec::len), Some(3));
    assert!(report["events"][0]["hash"].is_string());
    assert_eq!(report["incident"]["next_milestone"], "final_report");
    let timeline = report["timeline"].to_string();
    assert!(timeline.contains("CSIRT-2026-118"), "{timeline}");

    let md = app
        .get(&format!("{base}/{id}/report?format=markdown"), &token)
        .await;
    assert_eq!(md.status, StatusCode::OK);
    let text = String::from_utf8(md.body).expect("utf-8");
    assert!(text.starts_with("# Incident report: Credential stuffing on /login"));
    assert!(text.contains("| Early warning (24 h) |"));
    assert!(text.contains("submitted on time"));
    assert!(text.contains("`incident-ref-2`"));
    // A pipe in a path does not break the table.
    assert!(text.contains("/login\\|x"));

    // Close; closed incidents take no submissions and raise no alerts.
    app.send_json(
        http::Method::POST,
        &format!("{base}/{id}/close"),
        Some(&token),
        &json!({"note": "Range blocked; no data accessed."}),
    )
    .await
    .expect_status(StatusCode::OK);
    let reply = app
        .send_json(
            http::Method::POST,
            &sub,
            Some(&token),
            &json!({"milestone": "final_report"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        check_deadlines(&app.state, aware + 60 * 86_400_000)
            .await
            .expect("watch"),
        0
    );
    let list = app.get(&base, &token).await.expect_status(StatusCode::OK);
    assert_eq!(list[0]["status"], "closed");
    let actions = app
        .get("/api/admin-actions", &token)
        .await
        .json()
        .to_string();
    assert!(actions.contains("incident.open") && actions.contains("incident.close"));

    // Other tenants' events cannot be linked, and the API needs a credential.
    let other = app.create_tenant(&token, "other-co").await;
    let reply = app
        .send_json(
            http::Method::POST,
            &format!("/api/tenants/{other}/incidents"),
            Some(&token),
            &json!({"title": "x", "severity": "low", "references": [refs[0]]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = app.get(&base, "not-a-token").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}
