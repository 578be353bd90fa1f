//! Reads: paging by Link headers over a real server, filters, NDJSON, streams, by id.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use loom_server::Config;
use serde_json::{Value, json};

/// Appends `n` events over streams cart/0..cart/9 (log/x every 7th), in batches.
async fn seed(t: &TestState, n: usize) {
    let mut batch = Vec::new();
    for i in 1..=n {
        let e = if i % 7 == 0 {
            json!({"specversion": "1.0", "id": format!("e{i}"), "source": "seed", "type": "noted",
                   "subject": "log/x", "data": {"i": i}})
        } else if i <= 10 {
            cart_event(
                &format!("e{i}"),
                &format!("{}", i % 10),
                "was_created",
                json!({"i": i}),
            )
        } else {
            cart_event(
                &format!("e{i}"),
                &format!("{}", i % 10),
                "had_item_added",
                json!({"sku": format!("s{i}"), "quantity": 1}),
            )
        };
        batch.push(e);
        if batch.len() == 500 || i == n {
            let a = post_events(&t.state, &Value::Array(std::mem::take(&mut batch))).await;
            assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        }
    }
}

fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    let (target, rel) = link.split_once(';')?;
    assert_eq!(rel.trim(), "rel=\"next\"");
    Some(
        target
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_walk_over_thousands_of_events_by_link_headers() {
    let server = Server::start(Config::default()).await;
    let t = TestState {
        dir: tempfile::tempdir().unwrap(),
        state: server.state.clone(),
    };
    seed(&t, 3500).await;
    let client = reqwest::Client::new();

    // Forwards, all events, pages of 400.
    let mut url = server.url("/v1/events?limit=400");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let next = next_link(r.headers());
        let page: Vec<Value> = r.json().await.unwrap();
        assert!(page.len() <= 400);
        seen.extend(page.iter().map(|e| e["position"].as_u64().unwrap()));
        pages += 1;
        match next {
            Some(n) => url = server.url(&n),
            None => break,
        }
        assert!(pages < 100, "paging must end");
    }
    assert_eq!(
        seen,
        (1..=3500).collect::<Vec<u64>>(),
        "every position once, in order"
    );
    assert_eq!(pages, 9);

    // Backwards, filtered by type and entity, with a page size that does not divide.
    let mut url = server.url("/v1/events?entity=cart&type=had_item_added&backwards=true&limit=333");
    let mut back = Vec::new();
    loop {
        let r = client.get(&url).send().await.unwrap();
        let next = next_link(r.headers());
        let page: Vec<Value> = r.json().await.unwrap();
        for e in &page {
            assert_eq!(e["type"], "had_item_added");
            back.push(e["position"].as_u64().unwrap());
        }
        match next {
            Some(n) => url = server.url(&n),
            None => break,
        }
    }
    let expected: Vec<u64> = (11..=3500u64).rev().filter(|i| i % 7 != 0).collect();
    assert_eq!(back, expected);
    server.stop().await;
}

#[tokio::test]
async fn type_filter_repeatable_and_comma_separated() {
    let t = state();
    seed(&t, 30).await;
    let one = get(&t.state, "/v1/events?type=noted&limit=1000")
        .await
        .json();
    assert_eq!(one.as_array().unwrap().len(), 4);
    let a = get(
        &t.state,
        "/v1/events?type=noted&type=was_created&limit=1000",
    )
    .await
    .json();
    let b = get(&t.state, "/v1/events?type=noted,was_created&limit=1000")
        .await
        .json();
    assert_eq!(a, b);
    assert_eq!(a.as_array().unwrap().len(), 4 + 9);
    let s = get(&t.state, "/v1/events?subject=cart/3").await.json();
    let subjects: Vec<&str> = s
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, vec!["cart/3"; 3]);
    let both = get(&t.state, "/v1/events?subject=cart/3&subject=cart/4")
        .await
        .json();
    assert_eq!(
        both.as_array().unwrap().len(),
        5,
        "cart/3: 3, 13, 23; cart/4: 4, 24 (14 is a log event)"
    );
    get(&t.state, "/v1/events?subject=cart/3&entity=log")
        .await
        .problem(400);
    get(&t.state, "/v1/events?limit=0").await.problem(400);
    get(&t.state, "/v1/events?limit=100000").await.problem(400);
    get(&t.state, "/v1/events?after=-1").await.problem(400);
    get(&t.state, "/v1/events?afterr=1").await.problem(400);
    get(&t.state, "/v1/events?backwards=maybe")
        .await
        .problem(400);
    get(&t.state, "/v1/events?entity=no%20pe")
        .await
        .problem(422);
    get(&t.state, "/v1/events?data=$[?").await.problem(422);
}

