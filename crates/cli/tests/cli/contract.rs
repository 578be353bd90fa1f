//! The API contract: the OpenAPI document the server serves against what the server does.
//!
//! schemathesis (PyPI) runs every check (`--checks all`) with a fixed seed against a real
//! `loom serve`, configured by tests/interop/schemathesis.toml, which names the rules the
//! document cannot express. It cannot generate WebAssembly, so `POST /v1/modules` is checked
//! here by hand: each answer's status is documented and its body fits the documented schema.
//!
//! schemathesis is `LOOM_SCHEMATHESIS` (default `schemathesis` on the PATH). Without it the
//! test says so and passes, unless LOOM_REQUIRE_SCHEMATHESIS=1 (CI), where it fails.

use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use crate::common::Serve;

fn get(url: &str) -> Value {
    let mut answer = ureq::get(url).call().expect("GET");
    serde_json::from_reader(answer.body_mut().as_reader()).expect("JSON")
}

/// The response schema the document gives `status` of an operation, with its references
/// resolvable (components moved under `$defs`).
fn response_schema(doc: &Value, path: &str, method: &str, status: u16) -> Value {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which its document does not list"
    );
    let content = response["content"]
        .as_object()
        .expect("a body is documented");
    let (_, media) = content.iter().next().expect("one media type");
    let rewrite = |v: &Value| -> Value {
        let text = v.to_string().replace("#/components/schemas/", "#/$defs/");
        serde_json::from_str(&text).unwrap()
    };
    let mut schema = rewrite(&media["schema"]);
    schema["$defs"] = rewrite(&doc["components"]["schemas"]);
    schema
}

fn assert_fits(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let schema = response_schema(doc, path, method, status);
    let validator = jsonschema::validator_for(&schema).expect("the documented schema compiles");
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {body} does not fit the document: {errors:?}"
    );
}

fn upload(url: &str, bytes: &[u8]) -> (u16, String, Value) {
    let response = ureq::post(&format!("{url}/v1/modules"))
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/wasm")
        .send(bytes)
        .expect("POST /v1/modules");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut response = response;
    let body = serde_json::from_reader(response.body_mut().as_reader()).expect("a JSON body");
    (status, content_type, body)
}

#[test]
fn module_uploads_answer_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &[]);
    let doc = get(&format!("{}/v1/openapi.json", server.url));
    let op = &doc["paths"]["/v1/modules"]["post"];
    assert!(
        op["requestBody"]["content"]["application/wasm"].is_object(),
        "the upload's body is documented as application/wasm: {}",
        op["requestBody"]
    );

    let wasm = loom_testkit::example_wasm("bank");
    let (status, ct, body) = upload(&server.url, &wasm);
    assert_eq!((status, ct.as_str()), (201, "application/json"), "{body}");
    assert_fits(&doc, "/v1/modules", "post", 201, &body);
    let (status, _, again) = upload(&server.url, &wasm);
    assert_eq!(status, 200);
    assert_fits(&doc, "/v1/modules", "post", 200, &again);
    assert_eq!(again, body);

    // Refusals: not wasm, a module importing WASI. Problems, as documented, and nothing stored.
    let wasi = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1))"#,
    )
    .unwrap();
    for bad in [b"not wasm".to_vec(), wasi] {
        let (status, ct, problem) = upload(&server.url, &bad);
        assert_eq!(
            (status, ct.as_str()),
            (422, "application/problem+json"),
            "{problem}"
        );
        assert_fits(&doc, "/v1/modules", "post", 422, &problem);
        assert_eq!(problem["type"], "urn:loom:problem:invalid-module");
    }
    assert_eq!(get(&format!("{}/v1/modules", server.url)), json!([body]));
}

#[test]
fn schemathesis_finds_the_server_as_its_document_says() {
    let required = std::env::var("LOOM_REQUIRE_SCHEMATHESIS").is_ok_and(|v| v == "1");
    let program = std::env::var("LOOM_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    if !Command::new(&program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            !required,
            "{program} is required (pip install schemathesis; LOOM_SCHEMATHESIS names it)"
        );
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Waits for min_position end in a second, so generated positions far ahead answer their
    // documented 504 well inside schemathesis's request timeout.
    let server = Serve::start(&dir.path().join("data"), &["--max-wait-ms", "1000"]);
    ureq::put(&format!("{}/v1/entities/cart", server.url))
        .header("content-type", "application/json")
        .send(r#"{"open": true}"#)
        .expect("register cart");
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/schemathesis.toml"
    );
    let started = Instant::now();
    let out = Command::new(&program)
        .args(["--no-color", "--config-file", config, "run"])
        .arg(format!("{}/v1/openapi.json", server.url))
        .args(["--checks", "all", "--seed", "1", "--workers", "1"])
        .args(["--exclude-name", "POST /v1/modules"])
        .env(
            "HYPOTHESIS_STORAGE_DIRECTORY",
            dir.path().join("hypothesis"),
        )
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "schemathesis took {:.0} s:\n{}",
        started.elapsed().as_secs_f64(),
        stdout.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
    assert!(
        out.status.success(),
        "schemathesis found the server and its document disagreeing:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server is still up.
    assert_eq!(get(&format!("{}/healthz", server.url))["status"], "ok");
}
