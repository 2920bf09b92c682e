//! `bench`: decision latency on a generated policy of N rules.

use super::compile::Policy;
use super::decide::{Decision, Defaults, Effect};
use super::request::{CallRequest, CallTemplate, Surface};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Latency figures, in microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub rules: usize,
    pub iterations: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub allowed: usize,
    pub denied: usize,
    pub approval: usize,
    pub errors: usize,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rules, {} decisions: p50 {:.1} us, p99 {:.1} us, mean {:.1} us \
             (allow {}, deny {}, approval {}, eval errors {})",
            self.rules,
            self.iterations,
            self.p50_us,
            self.p99_us,
            self.mean_us,
            self.allowed,
            self.denied,
            self.approval,
            self.errors
        )
    }
}

/// Generate a realistic policy of `rules` rules: forbids on tool name
/// patterns, permits per agent and connector, argument conditions, approval
/// permits with time and DLP conditions.
pub fn generate_policy(rules: usize) -> String {
    let mut s = String::new();
    for i in 0..rules {
        let _ = match i % 4 {
            0 => writeln!(
                s,
                "@id(\"forbid-pattern-{i}\")\n@reason(\"destructive_tool\")\nforbid(principal, action == Action::\"tools/call\", resource)\nwhen {{ resource.name like \"danger{i}_*\" }};\n"
            ),
            1 => writeln!(
                s,
                "@id(\"permit-agent-{i}\")\npermit(principal in Agent::\"agent-{}\", action == Action::\"tools/call\", resource in Connector::\"conn-{}\");\n",
                i % 50,
                i % 20
            ),
            2 => writeln!(
                s,
                "@id(\"forbid-args-{i}\")\n@reason(\"sensitive_path\")\nforbid(principal, action == Action::\"tools/call\", resource == Tool::\"fs_write_{}\")\nwhen {{ context.arguments has path && context.arguments.path like \"/etc/*\" }};\n",
                i % 30
            ),
            _ => writeln!(
                s,
                "@id(\"approval-{i}\")\n@approval(\"required\")\npermit(principal in User::\"user-{}\", action == Action::\"tools/call\", resource)\nwhen {{ context.time.hour >= 9 && context.dlp.aws_access_key == 0 }};\n",
                i % 40
            ),
        };
    }
    s
}

/// Small deterministic PRNG (xorshift64*), no dependency needed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Compile a generated policy of `rules` rules and time `iterations`
/// random decisions.
pub fn bench(rules: usize, iterations: usize) -> BenchReport {
    run(rules, iterations, Policy::decide)
}

fn run(
    rules: usize,
    iterations: usize,
    decide: impl Fn(&Policy, &CallRequest<'_>, &Defaults) -> Decision,
) -> BenchReport {
    let src = generate_policy(rules);
    let policy =
        Policy::compile(&src, "bench.cedar").unwrap_or_else(|e| panic!("generated policy: {e}"));
    let defaults = Defaults::product();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut times = Vec::with_capacity(iterations);
    let (mut allowed, mut denied, mut approval, mut errors) = (0, 0, 0, 0);
    let base = UNIX_EPOCH + Duration::from_secs(1_715_000_000);
    for _ in 0..iterations {
        let agent = format!("agent-{}", rng.next(60));
        let user = format!("user-{}", rng.next(50));
        let connector = format!("conn-{}", rng.next(25));
        let tool = match rng.next(3) {
            0 => format!("danger{}_drop", rng.next(rules as u64)),
            1 => format!("fs_write_{}", rng.next(40)),
            _ => format!("tool_{}", rng.next(100)),
        };
        let args = match rng.next(3) {
            0 => json!({"path": "/etc/hosts", "mode": 420}),
            1 => json!({"path": "/home/u/notes.txt", "content": "hello", "tags": ["a", "b"]}),
            _ => json!({"query": "select 1", "limit": 10, "ratio": 0.5}),
        };
        let mut dlp = BTreeMap::new();
        if rng.next(10) == 0 {
            dlp.insert("aws_access_key".to_string(), 1);
        }
        let now: SystemTime = base + Duration::from_secs(rng.next(86_400 * 7));
        let req = CallRequest {
            call: CallTemplate {
                user: &user,
                agent: &agent,
                instance: "i1",
                surface: Surface {
                    exe: "/usr/bin/node",
                    client: "claude-code",
                },
                connector: &connector,
                method: "tools/call",
                target: &tool,
                environment: "prod",
            },
            arguments: &args,
            dlp: &dlp,
            now,
        };
        let t0 = Instant::now();
        let d = decide(&policy, &req, &defaults);
        times.push(t0.elapsed());
        match d.effect {
            Effect::Allow => allowed += 1,
            Effect::Deny => denied += 1,
            Effect::RequireApproval => approval += 1,
        }
        errors += d.errors.len();
    }
    times.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pick = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .map(us)
            .unwrap_or(0.0)
    };
    let mean = if times.is_empty() {
        0.0
    } else {
        times.iter().copied().map(us).sum::<f64>() / times.len() as f64
    };
    BenchReport {
        rules,
        iterations,
        p50_us: pick(0.5),
        p99_us: pick(0.99),
        mean_us: mean,
        allowed,
        denied,
        approval,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::CallTemplate;
    use super::*;

    #[test]
    fn bench_small_is_sane() {
        let r = bench(100, 200);
        println!("{r}");
        assert_eq!(r.allowed + r.denied + r.approval, 200);
        assert!(r.allowed > 0 && r.denied > 0 && r.approval > 0, "{r}");
        assert_eq!(r.errors, 0, "{r}");
        assert!(r.p50_us > 0.0 && r.p99_us >= r.p50_us, "{r}");

        // Spot-check decisions of the generated policy.
        let p = Policy::compile(&generate_policy(100), "b.cedar").unwrap();
        let d = Defaults::product();
        let t = |agent: &'static str, conn: &'static str, tool: &'static str| CallTemplate {
            user: "nobody",
            agent,
            instance: "i",
            connector: conn,
            method: "tools/call",
            target: tool,
            environment: "prod",
            ..Default::default()
        };
        assert!(!p.could_ever_call(&t("agent-1", "conn-1", "danger0_x"), &d));
        assert!(p.could_ever_call(&t("agent-1", "conn-1", "fs_write_2"), &d));
        assert!(!p.could_ever_call(&t("agent-99", "conn-1", "tool_1"), &d));
    }

    /// `cargo test --release bench_1000 -- --ignored --nocapture`:
    /// 10, 100 and 1,000 rules.
    #[test]
    #[ignore]
    fn bench_1000() {
        for n in [10, 100, 1000] {
            let r = bench(n, 2000);
            println!("{r}");
            assert_eq!(r.errors, 0);
        }
    }

    /// Same workload on the full policy set (the pre-index `decide`):
    /// `cargo test --release bench_reference -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_reference() {
        for n in [10, 100, 1000] {
            let r = run(n, 2000, Policy::decide_reference);
            println!("reference: {r}");
        }
    }
}
