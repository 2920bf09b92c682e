//! Builds the kernel programs (enforcer-ebpf) for the BPF target with aya-build and places the
//! object in OUT_DIR, where src/kernel embeds it.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "enforcer-ebpf")
        .ok_or_else(|| anyhow!("enforcer-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("enforcer-ebpf has no manifest directory"))?;
    // Nightly when the machine has it; otherwise stable with RUSTC_BOOTSTRAP (KERNEL-NOTES).
    // ENFORCER_EBPF_TOOLCHAIN overrides the choice.
    println!("cargo:rerun-if-env-changed=ENFORCER_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("ENFORCER_EBPF_TOOLCHAIN").unwrap_or_else(|_| {
        let has_nightly = std::process::Command::new("rustup")
            .args(["run", "nightly", "rustc", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if has_nightly {
            "nightly".into()
        } else {
            "stable".into()
        }
    });
    if toolchain != "nightly" {
        // SAFETY: build scripts are single-threaded here; the child cargo inherits it.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}
