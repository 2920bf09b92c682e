//! End-to-end tests of the exporter against real receivers (files, sockets, HTTP servers) fed by
//! an in-memory source.

mod config;
mod cursor;
mod jsonl;
mod support;
mod syslog;
mod webhook;
