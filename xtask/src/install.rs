//! `cargo xtask install`: the release binary, a commented default configuration, the
//! systemd units (daemon, admin socket, agents slice, agent template), the credentials
//! directory, and the export schema document. `--destdir` stages everything for packaging.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// The systemd units shipped in enforcer/dist/systemd.
pub const UNITS: [&str; 4] = [
    "enforcer.service",
    "enforcer.socket",
    "enforcer-agents.slice",
    "enforcer-agent@.service",
];

pub fn run(destdir: Option<PathBuf>, prefix: &Path) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--bin", "enforcer"])?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let dest = |p: &Path| match &destdir {
        Some(d) => d.join(p.strip_prefix("/").unwrap_or(p)),
        None => p.to_path_buf(),
    };
    let bin = dest(&prefix.join("bin/enforcer"));
    fs::create_dir_all(bin.parent().unwrap())?;
    fs::copy(root.join("target/release/enforcer"), &bin)
        .with_context(|| format!("installing {}", bin.display()))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    println!("installed {}", bin.display());

    let config = dest(Path::new("/etc/enforcer/enforcer.toml"));
    fs::create_dir_all(config.parent().unwrap())?;
    if config.exists() {
        println!("kept the existing {}", config.display());
    } else {
        fs::copy(root.join("enforcer/dist/enforcer.toml"), &config)?;
        println!("installed {} (commented defaults)", config.display());
    }
    let creds = dest(Path::new("/etc/enforcer/credentials"));
    fs::create_dir_all(&creds)?;
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o700))?;
    println!(
        "credentials directory {} (mode 0700; secrets go in as files, mode 0600)",
        creds.display()
    );
    let agents = dest(Path::new("/etc/enforcer/agents"));
    fs::create_dir_all(&agents)?;
    let units = dest(Path::new("/etc/systemd/system"));
    fs::create_dir_all(&units)?;
    for unit in UNITS {
        let text = fs::read_to_string(root.join("enforcer/dist/systemd").join(unit))?.replace(
            "/usr/local/bin/enforcer",
            &prefix.join("bin/enforcer").display().to_string(),
        );
        fs::write(units.join(unit), text)?;
        println!("installed {}", units.join(unit).display());
    }
    let docs = dest(&prefix.join("share/doc/enforcer"));
    fs::create_dir_all(&docs)?;
    for doc in ["README.md", "docs/EXPORT-SCHEMA.md"] {
        let name = Path::new(doc).file_name().context("doc name")?;
        fs::copy(root.join(doc), docs.join(name))?;
    }
    if destdir.is_none() {
        let _ = std::process::Command::new("groupadd")
            .args(["--system", "-f", "enforcer-admin"])
            .status();
        let _ = std::process::Command::new("systemctl")
            .arg("daemon-reload")
            .status();
        println!("group enforcer-admin (members may use the admin CLI); next: systemctl enable --now enforcer.service");
    }
    Ok(())
}
