//! The web console in a real browser: tests/console/console_test.py drives Debian's headless
//! Chromium through chromedriver (selenium) against a real `loom serve` with tokens, over the
//! cart example. Screenshots of every page go to `target/console-screenshots/`.
//!
//! The Python with selenium is `LOOM_SELENIUM_PYTHON` (default `python3`); the browser and its
//! driver `LOOM_CHROMIUM` and `LOOM_CHROMEDRIVER` (default `/usr/bin/chromium`,
//! `/usr/bin/chromedriver`). Without them the test says so and passes, unless
//! LOOM_REQUIRE_BROWSER=1 (CI), where it fails.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::Serve;

const ADMIN: &str = "console-admin-secret";
const READER: &str = "console-reader-secret";

fn send(method: &str, url: &str, body: Option<Vec<u8>>) -> Value {
    let agent = ureq::Agent::new_with_defaults();
    let response = match body {
        Some(b) => agent
            .run(
                ureq::http::Request::builder()
                    .method(method)
                    .uri(url)
                    .header("authorization", format!("Bearer {ADMIN}"))
                    .header("content-type", "application/json")
                    .body(b)
                    .unwrap(),
            )
            .unwrap_or_else(|e| panic!("{method} {url}: {e}")),
        None => agent
            .run(
                ureq::http::Request::builder()
                    .method(method)
                    .uri(url)
                    .header("authorization", format!("Bearer {ADMIN}"))
                    .body(())
                    .unwrap(),
            )
            .unwrap_or_else(|e| panic!("{method} {url}: {e}")),
    };
    let mut response = response;
    serde_json::from_reader(response.body_mut().as_reader()).unwrap_or(Value::Null)
}

fn available(python: &str) -> Result<(), String> {
    let chromium = std::env::var("LOOM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver =
        std::env::var("LOOM_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    for file in [&chromium, &driver] {
        if !Path::new(file).exists() {
            return Err(format!(
                "{file} is missing (apt-get install chromium chromium-driver)"
            ));
        }
    }
    let selenium = Command::new(python)
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !selenium {
        return Err(format!("{python} has no selenium (pip install selenium)"));
    }
    Ok(())
}

#[test]
fn the_console_works_in_a_real_browser() {
    let required = std::env::var("LOOM_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let python = std::env::var("LOOM_SELENIUM_PYTHON").unwrap_or_else(|_| "python3".into());
    if let Err(why) = available(&python) {
        assert!(!required, "the browser test needs {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(
        &dir.path().join("data"),
        &[
            "--token",
            &format!("admin:{ADMIN}"),
            "--token",
            &format!("reader:{READER}"),
        ],
    );
    let url = &server.url;

    // The cart example: c1 created (1), an apple (2) and a pear (3) added; c2 and c3 the same;
    // the apple removed from c1 (10), two more pears (11).
    let entity = std::fs::read(loom_testkit::example_entity_path("cart")).unwrap();
    send("PUT", &format!("{url}/v1/entities/cart"), Some(entity));
    let cart = loom_testkit::example_wasm("cart");
    let module = send("POST", &format!("{url}/v1/modules"), Some(cart));
    let id = module["id"].as_str().unwrap();
    let spec = json!({"module": id, "selector": {"entity": "cart"}});
    send(
        "PUT",
        &format!("{url}/v1/projections/carts"),
        Some(spec.to_string().into_bytes()),
    );
    let decider = json!({"module": id}).to_string().into_bytes();
    send("PUT", &format!("{url}/v1/deciders/cart"), Some(decider));
    let command = |key: &str, body: Value| {
        send(
            "POST",
            &format!("{url}/v1/commands/cart/{key}"),
            Some(body.to_string().into_bytes()),
        )
    };
    for key in ["c1", "c2", "c3"] {
        command(key, json!({"type": "create"}));
        command(
            key,
            json!({"type": "add_item", "sku": "apple", "name": "Apple", "price": 120, "quantity": 2}),
        );
        command(
            key,
            json!({"type": "add_item", "sku": "pear", "name": "Pear", "price": 90, "quantity": 1}),
        );
    }
    let removed = command("c1", json!({"type": "remove_item", "sku": "apple"}));
    assert_eq!(removed["events"][0]["position"], 10, "{removed}");
    let pears = command(
        "c1",
        json!({"type": "add_item", "sku": "pear", "name": "Pear", "price": 90, "quantity": 2}),
    );
    assert_eq!(pears["events"][0]["position"], 11, "{pears}");
    // The projection has folded it all before the browser looks.
    send(
        "GET",
        &format!("{url}/v1/projections/carts/state/cart/c1?min_position=11"),
        None,
    );

    let root = loom_testkit::workspace_root();
    let shots = root.join("target").join("console-screenshots");
    let wasm = loom_testkit::build_examples().join("bank.wasm");
    let out = Command::new(&python)
        .arg(root.join("tests/console/console_test.py"))
        .args(["--url", url, "--admin", ADMIN, "--reader", READER])
        .arg("--wasm")
        .arg(&wasm)
        .arg("--shots")
        .arg(&shots)
        .output()
        .expect("run the browser test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("console: all passed"),
        "the console failed in the browser:\n{stdout}\n{}\nscreenshots: {}",
        String::from_utf8_lossy(&out.stderr),
        shots.display()
    );
}

#[test]
fn the_console_is_served_from_the_binary_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &[]);
    let get = |path: &str| {
        ureq::get(&format!("{}{path}", server.url))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap()
    };
    for path in [
        "/console",
        "/console/",
        "/console/projections/carts/state/cart/c1",
    ] {
        let r = get(path);
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/html"), "{path}: {ct}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
    }
    let mut js = get("/console/assets/app.js");
    assert_eq!(js.status(), 200);
    assert!(js.body_mut().read_to_string().unwrap().contains("ROUTES"));
    assert_eq!(get("/console/assets/nope.js").status(), 404);
    drop(server);

    let server = Serve::start(&dir.path().join("data2"), &["--no-console"]);
    let r = ureq::get(&format!("{}/console", server.url))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(r.status(), 404);
}
