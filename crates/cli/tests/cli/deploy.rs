//! `loom new` and `loom deploy` against a real server: the scaffold's own tests pass, it
//! deploys, commands run and projections answer, and a second deploy changes nothing.

use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{LOOM, Serve, ok};

fn loom_in(dir: &std::path::Path, url: &str, args: &[&str]) -> Output {
    Command::new(LOOM)
        .args(args)
        .current_dir(dir)
        .env("LOOM_URL", url)
        .env_remove("LOOM_TOKEN")
        // Builds of scaffolds share a target directory, so a second run compiles little.
        .env(
            "CARGO_TARGET_DIR",
            loom_testkit::workspace_root().join("target/scaffolds"),
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run loom")
}

#[test]
fn a_new_crate_builds_tests_and_deploys_and_a_second_deploy_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &[]);
    let url = server.url.clone();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();

    // Names that are not crate and entity names are refused, with a reason.
    let bad = loom_in(&work, &url, &["new", "Bad Name"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lowercase"));

    let said = ok(&loom_in(&work, &url, &["new", "tasks"]));
    assert!(said.contains("created tasks (entity tasks)"), "{said}");
    let krate = work.join("tasks");
    for file in [
        "Cargo.toml",
        "loom.toml",
        "src/lib.rs",
        ".cargo/config.toml",
    ] {
        assert!(krate.join(file).is_file(), "{file}");
    }
    // Not over a directory that has something in it.
    let again = loom_in(&work, &url, &["new", "tasks"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // Its native tests pass as it is (the derived schemas among them).
    let test = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--quiet"])
        .current_dir(&krate)
        .env(
            "CARGO_TARGET_DIR",
            loom_testkit::workspace_root().join("target/scaffolds"),
        )
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "cargo test of the scaffold:\n{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );

    let deployed = ok(&loom_in(&krate, &url, &["deploy"]));
    for line in [
        "uploaded: items (decider, query), summary (projection), archive (reactor)",
        "entity tasks: created",
        "projection tasks: created",
        "projection tasks-summary: created",
        "decider tasks: bound",
        "reactor tasks-archive: created",
    ] {
        assert!(deployed.contains(line), "missing {line:?} in:\n{deployed}");
    }

    // The registration was derived from the event enum: its types, and the schema of each
    // one's data (a title of at least one character), which raw appends must satisfy.
    let entity: Value = serde_json::from_str(&ok(&loom_in(
        &krate,
        &url,
        &["entities", "get", "tasks", "--json"],
    )))
    .unwrap();
    let mut types: Vec<&String> = entity["events"].as_object().unwrap().keys().collect();
    types.sort();
    assert_eq!(types, ["was_added", "was_archived", "was_completed"]);
    let title = &entity["events"]["was_added"]["schema"]["properties"]["title"];
    assert_eq!(title["minLength"], 1, "{entity}");
    assert_eq!(title["description"], "What it is.", "{entity}");
    let empty = work.join("empty-title.json");
    std::fs::write(
        &empty,
        r#"{"specversion":"1.0","id":"e1","source":"test","type":"was_added","subject":"tasks/t0","data":{"title":""}}"#,
    )
    .unwrap();
    let refused = loom_in(&krate, &url, &["append", empty.to_str().unwrap()]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("schema"), "{said}");
    // The module shows what it derived.
    let modules = server.json(&["modules", "list"]);
    let items = modules[0]["reducers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "items")
        .unwrap()
        .clone();
    assert_eq!(
        items["schemas"]["events"]["was_added"]["required"],
        serde_json::json!(["title"])
    );
    assert!(items["schemas"]["command"]["oneOf"].is_array(), "{items}");

    ok(&loom_in(
        &krate,
        &url,
        &[
            "command",
            "tasks",
            "t1",
            r#"{"type": "add", "title": "Write the docs"}"#,
        ],
    ));
    ok(&loom_in(
        &krate,
        &url,
        &["command", "tasks", "t1", r#"{"type": "complete"}"#],
    ));
    // The reactor archives the completed task: position 3.
    let state: Value = serde_json::from_str(&ok(&loom_in(
        &krate,
        &url,
        &[
            "projections",
            "state",
            "tasks",
            "tasks",
            "t1",
            "--min-position",
            "3",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(
        state["state"],
        serde_json::json!({"title": "Write the docs", "done": true, "archived": true})
    );
    let summary: Value = serde_json::from_str(&ok(&loom_in(
        &krate,
        &url,
        &[
            "projections",
            "state",
            "tasks-summary",
            "--min-position",
            "3",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(summary["state"], serde_json::json!({"open": 0, "done": 1}));

    // Nothing changed: nothing changes.
    let redeployed = ok(&loom_in(&krate, &url, &["deploy"]));
    assert!(redeployed.contains(" unchanged: items"), "{redeployed}");
    for what in [
        "entity tasks",
        "projection tasks",
        "projection tasks-summary",
        "decider tasks",
        "reactor tasks-archive",
    ] {
        assert!(
            redeployed.contains(&format!("{what}: unchanged")),
            "{what} in:\n{redeployed}"
        );
    }
    // A changed definition is applied: the projection builds its new version.
    let toml = std::fs::read_to_string(krate.join("loom.toml")).unwrap();
    std::fs::write(
        krate.join("loom.toml"),
        toml.replace("# on_error = \"quarantine\"", "on_error = \"quarantine\""),
    )
    .unwrap();
    let changed = ok(&loom_in(&krate, &url, &["deploy"]));
    assert!(changed.contains("projection tasks: changed"), "{changed}");
}
