//! Audit receipts: the fixed `Receipt` contract, a hash-chained append-only log of segment
//! files with secondary indexes in sled, search, session replay, and benchmarks.

pub mod bench;
pub mod canonical;
pub mod chain;
pub mod compact;
pub mod durability;
pub mod error;
pub mod index;
pub mod indexer;
pub mod log;
pub mod posting_list;
pub mod receipt;
pub mod search;
pub mod store;
pub mod turn;

pub use chain::{ChainRecord, VerifyReport};
pub use durability::Durability;
pub use error::AuditError;
pub use search::Query;
pub use store::AuditStore;
