//! A real kube-apiserver + etcd for tests, the way controller-runtime's envtest does it.
//!
//! The binaries are built from Go modules by `tests/control-plane/build.sh` and cached
//! outside the repo; [`ControlPlane::start`] runs that script (a warm cache answers in
//! milliseconds, a cold one builds for 10–20 minutes and prints its progress), so a plain
//! `cargo test` works on a fresh machine. A failed build is an error, never a skip.
//!
//! Each control plane gets a fresh CA, a serving certificate for 127.0.0.1, an admin client
//! certificate (`O=system:masters`), a ServiceAccount signing key (TokenRequest and
//! TokenReview work), RBAC authorization and free loopback ports. There is no
//! kube-controller-manager: namespaces get no `default` ServiceAccount, deleted namespaces
//! stay `Terminating`, and the garbage collector does not run.
//!
//! Use [`ControlPlane::shared`] to start one per test binary (each test in its own
//! namespace, see [`ControlPlane::create_namespace`]), or [`ControlPlane::start`] for one
//! owned by a test and stopped when dropped.
//!
//! # Why the processes cannot outlive the test
//!
//! A `static` is never dropped, so the shared instance cannot rely on `Drop`, and a test
//! binary killed by a signal runs no code at all. etcd and kube-apiserver are therefore
//! started through `setpriv --pdeathsig KILL` (util-linux), which sets the kernel's
//! parent-death signal and then execs them: the kernel kills them as soon as the thread
//! that spawned them exits, however the test process ends (normal exit, panic, `SIGKILL`).
//! No `unsafe` `pre_exec` is needed (the workspace forbids unsafe code). Because the
//! signal is tied to the spawning *thread*, not the process, the children are spawned from
//! a dedicated supervisor thread that lives exactly as long as the [`ControlPlane`] (for
//! the shared one: until the process exits) — not from a tokio worker thread, which a
//! `#[tokio::test]` runtime tears down at the end of each test. Dropping a
//! [`ControlPlane`] also kills and reaps both processes and removes the temporary
//! directory. The temporary directory of one that is never dropped (the shared one, or
//! any in a killed process) is removed by a `flock` process waiting on a lock that the
//! kernel releases when the test process dies, and swept at the next start as a fallback.

use std::{
    fmt,
    fs::{self, File},
    io::{Read as _, Seek as _, SeekFrom},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Namespace, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    config::AuthInfo,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The script that builds (or finds in the cache) kube-apiserver, etcd, kubectl and helm.
pub const BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/control-plane/build.sh");

/// The repository root (for `crds/`, `examples/`, `charts/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Field manager used by the harness's server-side applies.
pub const FIELD_MANAGER: &str = "tidepool-tests";

const TEMP_PREFIX: &str = "tidepool-cp-";
const OWNER_FILE: &str = "owner.pid";
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(120);
const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);

