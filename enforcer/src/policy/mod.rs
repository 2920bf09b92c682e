//! Policy engine of MCP Enforcer: Cedar policies with annotations, decisions,
//! tools/list filtering, versioned storage, decision test cases and a bench.

mod compile;
mod error;
mod index;
mod schema;
mod source;

pub use compile::{CompileOptions, Policy};

mod decide;
mod request;

pub use decide::{Decision, Defaults, Effect};
pub use request::{CallRequest, CallTemplate, Surface};

mod versions;

pub use versions::{PolicyVersions, VersionMeta};

mod cases;

pub use cases::run_cases;

mod bench;

pub use bench::bench;
