//! Issue 5: the live event stream. A client following SSE sees every transition of 100 flaky
//! jobs in order and without gaps, across a forced reconnect with `Last-Event-ID`; the
//! WebSocket carries the same events; filters narrow the stream.

use crate::helpers::*;
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

async fn every_transition_in_order(server: Server) {
    // The stream starts now: begin following before submitting.
    let first = follow(&server, "", None).await;
    let mut ids = Vec::new();
    for i in 0..100 {
        let counter = server.dir.join(format!("count-{i}"));
        let script = flaky(&counter, 1 + i % 2, "connection refused");
        ids.push(
            server
                .submit(
                    &["sh", "-c", &script],
                    json!({ "policy": fast_policy(4), "queue": "flaky" }),
                )
                .await,
        );
    }
    // Follow until some events arrived, then drop the connection mid-run.
    let mut seen = read_sse(first, Duration::from_secs(30), |events| events.len() >= 150).await;
    assert!(
        seen.len() >= 150,
        "only {} events before the cut",
        seen.len()
    );
    let last = seen.last().unwrap()["id"].as_i64().unwrap();
    let total: usize = {
        // Pending → running → retrying (→ running → retrying) → running → succeeded.
        ids.iter()
            .enumerate()
            .map(|(i, _)| 3 + 2 * (1 + i % 2))
            .sum()
    };
    let resumed = follow(&server, "", Some(last)).await;
    let before = seen.len();
    seen.extend(
        read_sse(resumed, Duration::from_secs(60), |events| {
            before + events.len() >= total
        })
        .await,
    );
    for id in &ids {
        server.wait_terminal(id, Duration::from_secs(30)).await;
    }
    // Nothing more arrives after every job finished.
    let tail_from = seen.last().unwrap()["id"].as_i64().unwrap();
    let tail = follow(&server, "", Some(tail_from)).await;
    seen.extend(read_sse(tail, Duration::from_secs(2), |_| false).await);

    // No event twice, across the reconnect too. (Ids need not increase along the stream: on
    // PostgreSQL it is in commit order; each job's own order is checked below.)
    let stream_ids: Vec<i64> = seen.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let distinct: BTreeSet<i64> = stream_ids.iter().copied().collect();
    assert_eq!(distinct.len(), stream_ids.len(), "repeated: {stream_ids:?}");
    // Every stored transition of every job was streamed, in the stored order.
    let mut streamed: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for event in &seen {
        streamed
            .entry(event["job_id"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                event["to"].as_str().unwrap().to_owned(),
                event["id"].as_i64().unwrap(),
            ));
        assert_eq!(event["queue"], "flaky", "{event}");
    }
    for (i, id) in ids.iter().enumerate() {
        let stored: Vec<(String, i64)> = server
            .events(id)
            .await
            .iter()
            .map(|e| {
                (
                    e["to"].as_str().unwrap().to_owned(),
                    e["id"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(stored.len(), 3 + 2 * (1 + i % 2), "job {i}: {stored:?}");
        assert_eq!(
            streamed.get(id.as_str()),
            Some(&stored),
            "job {i} streamed differently from what is stored"
        );
    }
    assert_eq!(seen.len(), total);
}

#[tokio::test]
async fn sse_streams_every_transition_in_order_across_a_reconnect_sqlite() {
    every_transition_in_order(Server::start(&[]).await).await;
}

#[tokio::test]
async fn sse_streams_every_transition_in_order_across_a_reconnect_postgres() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    every_transition_in_order(Server::start_node(&database, &[]).await).await;
}

#[tokio::test]
async fn filters_and_the_websocket_carry_the_same_events() {
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start(&[]).await;
    let url = format!(
        "{}?kind=deploy",
        server.api("/ws").replacen("http://", "ws://", 1)
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", server.token.as_deref().unwrap())
            .parse()
            .unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let sse = follow(&server, "?queue=mail", None).await;
    let deploy = server
        .submit(&["true"], json!({ "kind": "deploy", "queue": "ops" }))
        .await;
    let mail = server
        .submit(&["true"], json!({ "kind": "notify", "queue": "mail" }))
        .await;
    server.wait_terminal(&deploy, Duration::from_secs(10)).await;
    server.wait_terminal(&mail, Duration::from_secs(10)).await;

    let mut over_ws = Vec::new();
    while over_ws.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a WebSocket message in time")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            over_ws.push(serde_json::from_str::<Value>(&text).unwrap());
        }
    }
    let states: Vec<&str> = over_ws.iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(states, ["pending", "running", "succeeded"]);
    assert!(over_ws.iter().all(|e| e["job_id"] == deploy.as_str()));
    let over_sse = read_sse(sse, Duration::from_secs(10), |e| e.len() >= 3).await;
    let jobs: BTreeSet<&str> = over_sse
        .iter()
        .map(|e| e["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, BTreeSet::from([mail.as_str()]));
    assert_eq!(over_sse.len(), 3);

    // A viewer may follow; nobody without a token may.
    let anonymous = client_with(None)
        .get(server.api("/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
