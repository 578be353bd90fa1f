//! `loom new NAME`: a reducer crate that builds as it is — a decider with a query, a
//! projection over every stream, a reactor, native tests and a `loom.toml` for `loom deploy`,
//! which registers the entity from the JSON Schemas the crate derives from its types.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The crate's name, also the entity its reducers are about (lowercase letters, digits,
    /// '-' and '_', starting with a letter).
    name: String,
    /// Where to create it (default: ./NAME).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Where loom-guest comes from: a path to its source, or git=URL (default: the source
    /// this loom was built from).
    #[arg(long)]
    sdk: Option<String>,
}

const FILES: [(&str, &str); 5] = [
    (
        "Cargo.toml",
        include_str!("../templates/new/Cargo.toml.tmpl"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../templates/new/cargo-config.toml.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../templates/new/gitignore.tmpl"),
    ),
    ("loom.toml", include_str!("../templates/new/loom.toml.tmpl")),
    (
        "src/lib.rs",
        include_str!("../templates/new/src/lib.rs.tmpl"),
    ),
];

/// loom-guest's features the crate uses: schemas derived from its types.
const FEATURES: &str = ", features = [\"schemars\"]";

/// Where loom-guest's source was when this binary was built.
fn built_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-sdk/loom-guest")
}

fn sdk_dependency(sdk: Option<&str>) -> anyhow::Result<String> {
    let path = match sdk {
        Some(s) if s.starts_with("git=") => {
            return Ok(format!("{{ git = {:?}{FEATURES} }}", &s[4..]));
        }
        Some(s) => PathBuf::from(s),
        None => built_sdk(),
    };
    let path = path.canonicalize().with_context(|| {
        format!(
            "loom-guest is not at {} (give its source with --sdk PATH, or --sdk git=URL)",
            path.display()
        )
    })?;
    if !path.join("Cargo.toml").is_file() {
        bail!(
            "{} is not loom-guest's source (no Cargo.toml)",
            path.display()
        );
    }
    Ok(format!(
        "{{ path = {:?}{FEATURES} }}",
        path.display().to_string()
    ))
}

pub(crate) fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!(
            "{name:?} is not a name for a reducer crate: use lowercase letters, digits, '-' and \
             '_', starting with a letter (it is also the entity's name)"
        );
    }
    let dir = args.path.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty; choose another name or --path",
            dir.display()
        );
    }
    let sdk = sdk_dependency(args.sdk.as_deref())?;
    let fill = |text: &str| {
        text.replace("{{crate}}", name)
            .replace("{{entity}}", name)
            .replace("{{entity_ident}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk)
    };
    for (file, template) in FILES {
        let path = dir.join(fill(file));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, fill(template))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("created {} (entity {name}):", dir.display());
    println!(
        "  src/lib.rs   reducers items (decider, query), summary (projection), archive (reactor)"
    );
    println!("  loom.toml    what `loom deploy` sets up (the entity's registration is derived)");
    println!();
    println!("next: cd {} && cargo test && loom deploy", dir.display());
    Ok(ExitCode::SUCCESS)
}
