//! `enforcer drill --simulate`: the incident drill rehearsed on a private, throwaway setup,
//! so an admin can practise on a host without touching its agents. It starts its own daemon
//! (own agents cgroup, pin directory, state and proxy port; the host's daemon and agents are
//! left alone), a real MCP server with one destructive tool, one policy forbidding that tool,
//! and an agent in a cgroup that hits the policy, reads, streams a long call, and keeps
//! reconnecting after the revocation like a client that ignores protocol termination. The
//! drill then walks its twelve steps from the denial's receipt, and the rehearsal shows what
//! the agent itself saw. Everything is removed afterwards.

pub mod agent;
pub mod server;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::config::Config;

/// The rehearsal policy: the destructive tool is forbidden with a reason and a note for the
/// agent's developer; everything else the rehearsal agent may call.
const POLICY: &str = r#"@id("no-destructive-tools")
@reason("destructive_tool")
@note("delete_records wipes a whole table; agents never call it. Ask the data team for a reviewed job.")
forbid(principal, action == Action::"tools/call", resource == Tool::"delete_records");

@id("rehearsal-agent-tools")
@reason("agent_allowlist")
permit(principal in Agent::"rehearsal-agent", action == Action::"tools/call", resource);
"#;

const AGENT: &str = "rehearsal-agent";
const INSTANCE: &str = "r1";

/// The throwaway setup's places, removed on drop.
struct Setup {
    dir: PathBuf,
    config_path: PathBuf,
    config: Config,
    exe: PathBuf,
    daemon: Option<Child>,
    agent: Option<Child>,
    keep: bool,
}

impl Setup {
    fn create(server_port: u16) -> anyhow::Result<Self> {
        let id = std::process::id();
        let dir = std::env::temp_dir().join(format!("enforcer-rehearsal-{id}"));
        fs::create_dir_all(dir.join("credentials"))?;
        fs::set_permissions(dir.join("credentials"), fs::Permissions::from_mode(0o700))?;
        let token = dir.join("credentials/rehearsal-token");
        fs::write(&token, format!("rehearsal-{:016x}\n", nonce()))?;
        fs::set_permissions(&token, fs::Permissions::from_mode(0o600))?;
        fs::write(dir.join("policy.cedar"), POLICY)?;
        let cgroup_root = crate::cgroups::cgroup2_mount()?.join(format!("enforcer-rehearsal-{id}"));
        let proxy_port = free_port()?;
        let toml = format!(
            r#"# Written by `enforcer drill --simulate`; removed when it ends.
[paths]
state_dir = "{dir}/state"
runtime_dir = "{dir}/run"
pin_dir = "/sys/fs/bpf/enforcer-rehearsal-{id}"

[agents]
cgroup_root = "{cgroup}"

[proxy]
port = {proxy_port}

[credentials]
dir = "{dir}/credentials"

[metrics]
# The host's own daemon may hold the metrics port.
enabled = false

[policy]
environment = "rehearsal"
file = "{dir}/policy.cedar"

[[connectors]]
id = "rehearsal-server"
match = ["127.0.0.1:{server_port}"]
route = {{ name = "loopback" }}
idle_timeout_secs = 600

[[bindings]]
id = "rehearsal-token"
connector = "rehearsal-server"
secret = "rehearsal-token"
"#,
            dir = dir.display(),
            cgroup = cgroup_root.display(),
        );
        let config_path = dir.join("enforcer.toml");
        fs::write(&config_path, toml)?;
        let config = Config::load(&config_path)?;
        Ok(Self {
            dir,
            config_path,
            config,
            exe: std::env::current_exe().context("finding the enforcer binary")?,
            daemon: None,
            agent: None,
            keep: false,
        })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--config").arg(&self.config_path);
        c
    }

    fn start_daemon(&mut self) -> anyhow::Result<()> {
        let log = fs::File::create(self.dir.join("daemon.log"))?;
        let child = self
            .command()
            .arg("daemon")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the rehearsal daemon")?;
        self.daemon = Some(child);
        let socket = crate::control::socket_path(&self.config.paths.runtime_dir);
        wait(Duration::from_secs(30), "the rehearsal daemon", || {
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(|d| d.try_wait()) {
                return Err(anyhow::anyhow!(
                    "the rehearsal daemon exited ({status}); its log: {}",
                    self.dir.join("daemon.log").display()
                ));
            }
            Ok(crate::control::client::get(&socket, "/v1/sessions").is_ok())
        })
    }

    fn start_agent(&mut self, url: &str) -> anyhow::Result<()> {
        let out = fs::File::create(self.agent_log())?;
        let child = self
            .command()
            .args(["exec", "--agent", AGENT, "--instance", INSTANCE, "--"])
            .arg(&self.exe)
            .args(["rehearsal-agent", "--url", url])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .context("starting the rehearsal agent")?;
        self.agent = Some(child);
        Ok(())
    }

