//! An MCP test host: a [`TestHost`] whose upstream namespace runs real MCP servers (the
//! official Python SDK, tests/peers) and whose daemon has connectors and a credential binding
//! for them. Shared by the MCP proxy tests and `cargo xtask demo`.
//!
//! Upstream: TLS on 8443 (certificate from a test CA the connector trusts; demands a bearer
//! token only the enforcer holds), TLS on 8444 (certificate from a CA nobody trusts), TLS on
//! 8445 demanding a client certificate (connector "mtls" holds one for `mcp.test:8445`; the
//! address form has none), plain HTTP on 8080 (idle limit 1 s). `mcp.test` resolves to the upstream for agents started with
//! [`McpHost::client`].

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command},
};

use serde_json::{json, Value};

use crate::{json_lines, TestHost};

pub const UPSTREAM_TOKEN: &str = "upstream-secret-5f2c9e";
/// The API key the plain connector's binding injects as `X-Api-Key`.
pub const API_KEY: &str = "plain-api-key-93d1";
/// Host part of the extra address the plain connector's route binds to (10.a.b.<this>).
pub const ROUTE_SOURCE_HOST: u8 = 3;
pub const AGENT_TOKEN: &str = "agent-own-token-71ab";
/// The fake AWS key the test server's leak_secret tool returns (peers/mcp_server.py).
pub const FAKE_AWS_KEY: &str = "AKIAABCDEFGHIJKLMNOP";

pub fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// The Python with the pinned SDK: tests/peers/.venv, which .ci/run creates.
pub fn python() -> String {
    let venv = peers().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: create it with `python3 -m venv tests/peers/.venv && \
         tests/peers/.venv/bin/pip install -r tests/peers/requirements.txt` (.ci/run does)",
        venv.display()
    );
    venv.to_str().unwrap().to_string()
}

pub struct McpHost {
    pub host: TestHost,
    hosts_file: PathBuf,
    _servers: Servers,
}

/// The upstream servers, killed when dropped: also when setup panics half-way (a leaked
/// server would keep the test's output pipe open).
pub struct Servers(pub Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for s in &mut self.0 {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// A policy file under tests/policies.
pub fn policy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name)
}

/// Build the MCP test host and start its daemon, with the allow-all test policy unless
/// `extra_toml` brings a `[policy]` section of its own.
pub fn setup(test: &str, extra_toml: &str) -> McpHost {
    if extra_toml.contains("[policy]") {
        return setup_raw(test, extra_toml);
    }
    let policy = format!(
        "{extra_toml}\n[policy]\nfile = \"{}\"\n",
        policy_file("allow-all.cedar").display()
    );
    setup_raw(test, &policy)
}

/// [`setup`] with the drill policy (tests/policies/drill.cedar) and `policy_extra` lines
/// added to its `[policy]` section (e.g. `mode = "shadow"`).
pub fn setup_with_drill_policy(test: &str, policy_extra: &str, extra_toml: &str) -> McpHost {
    setup_with_policy(test, &policy_file("drill.cedar"), policy_extra, extra_toml)
}

/// [`setup`] with the Cedar policy at `policy` (a file the test may rewrite and reload).
pub fn setup_with_policy(
    test: &str,
    policy: &Path,
    policy_extra: &str,
    extra_toml: &str,
) -> McpHost {
    let toml = format!(
        "{extra_toml}\n[policy]\nenvironment = \"test\"\nfile = \"{}\"\n{policy_extra}\n",
        policy.display()
    );
    setup_raw(test, &toml)
}

