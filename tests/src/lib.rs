//! Harness for the end-to-end tests: a private test host per test.
//!
//! Each [`TestHost`] makes two network namespaces of its own, joined by a veth pair: "host",
//! where the daemon and the agents run, and "up", where an upstream server runs that is only
//! reachable through that link. It also gets its own bpffs pin directory, agents cgroup root
//! and state directory, so tests run side by side without seeing each other. Everything is
//! torn down on drop.
//!
//! These tests need root on a real kernel with BPF. Without it they fail loudly: CI is root,
//! and a skipped privileged test must never count as a pass.

use std::{
    fs,
    io::BufReader,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod mcp;

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Config for tests whose upstreams are raw TCP services no connector describes: the proxy
/// tunnels them (its default is to refuse unknown destinations).
pub const TUNNEL_CONFIG: &str = "[proxy]\nunknown_destinations = \"tunnel\"\n";

/// The proxy's listening addresses, as an agent's redirected socket sees its peer.
pub const PROXY_ADDRS: [&str; 2] = ["127.0.0.1:15001", "[::1]:15001"];

/// Upstream ports served in the "up" namespace on both address families.
pub const UPSTREAM_PORTS: std::ops::Range<u16> = 7000..7020;

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this privileged test needs root on a real kernel with BPF (CI runs as root); \
             run `sudo cargo xtask test`"
        );
    }
}

