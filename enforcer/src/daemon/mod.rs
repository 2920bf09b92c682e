//! The daemon: attach or adopt the kernel programs, point them at the proxy, apply the
//! stored revocations, and serve until told to stop. Stopping leaves enforcement pinned:
//! agents then find the proxy port closed (fail closed).

mod observability;
mod reload;
mod systemd;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use enforcer_common::{AddrKey, Settings};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use crate::{
    audit::{self, AuditStore},
    cgroups::AgentsTree,
    config::{Config, Durability},
    connectors::Connectors,
    control,
    credentials::CredentialStore,
    dlp::Dlp,
    gate::Gate,
    identity::Resolver,
    kernel::{self, addr, kill::netns_cookie, Attachment, KernelMaps},
    policy::{self, PolicyVersions},
    proxy::{self, FlowTable, LegRegistry, ProxyContext},
    revocation::{self, RevocationStore},
    store,
    tls::{AgentTls, LocalCa},
};

/// Run the daemon with `config`, read from `config_path` (read again on reload).
pub fn run(config: Config, config_path: PathBuf) -> anyhow::Result<()> {
    init_tracing();
    // The control plane (admin socket, metrics, export, revocation follower, reaper) runs
    // here; the data path runs on the proxy threads (`proxy::workers`), each a runtime of
    // its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, config_path))
}

