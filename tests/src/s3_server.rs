//! A real S3-compatible server for tests: versitygw with its posix backend.
//!
//! versitygw is built from its Go module by `tests/object-store/build.sh` (which
//! `scripts/test.sh` runs) into `${TIDEPOOL_CACHE:-~/.cache/tidepool}/versitygw/`. This
//! harness only starts it; without the binary it fails saying to run the script.
//!
//! ```text
//! let server = ObjectStoreServer::start().await?;   // 127.0.0.1:<free port>, one bucket
//! let store = server.s3().connect()?;               // Arc<dyn ObjectStore> (tidepool-objstore)
//! server.bucket_dir();                              // the objects, as files
//! ```
//!
//! Each server has its own temporary root (objects are files under `<root>/<bucket>/`) and
//! root access keys. It is killed when dropped, and cannot outlive the thread that started
//! it (`setpriv --pdeathsig KILL`): start it from the test, not from a blocking-pool task.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tidepool_objstore::S3Config;

/// A running versitygw; killed on drop.
#[derive(Debug)]
pub struct ObjectStoreServer {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
    log: PathBuf,
}

impl ObjectStoreServer {
    pub const BUCKET: &'static str = "tidepool-test";
    pub const ACCESS_KEY: &'static str = "tidepool-test-access";
    pub const SECRET_KEY: &'static str = "tidepool-test-secret-key";
    pub const REGION: &'static str = "us-east-1";

    /// Starts versitygw on a free loopback port with bucket [`Self::BUCKET`]; returns once
    /// it answers HTTP.
    pub async fn start() -> Result<Self> {
        let binary = versitygw_binary()?;
        let root = tempfile::Builder::new()
            .prefix("tidepool-versitygw-")
            .tempdir()
            .context("creating the versitygw root")?;
        let data = root.path().join("data");
        // The posix backend serves each top-level directory as a bucket.
        std::fs::create_dir_all(data.join(Self::BUCKET)).context("creating the bucket")?;
        let log = root.path().join("versitygw.log");
        let port = free_port()?;
        let out = std::fs::File::create(&log).context("creating the versitygw log")?;
        let child = Command::new("/usr/bin/setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&binary)
            .args(["--port", &format!("127.0.0.1:{port}"), "--quiet"])
            .args(["--region", Self::REGION, "posix"])
            .arg(&data)
            .env("ROOT_ACCESS_KEY", Self::ACCESS_KEY)
            .env("ROOT_SECRET_KEY", Self::SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = ObjectStoreServer {
            child,
            port,
            root,
            log,
        };
        server.wait_ready(Duration::from_secs(30)).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "versitygw exited ({status}) before answering\n{}",
                    self.log_tail()
                );
            }
            // Any HTTP answer (an unsigned request is refused) means it serves.
            if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let request = format!(
                    "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let mut head = [0u8; 12];
                if stream.write_all(request.as_bytes()).await.is_ok()
                    && stream.read_exact(&mut head).await.is_ok()
                    && head.starts_with(b"HTTP/1.")
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "versitygw did not answer within {timeout:?}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://10.0.2.2:<port>`: the endpoint as the guest's agents reach it (QEMU's user
    /// network maps the host's loopback there).
    pub fn endpoint_from_guest(&self) -> String {
        format!(
            "http://{}:{}",
            crate::zfs_vm::ZfsVm::HOST_FROM_GUEST,
            self.port
        )
    }

    /// Creates Secret `name` in `ns` with the bucket's keys, as an `objectStore` target's
    /// `secretRef` names it.
    pub async fn create_secret(&self, client: kube::Client, ns: &str, name: &str) -> Result<()> {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        let mut s = Secret::default();
        s.metadata.name = Some(name.to_owned());
        s.data = Some(
            [
                ("accessKeyId", Self::ACCESS_KEY),
                ("secretAccessKey", Self::SECRET_KEY),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect(),
        );
        kube::Api::<Secret>::namespaced(client, ns)
            .create(&kube::api::PostParams::default(), &s)
            .await
            .with_context(|| format!("creating Secret {ns}/{name}"))?;
        Ok(())
    }

    /// A policy's `target` for this bucket: `objectStore` with the guest's endpoint,
    /// `prefix`, Secret `secret`, and the fields of `extra`.
    pub fn target(
        &self,
        prefix: &str,
        secret: &str,
        extra: serde_json::Value,
    ) -> serde_json::Value {
        let mut t = serde_json::json!({"endpoint": self.endpoint_from_guest(),
            "bucket": Self::BUCKET, "prefix": prefix, "secretRef": {"name": secret}});
        if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
            t.extend(extra.clone());
        }
        serde_json::json!({ "objectStore": t })
    }

    /// How tidepool-objstore reaches the bucket.
    pub fn s3(&self) -> S3Config {
        S3Config {
            endpoint: self.endpoint(),
            bucket: Self::BUCKET.to_owned(),
            region: Self::REGION.to_owned(),
            access_key_id: Self::ACCESS_KEY.to_owned(),
            secret_access_key: Self::SECRET_KEY.to_owned(),
            allow_http: true,
        }
    }

    /// The bucket's objects as files (`<key>` is the path below it).
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.path().join("data").join(Self::BUCKET)
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- last lines of {} ---\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for ObjectStoreServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cached versitygw, or an error saying how to build it.
fn versitygw_binary() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("object-store/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--bin-dir")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} --bin-dir", script.display()))?;
    if !out.status.success() {
        bail!("{} --bin-dir failed ({})", script.display(), out.status);
    }
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("versitygw");
    if !bin.is_file() {
        bail!(
            "versitygw is not built ({} is missing): run {} (scripts/test.sh does)",
            bin.display(),
            script.display()
        );
    }
    Ok(bin)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("finding a free loopback port")?
        .local_addr()?
        .port())
}