/// The cached binaries of one control-plane version.
#[derive(Clone, Debug)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Runs `build.sh`: returns at once from a warm cache, otherwise builds (minutes) with
    /// its progress on stderr. Blocking; call it from `spawn_blocking` in async code.
    pub fn ensure() -> Result<Self> {
        let output = Command::new("bash")
            .arg(BUILD_SCRIPT)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not run {BUILD_SCRIPT}"))?;
        if !output.status.success() {
            bail!(
                "{BUILD_SCRIPT} failed ({}): kube-apiserver/etcd/kubectl/helm could not be built; \
                 its output above says why. The control-plane tests cannot run without them.",
                output.status
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dir = stdout
            .lines()
            .last()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| anyhow!("{BUILD_SCRIPT} printed no bin directory"))?;
        let binaries = Self {
            dir: PathBuf::from(dir),
        };
        for bin in ["kube-apiserver", "etcd", "kubectl", "helm"] {
            let path = binaries.dir.join(bin);
            if !path.is_file() {
                bail!("{BUILD_SCRIPT} succeeded but {} is missing", path.display());
            }
        }
        Ok(binaries)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    pub fn kubectl(&self) -> PathBuf {
        self.dir.join("kubectl")
    }
    pub fn helm(&self) -> PathBuf {
        self.dir.join("helm")
    }
}

/// A running etcd + kube-apiserver. Stops both and removes its files when dropped.
pub struct ControlPlane {
    // Declared first so it is stopped before `dir` is removed (see also `Drop`).
    supervisor: Supervisor,
    binaries: Binaries,
    dir: tempfile::TempDir,
    server: String,
    admin_config: Config,
    kubeconfig: PathBuf,
    started_in: Duration,
    // Last: released after `dir` is gone (see `dir_owner_lock`).
    _owner: File,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Builds the binaries if needed, then starts etcd and kube-apiserver and waits until
    /// the API server is ready and the `default` namespace exists.
    pub async fn start() -> Result<Self> {
        let binaries = tokio::task::spawn_blocking(Binaries::ensure)
            .await
            .context("the build task panicked")??;
        sweep_stale_dirs();
        // A port found free can be taken by someone else before etcd or kube-apiserver
        // binds it; that race is the only failure worth another attempt.
        let mut attempt = 1;
        loop {
            match Self::launch(binaries.clone()).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn launch(binaries: Binaries) -> Result<Self> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir()
            .context("creating the control plane's temporary directory")?;
        let owner = dir_owner_lock(dir.path())?;
        let pki = Pki::generate(dir.path())?;

        let supervisor = Supervisor::new()?;
        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let secure_port = free_port()?;
        let server = format!("https://127.0.0.1:{secure_port}");

        let etcd_data = dir.path().join("etcd-data");
        let etcd_log = dir.path().join("etcd.log");
        supervisor.spawn(
            "etcd",
            &binaries.etcd(),
            vec![
                "--name=tidepool".into(),
                format!("--data-dir={}", etcd_data.display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=tidepool=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &etcd_log,
        )?;
        wait_for_tcp(&supervisor, etcd_client, &etcd_log).await?;

        let apiserver_log = dir.path().join("kube-apiserver.log");
        let cert_dir = dir.path().join("apiserver-certs");
        supervisor.spawn(
            "kube-apiserver",
            &binaries.kube_apiserver(),
            vec![
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                format!("--secure-port={secure_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--cert-dir={}", cert_dir.display()),
                format!("--tls-cert-file={}", pki.serving_cert.display()),
                format!("--tls-private-key-file={}", pki.serving_key.display()),
                format!("--client-ca-file={}", pki.ca_cert.display()),
                "--authorization-mode=RBAC".into(),
                "--anonymous-auth=false".into(),
                format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
                format!(
                    "--service-account-key-file={}",
                    pki.service_account_pub.display()
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    pki.service_account_key.display()
                ),
                // No kube-controller-manager creates `default` ServiceAccounts, so the
                // admission plugin that requires them would reject every Pod.
                "--disable-admission-plugins=ServiceAccount".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                // Nothing would maintain the `kubernetes` Service's endpoints.
                "--endpoint-reconciler-type=none".into(),
                "--allow-privileged=true".into(),
            ],
            &apiserver_log,
        )?;

        let kubeconfig = dir.path().join("kubeconfig");
        fs::write(
            &kubeconfig,
            serde_json::to_string_pretty(&admin_kubeconfig(&server, &pki))?,
        )?;
        let mut admin_config = Config::new(server.parse().context("the server URL")?);
        admin_config.root_cert = Some(vec![pki.ca_der.clone()]);
        admin_config.auth_info = AuthInfo {
            client_certificate: Some(pki.admin_cert.display().to_string()),
            client_key: Some(pki.admin_key.display().to_string()),
            ..AuthInfo::default()
        };
        let admin = Client::try_from(admin_config.clone()).context("the admin client")?;
        wait_for_apiserver(&supervisor, &admin, &apiserver_log, &etcd_log).await?;

        Ok(Self {
            supervisor,
            binaries,
            dir,
            server,
            admin_config,
            kubeconfig,
            started_in: started.elapsed(),
            _owner: owner,
        })
    }

    /// One control plane for the whole test binary, started by the first caller (with the
    /// CRDs in `crds/` installed). Its processes die with the test process (see the module
    /// documentation). A start failure is remembered and reported to every caller.
    pub async fn shared() -> &'static ControlPlane {
        static SHARED: tokio::sync::OnceCell<std::result::Result<ControlPlane, String>> =
            tokio::sync::OnceCell::const_new();
        let result = SHARED
            .get_or_init(|| async {
                let cp = ControlPlane::start().await.map_err(|e| format!("{e:#}"))?;
                eprintln!(
                    "control plane {} started in {:.2?} (excluding the build check)",
                    cp.server, cp.started_in
                );
                cp.install_crds(repo_root().join("crds"))
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                Ok(cp)
            })
            .await;
        match result {
            Ok(cp) => cp,
            Err(e) => panic!("the shared test control plane could not start: {e}"),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// How long etcd + kube-apiserver took to become ready (after the build check).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The control plane's temporary directory (certificates, logs, etcd data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An admin kubeconfig (client certificate in `system:masters`) for kubectl and helm.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client authenticated as a cluster admin. Needs a tokio runtime; make one per test
    /// (a `kube::Client` must not outlive the runtime it was made in).
    pub fn admin_client(&self) -> Client {
        #[allow(clippy::expect_used)] // the config was proven to work by `start`
        Client::try_from(self.admin_config.clone()).expect("the admin client config is valid")
    }

    /// A token of ServiceAccount `ns/name` for `audience` (TokenRequest, not bound to a Pod).
    pub async fn service_account_token(
        &self,
        ns: &str,
        name: &str,
        audience: &str,
        lifetime_secs: i64,
    ) -> Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin_client(), ns);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_owned()],
                expiration_seconds: Some(lifetime_secs),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        Ok(accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for ServiceAccount {ns}/{name}"))?
            .status
            .ok_or_else(|| anyhow!("TokenRequest for {ns}/{name} returned no status"))?
            .token)
    }

    /// A client that authenticates with a bound token of ServiceAccount `ns/name` (created
    /// if missing), obtained with TokenRequest: RBAC sees exactly what a Pod running as
    /// that ServiceAccount would.
    pub async fn client_for_service_account(&self, ns: &str, name: &str) -> Result<Client> {
        let admin = self.admin_client();
        let accounts: Api<ServiceAccount> = Api::namespaced(admin, ns);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).context(format!("creating ServiceAccount {ns}/{name}")),
        }
        let token = self
            .service_account_token(ns, name, SERVICE_ACCOUNT_ISSUER, 3600)
            .await?;
        let mut config = self.admin_config.clone();
        config.default_namespace = ns.to_owned();
        // AuthInfo's token is a `secrecy` string: build it the way a kubeconfig would.
        config.auth_info = serde_json::from_value(serde_json::json!({ "token": token }))
            .context("building the token AuthInfo")?;
        Client::try_from(config).context("the ServiceAccount client")
    }

    /// Creates a namespace `<prefix>-<n>` unique in this control plane and returns its name.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        let namespaces: Api<Namespace> = Api::all(self.admin_client());
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = namespaces
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating a namespace {prefix}-*"))?;
        created
            .metadata
            .name
            .ok_or_else(|| anyhow!("the created namespace has no name"))
    }

    /// Applies every `*.yaml` in `dir` (each holding CustomResourceDefinitions) with
    /// server-side apply and waits until each CRD is `Established`.
    pub async fn install_crds(&self, dir: impl AsRef<Path>) -> Result<Vec<String>> {
        let dir = dir.as_ref();
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no CRD files (*.yaml) in {}", dir.display());
        }
        let crds: Api<CustomResourceDefinition> = Api::all(self.admin_client());
        let mut names = Vec::new();
        for file in &files {
            let text = fs::read_to_string(file)?;
            let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
                .with_context(|| format!("parsing {}", file.display()))?;
            for doc in docs.into_iter().filter(|d| !d.is_null()) {
                let crd: CustomResourceDefinition = serde_json::from_value(doc)
                    .with_context(|| format!("{} is not a CRD", file.display()))?;
                let name = crd
                    .metadata
                    .name
                    .clone()
                    .ok_or_else(|| anyhow!("a CRD in {} has no name", file.display()))?;
                crds.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("applying CRD {name} from {}", file.display()))?;
                names.push(name);
            }
        }
        for name in &names {
            wait_established(&crds, name).await?;
        }
        Ok(names)
    }

    /// `kubectl --kubeconfig <admin>` (the cached kubectl, not whatever is on PATH).
    pub fn kubectl(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.binaries.kubectl());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .kill_on_drop(true);
        cmd
    }

    /// `helm --kubeconfig <admin>` with helm's state kept in the temporary directory.
    pub fn helm(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.binaries.helm());
        let home = self.dir.path().join("helm");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .kill_on_drop(true);
        cmd
    }

    /// The last lines of the kube-apiserver and etcd logs, for failure messages.
    pub fn log_tails(&self) -> String {
        format!(
            "--- kube-apiserver.log ---\n{}\n--- etcd.log ---\n{}",
            tail(&self.dir.path().join("kube-apiserver.log")),
            tail(&self.dir.path().join("etcd.log"))
        )
    }

    /// Stops both processes now; dropping does the same.
    pub fn stop(&mut self) {
        self.supervisor.stop();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.supervisor.stop();
    }
}