fn init_tracing() {
    // rustls warns on every handshake whose client sends an IP address as SNI (a client's
    // quirk, harmless: the name is ignored): kept out of the log unless asked for by name.
    let mut directives = std::env::var("ENFORCER_LOG").unwrap_or_else(|_| "info".into());
    if !directives.contains("rustls") {
        directives.push_str(",rustls::msgs::handshake=error");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // aya-log speaks the `log` facade; tracing-subscriber's init bridges it into tracing.
    // ENFORCER_LOG_FORMAT=json gives one JSON object per line with the span's fields
    // (agent, instance, user, destination) beside each event, for journald and tests.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if std::env::var("ENFORCER_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

async fn serve(config: Config, config_path: PathBuf) -> anyhow::Result<()> {
    // Everything that can be wrong in the configuration is found before touching the kernel.
    let connectors = Connectors::build(&config.connectors)?;
    let ids: Vec<&str> = connectors.all().iter().map(|c| c.id.as_str()).collect();
    let credentials = CredentialStore::new(&config.credentials.dir, config.bindings.clone(), &ids)?;
    let dlp = Dlp::new(&config.dlp).context("the [dlp] configuration")?;
    let db = store::open(&config.store_dir(), None)?;
    let audit = Arc::new(
        AuditStore::open(
            &db,
            &config.receipts_dir(),
            match config.audit.durability {
                Durability::Strict => audit::Durability::Strict,
                Durability::Window => {
                    audit::Durability::Window(Duration::from_millis(config.audit.flush_window_ms))
                }
            },
        )
        .context("opening the audit store")?,
    );
    let versions = PolicyVersions::open(&db).context("opening the policy versions")?;
    let gate = Arc::new(Gate::new(
        config.policy.environment.clone(),
        config.policy.mode,
        policy_defaults(&config),
        dlp,
    ));
    activate_policy(&config, &versions, &gate)?;
    credentials.on_secrets_changed(Box::new({
        let gate = gate.clone();
        move |secrets| {
            if let Err(e) = gate.dlp().set_bound_secrets(secrets) {
                warn!(error = %e, "bound secrets not registered with the detectors");
            }
        }
    }));
    for (binding, e) in credentials.preload() {
        warn!(%binding, error = %e, "a bound secret cannot be read; calls through it will be refused");
    }
    let ca = Arc::new(LocalCa::load_or_create(&config.ca_dir()).context("the local CA")?);
    info!(ca = %ca.cert_path().display(), connectors = ids.len(), "local CA ready");
    let tree = AgentsTree::new(config.agents.cgroup_root.as_deref())?;
    refuse_if_inside(tree.root())?;
    tree.ensure_root()
        .context("creating the agents root cgroup")?;

    // Listen first, so the kernel never points agents at a port nobody serves: one socket
    // per proxy thread and address, in one SO_REUSEPORT group.
    let threads = proxy::workers::count(config.proxy.worker_threads);
    let mut addrs = vec![config.proxy_v4()];
    addrs.extend(config.proxy_v6());
    let mut per_thread: Vec<Vec<std::net::TcpListener>> =
        (0..threads).map(|_| Vec::new()).collect();
    for addr in &addrs {
        let group = proxy::workers::bind(*addr, threads)
            .with_context(|| format!("binding the proxy on {addr}"))?;
        for (i, l) in group.into_iter().enumerate() {
            per_thread[i].push(l);
        }
    }
    let own_netns = netns_cookie(&per_thread[0][0]).context("reading the proxy's netns cookie")?;

    let (attachment, logger) = kernel::load_or_adopt(&config.paths.pin_dir, tree.root())?;
    let mut maps = KernelMaps::open(&config.paths.pin_dir)?;
    let previous = maps.settings();
    if attachment == Attachment::Adopted && previous.object_hash != kernel::object_hash() {
        warn!(
            "the pinned programs come from another build of the enforcer; they stay in force \
               (run `enforcer daemon --cleanup` in a maintenance window to replace them)"
        );
    }
    maps.set_settings(Settings {
        proxy_ip4: addr::v4_word(config.proxy.listen_v4),
        proxy_ip6: config
            .proxy
            .listen_v6
            .map(addr::v6_words)
            .unwrap_or_default(),
        proxy_port: config.proxy.port,
        agents_level: tree.level(),
        flags: 0,
        daemon_pid: std::process::id(),
        object_hash: if attachment == Attachment::Attached {
            kernel::object_hash()
        } else {
            previous.object_hash
        },
    })?;
    let allow: Vec<AddrKey> = config
        .allowlist()
        .map_err(anyhow::Error::msg)?
        .iter()
        .map(|a| AddrKey {
            ip: addr::to_words(a.ip),
            port: a.port,
            _pad: 0,
        })
        .collect();
    KernelMaps::replace_addrs(&mut maps.allow, &allow)?;
    let resolvers: Vec<AddrKey> = config
        .network
        .dns_resolvers
        .iter()
        .map(|ip| AddrKey {
            ip: addr::to_words(*ip),
            port: enforcer_common::DNS_PORT,
            _pad: 0,
        })
        .collect();
    KernelMaps::replace_addrs(&mut maps.resolvers, &resolvers)?;
    let store = RevocationStore::new(config.revocations_path());
    let applied = revocation::sync_kernel(&tree, &store, &mut maps)?;
    write_pid_file(&config.pid_file());
    info!(
        ?attachment,
        agents_root = %tree.root().display(),
        pin_dir = %config.paths.pin_dir.display(),
        revocations = applied,
        "enforcement in force"
    );

    let admin = Arc::new(control::admin_log::AdminLog::open(&db).context("opening the admin log")?);
    let metrics = observability::start_metrics(&config).await;
    let exporter = observability::start_export(&config, audit.clone(), admin.clone())
        .context("the [export] configuration")?;

    let KernelMaps {
        flows, proxy_legs, ..
    } = maps;
    let legs = LegRegistry::new(proxy_legs);
    legs.clear();
    let ctx = Arc::new(ProxyContext {
        flows: FlowTable::new(flows, own_netns),
        legs,
        identity: Resolver::new(tree),
        connectors,
        credentials,
        agent_tls: AgentTls::new(ca),
        sessions: Default::default(),
        unknown_destinations: config.proxy.unknown_destinations,
        max_body_bytes: config.proxy.max_body_bytes,
        max_response_bytes: config.proxy.max_response_bytes,
        gate: gate.clone(),
        audit: audit.clone(),
        terminated: Default::default(),
        blocked: Default::default(),
        own_addrs: per_thread[0]
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect(),
        connect_timeout: Duration::from_millis(config.proxy.connect_timeout_ms),
        metrics: metrics.clone(),
        exporter: exporter.clone(),
    });
    ctx.sessions.observe({
        let metrics = metrics.clone();
        move |event| match event {
            crate::sessions::SessionEvent::Started => metrics.session_started(),
            crate::sessions::SessionEvent::Ended {
                duration,
                calls,
                unique_tools,
            } => metrics.session_ended(duration, calls, unique_tools),
        }
    });
    proxy::workers::start(per_thread, ctx.clone()).context("starting the proxy threads")?;
    info!(threads, "proxy threads serving");
    tokio::spawn(proxy::reap_idle_sessions(ctx.clone()));
    tokio::spawn(proxy::revocations::follow(
        ctx.clone(),
        config.revocations_path(),
    ));
    let control_path = control::socket_path(&config.paths.runtime_dir);
    // Socket activation (enforcer.socket) hands the admin socket over; else bind it.
    let activated = systemd::activated_admin_socket();
    let socket_is_ours = activated.is_none();
    let control_listener = match activated {
        Some(l) => tokio::net::UnixListener::from_std(l)
            .context("adopting the admin socket from systemd")?,
        None => control::bind(&control_path)
            .with_context(|| format!("binding the admin socket {}", control_path.display()))?,
    };
    let spool = control::admin_log::spool_path(&config.paths.state_dir);
    match admin.merge_spool(&spool) {
        Ok(0) => {}
        Ok(n) => info!(records = n, "break-glass actions merged into the admin log"),
        Err(e) => {
            warn!(error = %e, spool = %spool.display(), "could not merge the break-glass spool")
        }
    }
    let control = Arc::new(control::Control {
        admin,
        tree: AgentsTree::new(config.agents.cgroup_root.as_deref())?,
        revocations: RevocationStore::new(config.revocations_path()),
        pin_dir: config.paths.pin_dir.clone(),
        proxy: ctx.clone(),
        versions,
        gate,
        audit: audit.clone(),
        compile: compile_options(&config),
    });
    tokio::spawn(control::serve(control_listener, control.clone()));
    if let Some(logger) = logger {
        tokio::spawn(forward_kernel_logs(logger));
    }

    systemd::spawn_watchdog();
    let status = |c: &control::Control| {
        format!(
            "enforcing; policy {}; {} connectors",
            c.gate
                .active()
                .map(|a| a.meta.id.clone())
                .unwrap_or_else(|| "none".into()),
            c.proxy.connectors.all().len()
        )
    };
    systemd::ready(&status(&control));
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                systemd::reloading();
                let outcome = reload::reload(&config_path, &config, &control);
                let line = match &outcome {
                    Ok(line) => line.clone(),
                    Err(why) => {
                        warn!(reason = %why, "reload refused; the configuration and policy in force stay");
                        format!("{}; last reload refused: {}", status(&control), why.lines().next().unwrap_or(""))
                    }
                };
                record_reload(&control, &outcome);
                systemd::ready(&line);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    systemd::stopping();
    info!("stopping; kernel enforcement stays in force (agents fail closed until restart)");
    if let Err(e) = audit.flush().await {
        warn!(error = %e, "the audit store could not be flushed at exit");
    }
    // What was not delivered within the grace period goes out after the next start (cursors
    // advance only on acknowledged delivery).
    if let Some(exporter) = &exporter {
        exporter.shutdown().await;
    }
    if let Ok(mut maps) = KernelMaps::open(&config.paths.pin_dir) {
        let mut s = maps.settings();
        s.daemon_pid = 0;
        let _ = maps.set_settings(s);
    }
    let _ = std::fs::remove_file(config.pid_file());
    if socket_is_ours {
        // (systemd's socket stays: it queues CLI calls until the daemon is back.)
        let _ = std::fs::remove_file(&control_path);
    }
    Ok(())
}

pub fn policy_defaults(config: &Config) -> policy::Defaults {
    let effect = |s: &str| {
        if s == "deny" {
            policy::Effect::Deny
        } else {
            policy::Effect::Allow
        }
    };
    policy::Defaults {
        per_method: config
            .policy
            .defaults
            .iter()
            .map(|(m, e)| (m.clone(), effect(e)))
            .collect(),
        fallback: effect(&config.policy.default_other),
    }
}

/// Compile options matching this daemon's detectors (`context.dlp.<name>`).
pub fn compile_options(config: &Config) -> policy::CompileOptions {
    let mut detectors: Vec<String> = policy::CompileOptions::default().detectors;
    for c in &config.dlp.custom {
        detectors.push(c.name.clone());
    }
    detectors.push(crate::dlp::BOUND_SECRET.to_string());
    detectors.sort();
    detectors.dedup();
    policy::CompileOptions { detectors }
}

/// Put a policy version in force: the configured file when it differs from the active
/// version (stored as a new version), else the active version. A file that does not compile
/// keeps the active version in force (and is an error when there is none).
pub(super) fn activate_policy(
    config: &Config,
    versions: &PolicyVersions,
    gate: &Gate,
) -> anyhow::Result<()> {
    let options = compile_options(config);
    let active = versions
        .active()
        .context("reading the active policy version")?;
    if let Some(path) = &config.policy.file {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("reading the policy file {}", path.display()));
        let compiled = source.and_then(|src| {
            policy::Policy::compile_with(&src, &path.display().to_string(), &options)
                .map_err(|e| anyhow::anyhow!("the policy file does not compile:\n{e}"))
        });
        match (compiled, &active) {
            (Ok(p), Some((meta, _))) if meta.hash == p.hash() => {
                info!(version = %meta.id, "policy version in force (unchanged file)");
                gate.activate(meta.clone(), p);
                return Ok(());
            }
            (Ok(p), _) => {
                let meta = versions
                    .store(&p, &format!("config file {}", path.display()))
                    .context("storing the policy version")?;
                info!(version = %meta.id, rules = meta.rules, "policy loaded from the config file as a new version");
                gate.activate(meta, p);
                return Ok(());
            }
            (Err(e), Some(_)) => {
                warn!(error = %e, "the policy file is refused; the active version stays in force");
            }
            (Err(e), None) => return Err(e),
        }
    }
    match active {
        Some((meta, source)) => {
            let p =
                policy::Policy::compile_with(&source, &meta.file_name, &options).map_err(|e| {
                    anyhow::anyhow!(
                        "the stored policy version {} no longer compiles:\n{e}",
                        meta.id
                    )
                })?;
            info!(version = %meta.id, "policy version in force");
            gate.activate(meta, p);
        }
        None => warn!(
            "no policy version loaded: the configured defaults decide every call \
             (tools/call denied unless policy.defaults says otherwise)"
        ),
    }
    Ok(())
}

/// The proxy must not live in the agents' subtree: its own connects would be redirected.
fn refuse_if_inside(root: &Path) -> anyhow::Result<()> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own_rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .trim();
    let mount = crate::cgroups::cgroup2_mount()?;
    let own_abs = mount.join(own_rel.trim_start_matches('/'));
    if own_abs.starts_with(root) {
        anyhow::bail!(
            "the daemon runs inside the agents root {} (its cgroup is {}): start it elsewhere",
            root.display(),
            own_abs.display()
        );
    }
    Ok(())
}

