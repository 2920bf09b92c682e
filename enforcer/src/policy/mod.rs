//! Policy engine of MCP Enforcer: Cedar policies with annotations, decisions,
//! tools/list filtering, versioned storage, decision test cases and a bench.

mod compile;
mod error;
mod index;
mod schema;
mod source;

pub use compile::{hash_source, CompileOptions, Policy, RuleEffect, RuleInfo, ANNOTATION_KEYS};
pub use error::{CheckError, CheckErrors, Error, Severity};
pub use schema::{plausible_method, ResourceKind, DEFAULT_DETECTORS, KNOWN_METHODS};

mod decide;
mod request;

pub use decide::{Decision, Defaults, Effect};
pub use request::{json_to_cedar, CallRequest, CallTemplate, Surface};

mod versions;

pub use versions::{
    diff_sources, Activation, PolicyDiff, PolicyVersions, VersionMeta, TREE_ACTIVATIONS,
    TREE_SOURCES, TREE_STATE, TREE_VERSIONS,
};

mod cases;

pub use cases::{run_cases, run_cases_with, CaseReport, CaseResult};

mod bench;

pub use bench::{bench, generate_policy, BenchReport};
