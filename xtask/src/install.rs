//! `cargo xtask install`: the release binary and a commented default configuration.
//! (systemd units and packaging come with the systemd work.)

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

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
    Ok(())
}
