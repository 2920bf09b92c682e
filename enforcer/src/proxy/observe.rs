//! Every receipt the proxy writes also feeds the metrics: a receipt already holds what a
//! metric needs (connector, tool, method, outcome, reason code, latency, bytes, masking
//! counts), so metrics and audit can never disagree about what happened.

use std::time::Duration;

use crate::{
    audit::receipt::{Receipt, ReceiptKind},
    metrics::{CallObservation, DlpAction, Metrics, Outcome},
};

pub fn receipt(metrics: &Metrics, r: &Receipt) {
    if r.kind != ReceiptKind::Exchange {
        return;
    }
    let Some(request) = &r.request else {
        return;
    };
    let status = r.outcome.status.as_str();
    let outcome = match status {
        "ok" | "no_response" => Outcome::Allowed,
        "denied" | "refused" => Outcome::Denied,
        "approval_required" => Outcome::ApprovalRequired,
        "dlp_blocked" => Outcome::DlpBlocked,
        "tool_error" | "rpc_error" => Outcome::ToolError,
        // upstream_error, http_error, incomplete, terminated: the exchange itself failed.
        _ => Outcome::TransportError,
    };
    let reason_code = r
        .policy
        .as_ref()
        .filter(|_| matches!(outcome, Outcome::Denied | Outcome::ApprovalRequired))
        .map(|t| t.reason_code.as_str());
    let tool = (request.method == "tools/call")
        .then_some(request.target.as_deref())
        .flatten();
    metrics.record_call(&CallObservation {
        connector: &r.connector.connector,
        tool,
        method: &request.method,
        outcome,
        reason_code,
        latency: Duration::from_micros(r.outcome.latency_us),
        bytes_in: r.outcome.bytes_in,
        bytes_out: r.outcome.bytes_out,
    });
    let action = if outcome == Outcome::DlpBlocked {
        DlpAction::Blocked
    } else {
        DlpAction::Redacted
    };
    for (detector, count) in &r.outcome.masking {
        metrics.record_dlp(detector, action, u64::from(*count));
    }
}