fn setup_raw(test: &str, extra_toml: &str) -> McpHost {
    let mut host = TestHost::new(test);
    let up = host.up_v4.to_string();
    let sans = vec!["DNS:mcp.test".to_string(), format!("IP:{up}")];
    let (ca, cert, key) = host.make_pki("upstream", &sans);
    let (_rogue_ca, rogue_cert, rogue_key) = host.make_pki("rogue", &sans);
    let (client_ca, client_cert, client_key) = host.make_pki_for(
        "agent-client",
        &["DNS:enforcer.test".to_string()],
        "clientAuth",
    );
    let server = peers().join("mcp_server.py");
    let server = server.to_str().unwrap();
    let py = python();
    let py = py.as_str();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (rogue_cert, rogue_key) = (rogue_cert.to_str().unwrap(), rogue_key.to_str().unwrap());
    let client_ca = client_ca.to_str().unwrap();
    // One SDK server per port: the flags after the port say how it serves.
    let spawn = |port: &str, flags: &[&str]| {
        let mut args = vec![py, server, "--host", up.as_str(), "--port", port];
        args.extend_from_slice(flags);
        host.spawn_upstream(&args, "listening")
    };
    let servers = Servers(vec![
        spawn(
            "8443",
            &[
                "--certfile",
                cert,
                "--keyfile",
                key,
                "--expect-token",
                UPSTREAM_TOKEN,
                "--resumable",
            ],
        ),
        spawn("8444", &["--certfile", rogue_cert, "--keyfile", rogue_key]),
        // Plain HTTP, answering in JSON bodies (the others stream SSE): both response forms.
        spawn("8080", &["--json-response"]),
        spawn(
            "8445",
            &[
                "--certfile",
                cert,
                "--keyfile",
                key,
                "--client-ca",
                client_ca,
            ],
        ),
    ]);
    let creds = host.dir.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    for (file, secret) in [("mcp-token", UPSTREAM_TOKEN), ("api-key", API_KEY)] {
        std::fs::write(creds.join(file), format!("{secret}\n")).unwrap();
        std::fs::set_permissions(creds.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // A second address on the agents' host, for the plain connector's route to bind to.
    host.add_host_address(ROUTE_SOURCE_HOST);
    host.append_config(&format!(
        r#"
[proxy]
max_body_bytes = 65536
worker_threads = 1

[credentials]
dir = "{creds}"

[[connectors]]
id = "mcp-test"
match = ["mcp.test:8443", "{up}:8443"]
tls = {{ ca = "{ca}" }}

[[connectors]]
id = "rogue"
match = ["mcp.test:8444"]
tls = {{ ca = "{ca}" }}

[[connectors]]
id = "mtls"
match = ["mcp.test:8445"]
tls = {{ ca = "{ca}", client_cert = "{client_cert}", client_key = "{client_key}" }}

[[connectors]]
id = "mtls-without-cert"
match = ["{up}:8445"]
tls = {{ ca = "{ca}" }}

[[connectors]]
id = "plain"
match = ["{up}:8080"]
route = {{ name = "lab", bind = "{route_source}" }}
idle_timeout_secs = 1

[[bindings]]
id = "plain-api-key"
connector = "plain"
secret = "api-key"
mode = "header"
header = "X-Api-Key"

[[bindings]]
id = "mcp-token"
connector = "mcp-test"
secret = "mcp-token"
version = 3
{extra_toml}
"#,
        creds = creds.display(),
        ca = ca.display(),
        client_cert = client_cert.display(),
        route_source = host.host_address(ROUTE_SOURCE_HOST),
        client_key = client_key.display(),
    ));
    let hosts_file = host.dir.join("hosts");
    std::fs::write(&hosts_file, format!("127.0.0.1 localhost\n{up} mcp.test\n")).unwrap();
    host.start_daemon();
    McpHost {
        host,
        hosts_file,
        _servers: servers,
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl McpHost {
    /// `enforcer audit search --json` with these filters: the receipts found.
    pub fn search(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = vec!["audit", "search", "--json"];
        args.extend_from_slice(filters);
        self.host.cli_json(&args)["receipts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Run the SDK client as an instance of agent "sdk-agent"; `mcp.test` resolves to the
    /// upstream through a private /etc/hosts (a mount namespace of its own). Returns its JSON
    /// lines.
    pub fn client(&self, instance: &str, url: &str, args: &[&str]) -> Vec<Value> {
        self.client_as("sdk-agent", instance, url, args)
    }

    pub fn client_cmd(&self, instance: &str, url: &str, args: &[&str]) -> Command {
        self.client_cmd_as("sdk-agent", instance, url, args)
    }

    /// [`client`](Self::client) for any agent name.
    pub fn client_as(&self, agent: &str, instance: &str, url: &str, args: &[&str]) -> Vec<Value> {
        let out = self
            .client_cmd_as(agent, instance, url, args)
            .output()
            .unwrap();
        json_lines(&String::from_utf8_lossy(&out.stdout))
    }

    pub fn client_cmd_as(&self, agent: &str, instance: &str, url: &str, args: &[&str]) -> Command {
        let mut script = format!(
            "mount --bind {} /etc/hosts && exec {} {} {}",
            self.hosts_file.display(),
            python(),
            peers().join("mcp_client.py").display(),
            shell_quote(url)
        );
        for a in args {
            script.push(' ');
            script.push_str(&shell_quote(a));
        }
        self.host
            .exec_cmd(agent, instance, &["unshare", "-m", "sh", "-c", &script])
    }

    /// curl as an agent instance (it trusts the enforcer's CA through SSL_CERT_FILE, which
    /// `enforcer exec` sets). Returns (HTTP status, body).
    pub fn curl(&self, instance: &str, url: &str, body_file: &Path) -> (u16, Value) {
        let up = self.host.up_v4.to_string();
        let resolve = format!("mcp.test:8443:{up}");
        let data = format!("@{}", body_file.display());
        let out = self
            .host
            .exec_cmd(
                "curl-agent",
                instance,
                &[
                    "curl",
                    "-sS",
                    "--resolve",
                    &resolve,
                    "-H",
                    "Content-Type: application/json",
                    "-H",
                    "Accept: application/json, text/event-stream",
                    "--data-binary",
                    &data,
                    "-w",
                    "\n%{http_code}",
                    url,
                ],
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(json!(body)),
        )
    }

    pub fn forwarded_lines(&self) -> Vec<Value> {
        self.host
            .daemon_log_lines()
            .into_iter()
            .filter(|l| l["fields"]["message"] == "forwarded")
            .collect()
    }
}