/// Where cargo put our binaries (`enforcer`, `netprobe`): `ENFORCER_BIN_DIR` if set (the
/// benchmarks point it at the release build), else beside the running executable (xtask) or
/// in the profile directory above it (tests run from `<target>/<profile>/deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    let path = if let Some(d) = std::env::var_os("ENFORCER_BIN_DIR") {
        PathBuf::from(d).join(name)
    } else if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>").join(name)
    } else {
        dir.join(name)
    };
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --bins`, which `cargo xtask test` does)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    out
}

fn sh(args: &[&str]) {
    let out = run(Command::new(args[0]).args(&args[1..]));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> PathBuf {
    let mi = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 mount")
}

/// Parse every JSON line of `text`.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub struct TestHost {
    pub name: String,
    pub ns_host: String,
    pub ns_up: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub pin_dir: PathBuf,
    pub agents_root: PathBuf,
    pub host_v4: Ipv4Addr,
    pub up_v4: Ipv4Addr,
    pub up_v6: Ipv6Addr,
    /// The host namespace's end of the veth pair (the route to the upstream).
    pub veth_host: String,
    /// The upstream namespace's end of the veth pair.
    pub veth_up: String,
    daemon: Option<Child>,
    /// Extra environment for the daemon (e.g. NOTIFY_SOCKET), set before `start_daemon`.
    pub daemon_env: Vec<(String, String)>,
    /// A command the daemon runs under (e.g. setpriv with a capability set).
    pub daemon_wrapper: Vec<String>,
    upstream: Option<Child>,
    daemon_log: PathBuf,
    upstream_log: PathBuf,
}

impl TestHost {
    /// A fresh host with the upstream serving; the daemon is not started yet.
    pub fn new(test: &str) -> Self {
        Self::with_config(test, "")
    }

    /// Like [`new`](Self::new), with extra TOML appended to the config (`[network]` etc.).
    pub fn with_config(test: &str, extra_toml: &str) -> Self {
        require_root();
        if !Path::new("/sys/fs/bpf").join(".").exists() {
            panic!("/sys/fs/bpf is missing");
        }
        let n = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{}{}", pid % 100_000, n);
        let name = format!("enf-{tag}");
        let (a, b) = ((pid % 200) as u8 + 20, n as u8);
        let host_v4 = Ipv4Addr::new(10, a, b, 1);
        let up_v4 = Ipv4Addr::new(10, a, b, 2);
        let host_v6: Ipv6Addr = format!("fd00:{a}:{b}::1").parse().unwrap();
        let up_v6: Ipv6Addr = format!("fd00:{a}:{b}::2").parse().unwrap();
        let dir = std::env::temp_dir().join(format!("enforcer-test-{test}-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let ns_host = format!("{name}-h");
        let ns_up = format!("{name}-u");
        let (veth_h, veth_u) = (format!("v{tag}h"), format!("v{tag}u"));
        sh(&["ip", "netns", "add", &ns_host]);
        sh(&["ip", "netns", "add", &ns_up]);
        sh(&[
            "ip", "link", "add", &veth_h, "netns", &ns_host, "type", "veth", "peer", "name",
            &veth_u, "netns", &ns_up,
        ]);
        for (ns, dev, v4, v6) in [
            (&ns_host, &veth_h, host_v4, host_v6),
            (&ns_up, &veth_u, up_v4, up_v6),
        ] {
            let nsarg = format!("--net=/run/netns/{ns}");
            sh(&["nsenter", &nsarg, "ip", "link", "set", "lo", "up"]);
            sh(&["nsenter", &nsarg, "ip", "link", "set", dev, "up"]);
            sh(&[
                "nsenter",
                &nsarg,
                "ip",
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            sh(&[
                "nsenter",
                &nsarg,
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{name}"));
        let agents_root = cgroup2_mount().join(format!("{name}-agents"));
        let config = dir.join("enforcer.toml");
        fs::write(
            &config,
            format!(
                "[paths]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\npin_dir = \"{}\"\n\n\
                 [agents]\ncgroup_root = \"{}\"\n\n{extra_toml}\n",
                dir.join("state").display(),
                dir.join("run").display(),
                pin_dir.display(),
                agents_root.display(),
            ),
        )
        .unwrap();
        let mut host = Self {
            name,
            ns_host,
            ns_up,
            daemon_log: dir.join("daemon.log"),
            upstream_log: dir.join("upstream.log"),
            dir,
            config,
            pin_dir,
            agents_root,
            host_v4,
            up_v4,
            up_v6,
            veth_host: veth_h.clone(),
            veth_up: veth_u.clone(),
            daemon: None,
            daemon_env: Vec::new(),
            daemon_wrapper: Vec::new(),
            upstream: None,
        };
        host.start_upstream();
        host
    }

    fn nsenter(&self, ns: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}"));
        c
    }

    fn start_upstream(&mut self) {
        let mut cmd = self.nsenter(&self.ns_up);
        cmd.arg(bin("netprobe")).arg("serve");
        for p in UPSTREAM_PORTS {
            cmd.arg(SocketAddr::new(self.up_v4.into(), p).to_string());
            cmd.arg(SocketAddr::new(self.up_v6.into(), p).to_string());
        }
        let log = fs::File::create(&self.upstream_log).unwrap();
        self.upstream = Some(
            cmd.stdout(log)
                .stderr(Stdio::inherit())
                .spawn()
                .expect("upstream"),
        );
        wait_for(Duration::from_secs(5), || {
            fs::read_to_string(&self.upstream_log).is_ok_and(|t| t.contains("serving"))
        })
        .expect("upstream did not start");
    }

    pub fn upstream_v4(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.up_v4.into(), port)
    }

    pub fn upstream_v6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.up_v6.into(), port)
    }

    /// Connections the upstream has accepted so far.
    pub fn upstream_accepted(&self) -> usize {
        json_lines(&fs::read_to_string(&self.upstream_log).unwrap_or_default())
            .iter()
            .filter(|v| v.get("accepted").is_some())
            .count()
    }

    /// Start the daemon in the host namespace and wait until it enforces.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.daemon_log)
            .unwrap();
        let before = self.daemon_log_lines().len();
        let child = self
            .nsenter(&self.ns_host)
            .args(&self.daemon_wrapper)
            .arg(bin("enforcer"))
            .arg("--config")
            .arg(&self.config)
            .arg("daemon")
            .env("ENFORCER_LOG_FORMAT", "json")
            .env("ENFORCER_LOG", "info,enforcer=debug")
            .envs(
                self.daemon_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("daemon");
        self.daemon = Some(child);
        let ok = wait_for(Duration::from_secs(20), || {
            self.daemon_log_lines()[before..]
                .iter()
                .any(|l| l["fields"]["message"] == "enforcement in force")
        });
        if ok.is_none() {
            panic!(
                "daemon did not come up; its log:\n{}",
                fs::read_to_string(&self.daemon_log).unwrap_or_default()
            );
        }
    }

    /// The running daemon's pid (to send it signals).
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    /// SIGTERM the daemon and wait for it to exit (a clean stop).
    pub fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let stopped = wait_for(Duration::from_secs(10), || {
                d.try_wait().ok().flatten().is_some()
            });
            assert!(stopped.is_some(), "the daemon did not stop on SIGTERM");
        }
    }

    /// Run the CLI, expect success, parse its stdout as JSON.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.enforcer(args);
        assert!(
            out.status.success(),
            "enforcer {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "enforcer {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// SIGKILL the daemon (a crash): kernel enforcement must stay.
    pub fn kill_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// The daemon's log line for the tunnelled flow opened by `pid` (it carries the kernel's
    /// identity of the caller in its span), waiting up to 5 s for it.
    pub fn tunnel_line(&self, pid: u64) -> Value {
        let mut found = None;
        wait_for(Duration::from_secs(5), || {
            found = self.daemon_log_lines().into_iter().find(|l| {
                l["fields"]["event"] == "tunnel" && l["span"]["pid"] == serde_json::json!(pid)
            });
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no tunnel log line for pid {pid}"))
    }

    pub fn daemon_log_lines(&self) -> Vec<Value> {
        json_lines(&fs::read_to_string(&self.daemon_log).unwrap_or_default())
    }

    /// Run the enforcer CLI in the host namespace.
    pub fn enforcer(&self, args: &[&str]) -> Output {
        run(self
            .nsenter(&self.ns_host)
            .arg(bin("enforcer"))
            .arg("--config")
            .arg(&self.config)
            .args(args))
    }

    /// Run the enforcer CLI with `input` on its stdin (confirmation prompts).
    pub fn enforcer_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write as _;
        let mut child = self
            .nsenter(&self.ns_host)
            .arg(bin("enforcer"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("enforcer");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// A kernel counter from `enforcer status --json`.
    pub fn counter(&self, name: &str) -> u64 {
        self.status()["counters"][name].as_u64().expect("counter")
    }

    /// `enforcer status --json`.
    pub fn status(&self) -> Value {
        let out = self.enforcer(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// The `enforcer exec` command line for running netprobe as an agent instance.
    pub fn agent_cmd(&self, agent: &str, instance: &str, probe_args: &[&str]) -> Command {
        let probe = bin("netprobe");
        let mut argv = vec![probe.to_str().unwrap()];
        argv.extend_from_slice(probe_args);
        self.exec_cmd(agent, instance, &argv)
    }

    /// The `enforcer exec` command line for running any program as an agent instance.
    pub fn exec_cmd(&self, agent: &str, instance: &str, argv: &[&str]) -> Command {
        let mut c = self.nsenter(&self.ns_host);
        c.arg(bin("enforcer"))
            .arg("--config")
            .arg(&self.config)
            .args(["exec", "--agent", agent, "--instance", instance, "--"])
            .args(argv);
        c
    }

    /// The agents' host address with host part `n` on the link to the upstream (10.a.b.n).
    pub fn host_address(&self, n: u8) -> Ipv4Addr {
        let o = self.host_v4.octets();
        Ipv4Addr::new(o[0], o[1], o[2], n)
    }

    /// Add 10.a.b.n to the agents' host side of the link.
    pub fn add_host_address(&self, n: u8) {
        let addr = format!("{}/24", self.host_address(n));
        sh(&[
            "nsenter",
            &format!("--net=/run/netns/{}", self.ns_host),
            "ip",
            "addr",
            "add",
            &addr,
            "dev",
            &self.veth_host,
        ]);
    }

    /// A command run in the daemon's network namespace (its loopback: the metrics endpoint).
    pub fn host_ns_cmd(&self, program: &str) -> Command {
        let mut c = self.nsenter(&self.ns_host);
        c.arg(program);
        c
    }

    /// Append TOML to the daemon's config (before `start_daemon`).
    pub fn append_config(&self, toml_text: &str) {
        let mut text = fs::read_to_string(&self.config).unwrap();
        text.push_str(toml_text);
        fs::write(&self.config, text).unwrap();
    }

    /// Start a program in the upstream namespace; waits for a JSON line with key `ready_key`.
    pub fn spawn_upstream(&self, argv: &[&str], ready_key: &str) -> Child {
        let mut child = self
            .nsenter(&self.ns_up)
            .args(argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("upstream program");
        let mut out = lines(&mut child);
        if read_until(&mut out, |v| v.get(ready_key).is_some()).is_none() {
            panic!("{argv:?} did not become ready");
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in std::io::BufRead::lines(out) {});
        child
    }

    /// A test PKI in this host's directory: a CA and a server certificate for `sans`
    /// (e.g. ["DNS:mcp.test", "IP:10.1.2.2"]). Returns (ca.pem, cert.pem, key.pem).
    pub fn make_pki(&self, name: &str, sans: &[String]) -> (PathBuf, PathBuf, PathBuf) {
        self.make_pki_for(name, sans, "serverAuth")
    }

    /// [`make_pki`](Self::make_pki) with the certificate's extended key usage
    /// ("serverAuth" or "clientAuth").
    pub fn make_pki_for(
        &self,
        name: &str,
        sans: &[String],
        eku: &str,
    ) -> (PathBuf, PathBuf, PathBuf) {
        let d = self.dir.join(format!("pki-{name}"));
        fs::create_dir_all(&d).unwrap();
        let p = |f: &str| d.join(f).to_str().unwrap().to_string();
        let ossl = |args: &[&str]| {
            let out = run(Command::new("openssl").args(args));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ossl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &p("ca.key"),
        ]);
        ossl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &p("ca.key"),
            "-sha256",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            &p("ca.pem"),
        ]);
        ossl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &p("key.pem"),
        ]);
        ossl(&[
            "req",
            "-new",
            "-key",
            &p("key.pem"),
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &p("csr.pem"),
        ]);
        fs::write(
            d.join("ext.cnf"),
            format!(
                "subjectAltName={}\nextendedKeyUsage={eku}\n",
                sans.join(",")
            ),
        )
        .unwrap();
        ossl(&[
            "x509",
            "-req",
            "-in",
            &p("csr.pem"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("cert.pem"),
        ]);
        (d.join("ca.pem"), d.join("cert.pem"), d.join("key.pem"))
    }

    /// Run netprobe as an agent instance and return its JSON lines.
    pub fn agent(&self, agent: &str, instance: &str, probe_args: &[&str]) -> Vec<Value> {
        let out = run(&mut self.agent_cmd(agent, instance, probe_args));
        json_lines(&String::from_utf8_lossy(&out.stdout))
    }

    /// Start netprobe as an agent instance in the background; read its lines with [`lines`].
    pub fn spawn_agent(&self, agent: &str, instance: &str, probe_args: &[&str]) -> Child {
        self.agent_cmd(agent, instance, probe_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("agent")
    }

    /// Run netprobe in the host namespace but outside the agents' subtree.
    pub fn outside(&self, probe_args: &[&str]) -> Vec<Value> {
        let out = run(self
            .nsenter(&self.ns_host)
            .arg(bin("netprobe"))
            .args(probe_args));
        json_lines(&String::from_utf8_lossy(&out.stdout))
    }

    /// Run netprobe in a cgroup made by hand under the agents root (not via `enforcer exec`),
    /// to show the kernel alone enforces.
    pub fn in_cgroup(&self, rel: &str, probe_args: &[&str]) -> Vec<Value> {
        let cg = self.agents_root.join(rel);
        fs::create_dir_all(&cg).unwrap();
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {} {}",
            cg.display(),
            bin("netprobe").display(),
            probe_args.join(" ")
        );
        let out = run(self.nsenter(&self.ns_host).args(["sh", "-c", &script]));
        let _ = fs::remove_dir(&cg);
        json_lines(&String::from_utf8_lossy(&out.stdout))
    }

    /// Start netprobe in the host namespace, outside the agents' subtree, in the background.
    pub fn spawn_outside(&self, probe_args: &[&str]) -> Child {
        self.spawn_netprobe(&self.ns_host, probe_args)
    }

    /// Start netprobe in the upstream namespace in the background (e.g. a UDP sink).
    pub fn spawn_probe_upstream(&self, probe_args: &[&str]) -> Child {
        self.spawn_netprobe(&self.ns_up, probe_args)
    }

    fn spawn_netprobe(&self, ns: &str, probe_args: &[&str]) -> Child {
        self.nsenter(ns)
            .arg(bin("netprobe"))
            .args(probe_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("netprobe")
    }

    /// Set a sysctl (`key=value`) in the host namespace.
    pub fn sysctl(&self, key_value: &str) {
        sysctl_in(&self.ns_host, key_value);
    }

    /// Set a sysctl (`key=value`) in the upstream namespace.
    pub fn sysctl_up(&self, key_value: &str) {
        sysctl_in(&self.ns_up, key_value);
    }

    /// Allow unprivileged-style ICMP ping sockets in the host namespace, so a refusal comes
    /// from the enforcer rather than from the kernel's default ping_group_range.
    pub fn allow_ping_sockets(&self) {
        sh(&[
            "nsenter",
            &format!("--net=/run/netns/{}", self.ns_host),
            "sysctl",
            "-qw",
            "net.ipv4.ping_group_range=0 2147483647",
        ]);
    }
}

fn sysctl_in(ns: &str, key_value: &str) {
    sh(&[
        "nsenter",
        &format!("--net=/run/netns/{ns}"),
        "sysctl",
        "-qw",
        key_value,
    ]);
}

/// Read JSON lines from a child's stdout until `pred` matches one (or the stream ends).
pub fn read_until(
    reader: &mut impl std::io::BufRead,
    pred: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
            if pred(&v) {
                return Some(v);
            }
        }
    }
}

/// A line reader over a spawned agent's stdout.
pub fn lines(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    BufReader::new(child.stdout.take().expect("piped stdout"))
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            // SIGTERM first so it can record its exit; then make sure.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            if wait_for(Duration::from_secs(3), || {
                d.try_wait().ok().flatten().is_some()
            })
            .is_none()
            {
                let _ = d.kill();
            }
            let _ = d.wait();
        }
        if let Some(mut u) = self.upstream.take() {
            let _ = u.kill();
            let _ = u.wait();
        }
        let _ = self.enforcer(&["daemon", "--cleanup"]);
        for ns in [&self.ns_host, &self.ns_up] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        remove_cgroup_tree(&self.agents_root);
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // Kill anything left inside (cgroup.kill), then remove the now-empty directory.
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let _ = wait_for(Duration::from_secs(2), || {
        fs::remove_dir(dir).is_ok() || !dir.exists()
    });
}

/// Hex SHA-256 of a text (the test server reports header digests, not secrets).
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes (the kill benchmark).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