#[tokio::test]
async fn ndjson_streams_every_event() {
    let t = state();
    seed(&t, 2500).await;
    let a = send(
        &t.state,
        Request::get("/v1/events?after=100")
            .header("accept", "application/x-ndjson")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/x-ndjson"));
    let text = String::from_utf8(a.body.to_vec()).unwrap();
    let positions: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, (101..=2500).collect::<Vec<_>>());
    let a = send(
        &t.state,
        Request::get("/v1/events?limit=1500&backwards=true&type=noted")
            .header("accept", "application/x-ndjson")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let n = String::from_utf8(a.body.to_vec()).unwrap().lines().count();
    assert_eq!(n, 2500 / 7);
    let a = send(
        &t.state,
        Request::post("/v1/events/query?limit=5")
            .header("accept", "application/x-ndjson")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"entity":"log"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(
        String::from_utf8(a.body.to_vec()).unwrap().lines().count(),
        5
    );
}

#[tokio::test]
async fn query_by_selector_with_jsonpath() {
    let t = state();
    seed(&t, 50).await;
    let a = send(
        &t.state,
        Request::post("/v1/events/query?limit=3")
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"entity":"cart","keys":["2"],"types":["had_item_added"]}"#,
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    let page = a.json();
    let positions: Vec<u64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![12, 22, 32]);
    assert_eq!(
        a.header("link"),
        Some("</v1/events/query?limit=3&after=32>; rel=\"next\"")
    );
    let a = send(
        &t.state,
        Request::post("/v1/events/query")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"data":"$[?@ == 's33']"}"#))
            .unwrap(),
    )
    .await;
    let page = a.json();
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["id"], "e33");
    // Unknown selector member: 400. Keys without entity: 422.
    send(
        &t.state,
        Request::post("/v1/events/query")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"entities":"cart"}"#))
            .unwrap(),
    )
    .await
    .problem(400);
    send(
        &t.state,
        Request::post("/v1/events/query")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"keys":["1"]}"#))
            .unwrap(),
    )
    .await
    .problem(422);
}

