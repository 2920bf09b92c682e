#![no_std]
// The programs live in the `enforcer` binary target (src/main.rs); this empty library exists so
// the host toolchain can still resolve the crate in the workspace.