fn write_pid_file(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
        warn!(path = %path.display(), error = %e, "cannot write pid file");
    }
}

async fn forward_kernel_logs(logger: kernel::KernelLogger) {
    // SAFETY: the logger owns its ring buffer fd for its whole life and never swaps it.
    let Ok(mut fd) =
        (unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) })
    else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// A reload is an admin action: who (the signal's sender is not known: the daemon's own
/// uid), what, and whether it was refused and why.
fn record_reload(control: &control::Control, outcome: &Result<String, String>) {
    let uid = nix::unistd::getuid().as_raw();
    let record = control::admin_log::AdminRecord {
        time: control::admin_log::now(),
        who: control::admin_log::Who {
            uid,
            user: crate::identity::user_name(uid),
            sudo_user: None,
        },
        action: "reload".into(),
        target: "configuration".into(),
        reason: "SIGHUP (systemctl reload)".into(),
        result: if outcome.is_ok() { "ok" } else { "refused" }.into(),
        details: match outcome {
            Ok(line) => serde_json::json!({ "status": line }),
            Err(why) => serde_json::json!({ "refused": why }),
        },
        mode: "daemon".into(),
        ..Default::default()
    };
    if let Err(e) = control.admin.append(record) {
        warn!(error = %e, "could not record the reload in the admin log");
    }
}