// --- readiness -----------------------------------------------------------------------

async fn wait_for_tcp(supervisor: &Supervisor, port: u16, log: &Path) -> Result<()> {
    let deadline = Instant::now() + ETCD_READY_TIMEOUT;
    loop {
        if let Some(exit) = supervisor.exited()? {
            bail!(
                "{exit} before listening\n--- {} ---\n{}",
                log.display(),
                tail(log)
            );
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "etcd did not listen on 127.0.0.1:{port} within {ETCD_READY_TIMEOUT:?}\n--- {} ---\n{}",
                log.display(),
                tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_apiserver(
    supervisor: &Supervisor,
    admin: &Client,
    apiserver_log: &Path,
    etcd_log: &Path,
) -> Result<()> {
    let deadline = Instant::now() + APISERVER_READY_TIMEOUT;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    loop {
        if let Some(exit) = supervisor.exited()? {
            bail!(
                "{exit} before becoming ready\n--- kube-apiserver.log ---\n{}\n--- etcd.log ---\n{}",
                tail(apiserver_log),
                tail(etcd_log)
            );
        }
        let ready = match http::Request::get("/readyz").body(Vec::new()) {
            Ok(req) => admin.request_text(req).await,
            Err(e) => bail!("building the /readyz request: {e}"),
        };
        let last = match ready {
            // /readyz covers the post-start hooks (RBAC bootstrap roles, priority and
            // fairness); the `default` namespace is made by the bootstrap controller.
            Ok(_) => match namespaces.get_opt("default").await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => "namespace default does not exist yet".to_owned(),
                Err(e) => format!("GET namespace default: {e}"),
            },
            Err(e) => format!("GET /readyz: {e}"),
        };
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver was not ready within {APISERVER_READY_TIMEOUT:?} (last: {last})\n\
                 --- kube-apiserver.log ---\n{}\n--- etcd.log ---\n{}",
                tail(apiserver_log),
                tail(etcd_log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) -> Result<()> {
    let deadline = Instant::now() + CRD_ESTABLISHED_TIMEOUT;
    loop {
        let crd = crds.get(name).await?;
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "CRD {name} not Established within {CRD_ESTABLISHED_TIMEOUT:?}: {:?}",
                crd.status
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- processes -----------------------------------------------------------------------

enum Request {
    Spawn {
        name: &'static str,
        program: PathBuf,
        args: Vec<String>,
        log: PathBuf,
        reply: mpsc::Sender<std::io::Result<()>>,
    },
    Exited {
        reply: mpsc::Sender<Option<String>>,
    },
}

/// Owns the thread that spawns, watches and kills the child processes (see the module
/// documentation for why it must be a dedicated thread).
struct Supervisor {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Supervisor {
    fn new() -> Result<Self> {
        if !Path::new(SETPRIV).is_file() {
            bail!(
                "{SETPRIV} (util-linux) is missing; it ties the control plane's processes to \
                 the test process so none is left running"
            );
        }
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("control-plane-supervisor".into())
            .spawn(move || supervise(&rx))
            .context("starting the supervisor thread")?;
        Ok(Self {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, request: Request) -> Result<()> {
        self.requests
            .as_ref()
            .ok_or_else(|| anyhow!("the control plane was stopped"))?
            .send(request)
            .map_err(|_| anyhow!("the supervisor thread is gone"))
    }

    fn spawn(
        &self,
        name: &'static str,
        program: &Path,
        args: Vec<String>,
        log: &Path,
    ) -> Result<()> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Spawn {
            name,
            program: program.to_path_buf(),
            args,
            log: log.to_path_buf(),
            reply,
        })?;
        answer
            .recv()
            .map_err(|_| anyhow!("the supervisor thread is gone"))?
            .with_context(|| format!("starting {name} ({})", program.display()))
    }

    /// `Some("etcd exited with ...")` once any child has exited.
    fn exited(&self) -> Result<Option<String>> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Exited { reply })?;
        answer
            .recv()
            .map_err(|_| anyhow!("the supervisor thread is gone"))
    }

    fn stop(&mut self) {
        // Closing the channel tells the thread to kill its children and exit.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const SETPRIV: &str = "/usr/bin/setpriv";

fn supervise(requests: &mpsc::Receiver<Request>) {
    let mut children: Vec<(&'static str, Child)> = Vec::new();
    while let Ok(request) = requests.recv() {
        match request {
            Request::Spawn {
                name,
                program,
                args,
                log,
                reply,
            } => {
                let spawned = File::create(&log)
                    .and_then(|out| Ok((out.try_clone()?, out)))
                    .and_then(|(out, err)| {
                        Command::new(SETPRIV)
                            .args(["--pdeathsig", "KILL", "--"])
                            .arg(&program)
                            .args(&args)
                            .stdin(Stdio::null())
                            .stdout(out)
                            .stderr(err)
                            .spawn()
                    });
                let _ = reply.send(spawned.map(|child| children.push((name, child))));
            }
            Request::Exited { reply } => {
                let exited = children.iter_mut().find_map(|(name, child)| {
                    child
                        .try_wait()
                        .ok()
                        .flatten()
                        .map(|status: ExitStatus| format!("{name} exited with {status}"))
                });
                let _ = reply.send(exited);
            }
        }
    }
    // kube-apiserver first, so it does not spend its last moments retrying etcd.
    for (_, child) in children.iter_mut().rev() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn free_port() -> Result<u16> {
    // The port is free when we look; the tiny window before the child binds it is the
    // usual trade-off (envtest does the same).
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("finding a free loopback port")?
        .local_addr()?
        .port())
}

/// Records our pid in the directory and holds an exclusive lock on that file for as long as
/// the control plane lives. A `flock <file> rm -rf <dir>` started in its own process group
/// waits for the lock, so the directory (etcd preallocates over 100 MB) is removed even when
/// it belongs to the never-dropped shared instance or the test process is killed: the
/// kernel releases the lock when the process dies. [`sweep_stale_dirs`] is the fallback.
fn dir_owner_lock(dir: &Path) -> Result<File> {
    use std::{io::Write as _, os::unix::process::CommandExt as _};
    let path = dir.join(OWNER_FILE);
    let mut owner = File::create(&path).context("creating the owner file")?;
    write!(owner, "{}", std::process::id())?;
    owner.lock().context("locking the owner file")?;
    // Best effort: without flock(1) the sweep at the next start does the job.
    let _ = Command::new("flock")
        .arg(&path)
        .args(["rm", "-rf", "--"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    Ok(owner)
}

/// Removes temporary directories of control planes whose test process is gone (a static
/// shared instance is never dropped, and a killed process cleans nothing up).
fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        if !is_ours {
            continue;
        }
        let Ok(owner) = fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        let alive = Path::new("/proc").join(owner.trim()).exists();
        if !alive {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// The last ~60 lines of a log file.
fn tail(path: &Path) -> String {
    const MAX: u64 = 8 * 1024;
    let Ok(mut file) = File::open(path) else {
        return format!("({} is missing)", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

// --- certificates --------------------------------------------------------------------

/// Paths of the PEM files of one control plane.
struct Pki {
    ca_der: Vec<u8>,
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    service_account_key: PathBuf,
    service_account_pub: PathBuf,
}

impl Pki {
    fn generate(dir: &Path) -> Result<Self> {
        let pki = dir.join("pki");
        fs::create_dir_all(&pki)?;

        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "tidepool-test-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        // The names a client may use: loopback, and the in-cluster `kubernetes` Service
        // (first address of --service-cluster-ip-range).
        let mut serving = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
        serving
            .subject_alt_names
            .push(SanType::IpAddress(Ipv4Addr::new(10, 0, 0, 1).into()));
        // Agents run inside the test VM, whose qemu user-mode network shows the host's
        // loopback at the gateway address (`ZfsVm::HOST_FROM_GUEST`).
        serving
            .subject_alt_names
            .push(SanType::IpAddress(Ipv4Addr::new(10, 0, 2, 2).into()));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "tidepool-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        admin.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let admin_key = KeyPair::generate()?;
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let service_account_key = KeyPair::generate()?;

        let paths = Self {
            ca_der: ca_cert.der().to_vec(),
            ca_cert: pki.join("ca.crt"),
            serving_cert: pki.join("apiserver.crt"),
            serving_key: pki.join("apiserver.key"),
            admin_cert: pki.join("admin.crt"),
            admin_key: pki.join("admin.key"),
            service_account_key: pki.join("service-account.key"),
            service_account_pub: pki.join("service-account.pub"),
        };
        fs::write(&paths.ca_cert, ca_cert.pem())?;
        fs::write(&paths.serving_cert, serving_cert.pem())?;
        fs::write(&paths.serving_key, serving_key.serialize_pem())?;
        fs::write(&paths.admin_cert, admin_cert.pem())?;
        fs::write(&paths.admin_key, admin_key.serialize_pem())?;
        fs::write(
            &paths.service_account_key,
            service_account_key.serialize_pem(),
        )?;
        fs::write(
            &paths.service_account_pub,
            service_account_key.public_key_pem(),
        )?;
        Ok(paths)
    }
}

/// A kubeconfig (JSON is valid YAML) that refers to the PEM files by absolute path.
fn admin_kubeconfig(server: &str, pki: &Pki) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "tidepool-test",
            "cluster": {
                "server": server,
                "certificate-authority": pki.ca_cert,
            },
        }],
        "users": [{
            "name": "tidepool-admin",
            "user": {
                "client-certificate": pki.admin_cert,
                "client-key": pki.admin_key,
            },
        }],
        "contexts": [{
            "name": "tidepool-test",
            "context": { "cluster": "tidepool-test", "user": "tidepool-admin", "namespace": "default" },
        }],
        "current-context": "tidepool-test",
    })
}
