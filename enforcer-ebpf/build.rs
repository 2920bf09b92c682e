use which::which;

/// Building this crate needs bpf-linker; say so clearly instead of failing deep in the linker.
/// Rebuild when bpf-linker changes, since the object depends on it.
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found: install it with `cargo install bpf-linker@0.10.4 --locked` (see .ci/run)",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