#[tokio::test]
async fn streams_with_slashes_in_keys_and_revisions() {
    let t = state();
    let batch = json!([
        cart_event("1", "eu/42", "was_created", json!({})),
        cart_event("2", "eu/42", "had_item_added", item("fig", 1)),
        cart_event("3", "revision", "was_created", json!({})),
        cart_event("4", "a/revision", "was_created", json!({})),
        cart_event("5", "eu/42", "was_checked_out", json!({})),
    ]);
    assert_eq!(post_events(&t.state, &batch).await.status, 201);
    let s = get(&t.state, "/v1/streams/cart/eu/42").await;
    assert_eq!(s.status, 200);
    let revs: Vec<u64> = s
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, vec![1, 2, 3]);
    let s = get(&t.state, "/v1/streams/cart/eu/42?after_revision=1&limit=1").await;
    assert_eq!(s.json()[0]["id"], "2");
    assert_eq!(
        s.header("link"),
        Some("</v1/streams/cart/eu/42?limit=1&after_revision=2>; rel=\"next\"")
    );
    assert_eq!(
        get(&t.state, "/v1/streams/cart/eu%2F42")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        get(&t.state, "/v1/streams/cart/eu/42/revision")
            .await
            .json(),
        json!({"stream": "cart/eu/42", "revision": 3})
    );
    // A key named "revision" is a stream; a key ending in "/revision" needs %2F.
    assert_eq!(
        get(&t.state, "/v1/streams/cart/revision").await.json()[0]["id"],
        "3"
    );
    assert_eq!(
        get(&t.state, "/v1/streams/cart/a%2Frevision").await.json()[0]["id"],
        "4"
    );
    assert_eq!(
        get(&t.state, "/v1/streams/cart/a%2Frevision/revision")
            .await
            .json()["revision"],
        1
    );
    assert_eq!(
        get(&t.state, "/v1/streams/cart/none/revision").await.json()["revision"],
        0
    );
    get(&t.state, "/v1/streams/cart/none").await.problem(404);
    get(&t.state, "/v1/streams/cart/eu/42?after_revision=x")
        .await
        .problem(400);
    get(&t.state, "/v1/streams/c%20rt/1").await.problem(400);
}

#[tokio::test]
async fn single_event_by_position_and_identity() {
    let t = state();
    seed(&t, 3).await;
    assert_eq!(get(&t.state, "/v1/events/2").await.json()["id"], "e2");
    get(&t.state, "/v1/events/4").await.problem(404);
    get(&t.state, "/v1/events/0").await.problem(404);
    get(&t.state, "/v1/events/two").await.problem(400);
    get(&t.state, "/v1/events/99999999999999999999999")
        .await
        .problem(400);
    let a = get(
        &t.state,
        "/v1/events/by-id?source=https%3A%2F%2Fshop.example%2Fcarts&id=e3",
    )
    .await;
    assert_eq!(a.json()["position"], 3);
    get(&t.state, "/v1/events/by-id?source=seed&id=e3")
        .await
        .problem(404);
    get(&t.state, "/v1/events/by-id?id=e3").await.problem(400);
    get(&t.state, "/v1/events/by-id?source=seed&id=e3&mode=raw")
        .await
        .problem(400);
    let b = get(
        &t.state,
        "/v1/events/by-id?source=https%3A%2F%2Fshop.example%2Fcarts&id=e3&mode=binary",
    )
    .await;
    assert_eq!(b.header("ce-position"), Some("3"));
}

#[tokio::test]
async fn streams_are_listed_by_prefix_a_page_at_a_time() {
    let t = state();
    seed(&t, 30).await;
    let a = get(&t.state, "/v1/streams").await;
    assert_eq!(a.status, 200);
    let all = a.json();
    let subjects: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects.len(), 11, "cart/0..cart/9 and log/x: {all}");
    assert_eq!(subjects[0], "cart/0");
    assert_eq!(subjects[10], "log/x");
    // Revisions are the streams' own: log/x got every 7th event.
    assert_eq!(all[10]["revision"], 4);

    // Pages follow their Link.
    let mut uri = "/v1/streams?prefix=cart/&limit=4".to_owned();
    let mut seen = Vec::new();
    loop {
        let a = get(&t.state, &uri).await;
        assert_eq!(a.status, 200);
        seen.extend(
            a.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["subject"].as_str().unwrap().to_owned()),
        );
        match a.header("link") {
            Some(l) => {
                uri = l
                    .trim_start_matches('<')
                    .split_once('>')
                    .unwrap()
                    .0
                    .to_owned()
            }
            None => break,
        }
    }
    let want: Vec<String> = (0..10).map(|i| format!("cart/{i}")).collect();
    assert_eq!(seen, want);
    assert_eq!(
        get(&t.state, "/v1/streams?prefix=nope/").await.json(),
        json!([])
    );
    get(&t.state, "/v1/streams?limit=0").await.problem(400);
    get(&t.state, "/v1/streams?frobnicate=1").await.problem(400);
}