    fn agent_log(&self) -> PathBuf {
        self.dir.join("agent.jsonl")
    }

    fn agent_lines(&self) -> Vec<Value> {
        fs::read_to_string(self.agent_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for child in [self.agent.take(), self.daemon.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self
            .command()
            .args(["daemon", "--cleanup"])
            .stdout(Stdio::null())
            .status();
        if let Some(root) = &self.config.agents.cgroup_root {
            remove_cgroups(root);
        }
        if self.keep {
            eprintln!("rehearsal files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Remove a cgroup subtree: kill whatever still runs in it (the agent may outlive its
/// revocation), then rmdir deepest first, retrying while the last processes are reaped.
fn remove_cgroups(dir: &Path) {
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(3);
    while remove_tree(dir).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn wait(
    timeout: Duration,
    what: &str,
    mut ready: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} was not ready within {timeout:?}")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn nonce() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

fn say(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

/// The drill itself, walked from a receipt against a config: (passed, report).
pub type Walk<'a> = &'a dyn Fn(&Config, &str) -> anyhow::Result<(bool, Value)>;

/// Run the rehearsal with `walk` as the drill; returns whether it passed, and the report.
pub fn simulate(walk: Walk<'_>) -> anyhow::Result<(bool, Value)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (listener, server_addr) = rt.block_on(server::bind())?;
    rt.spawn(server::serve(listener));
    let mut setup = Setup::create(server_addr.port())?;
    let result = rehearse(&mut setup, server_addr, walk);
    if !matches!(result, Ok((true, _))) {
        setup.keep = true;
    }
    drop(setup);
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

fn rehearse(
    setup: &mut Setup,
    server: std::net::SocketAddr,
    walk: Walk<'_>,
) -> anyhow::Result<(bool, Value)> {
    say("Rehearsal setup (private: its own daemon, agents cgroup, policy and MCP server)");
    println!("  config      {}", setup.config_path.display());
    println!("  MCP server  http://{server}/mcp (tools: read_report, delete_records, watch_feed)");
    setup.start_daemon()?;
    println!(
        "  daemon      up (proxy port {}, agents under {})",
        setup.config.proxy.port,
        setup
            .config
            .agents
            .cgroup_root
            .as_deref()
            .unwrap_or(Path::new("-"))
            .display()
    );
    setup.start_agent(&format!("http://{server}/mcp"))?;
    wait(
        Duration::from_secs(30),
        "the rehearsal agent's streaming call",
        || {
            Ok(setup
                .agent_lines()
                .iter()
                .filter(|l| l.get("progress").is_some())
                .count()
                >= 3)
        },
    )?;
    say("What the agent did (its own output)");
    for l in setup
        .agent_lines()
        .iter()
        .take_while(|l| l.get("progress").is_none())
    {
        println!("  {l}");
    }
    println!("  ... streaming watch_feed (progress notifications arriving)");

    let socket = crate::control::socket_path(&setup.config.paths.runtime_dir);
    let denied = crate::control::client::get(
        &socket,
        &format!("/v1/receipts?agent={AGENT}&outcome=denied&limit=1"),
    )?;
    let receipt = denied["receipts"][0]["id"]
        .as_str()
        .context("the denial left no receipt")?
        .to_string();
    say(&format!("The drill, from the denial's receipt {receipt}"));
    let (drilled, mut report) = walk(&setup.config, &receipt)?;

    // Give the stubborn agent time to try again, then read what it saw.
    std::thread::sleep(Duration::from_millis(1500));
    let lines = setup.agent_lines();
    let cut = lines
        .iter()
        .find(|l| l["call"] == "watch_feed")
        .cloned()
        .unwrap_or(Value::Null);
    let reconnects: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("reconnect").is_some())
        .collect();
    let succeeded = reconnects.iter().filter(|l| l["ok"] == true).count();
    say("What the agent saw");
    println!("  its streaming call: {cut}");
    println!(
        "  {} reconnect attempt(s) with its old session id, {} succeeded{}",
        reconnects.len(),
        succeeded,
        reconnects
            .first()
            .map(|r| format!("; first: {r}"))
            .unwrap_or_default()
    );
    let call_cut_with_reason = cut["data"]["reason_code"] == "revoked";
    let ok = drilled && call_cut_with_reason && succeeded == 0 && !reconnects.is_empty();
    report["rehearsal"] = json!({
        "streaming_call": cut,
        "call_cut_with_reason": call_cut_with_reason,
        "reconnect_attempts": reconnects.len(),
        "reconnects_succeeded": succeeded,
        "passed": ok,
    });
    say(if ok {
        "Rehearsal passed: denied with diagnostics, traced, revoked, cut in flight, reconnects refused"
    } else {
        "REHEARSAL FAILED: see above"
    });
    Ok((ok, report))
}
