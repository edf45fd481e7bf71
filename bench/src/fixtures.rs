//! What every row runs on: a private wrun state root with the samples compiled and packed,
//! one busybox OCI bundle shared by wrun, runc and crun, and the crun workaround below.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Fixtures {
    pub dir: tempfile::TempDir,
    pub wrun: PathBuf,
    pub hello: PathBuf,
    pub idle: PathBuf,
    pub bundle: PathBuf,
}

impl Fixtures {
    pub fn prepare() -> Result<Fixtures> {
        let dir = tempfile::Builder::new().prefix("wrun-bench-").tempdir()?;
        let samples = crate::repo().join("samples/build");
        let fixtures = Fixtures {
            wrun: crate::sibling_binary("wrun")?,
            hello: samples.join("hello.wasm"),
            idle: samples.join("idle.wasm"),
            bundle: dir.path().join("busybox-bundle"),
            dir,
        };
        for sample in [&fixtures.hello, &fixtures.idle] {
            if !sample.exists() {
                bail!(
                    "{} is missing: run scripts/build-samples.sh",
                    sample.display()
                );
            }
        }
        fixtures.wrun_ok(&["compile", fixtures.hello.to_str().unwrap()])?;
        fixtures.wrun_ok(&[
            "image",
            "pack",
            fixtures.hello.to_str().unwrap(),
            "-t",
            "hello:v1",
        ])?;
        fixtures.wrun_ok(&[
            "image",
            "pack",
            fixtures.idle.to_str().unwrap(),
            "-t",
            "idle:v1",
        ])?;
        fixtures.wrun_ok(&[
            "image",
            "import",
            samples.join("busybox-oci.tar").to_str().unwrap(),
        ])?;
        make_busybox_bundle(&fixtures.bundle, &["true"])?;
        Ok(fixtures)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("wrun")
    }

    /// `wrun --root ROOT ARGS...` as a command.
    pub fn wrun_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.wrun);
        cmd.arg("--root").arg(self.root()).args(args);
        cmd
    }

    pub fn wrun_ok(&self, args: &[&str]) -> Result<String> {
        let out = self
            .wrun_cmd(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("failed to run {}", self.wrun.display()))?;
        if !out.status.success() {
            bail!(
                "wrun {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A loopback port free now, for a server a row starts.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `requests` spread over `concurrency` client threads, each running `client(port, its
/// share)`: every request's latency (ms) and the requests per second of the whole load.
pub fn load(
    port: u16,
    requests: usize,
    concurrency: usize,
    client: fn(u16, usize) -> Result<Vec<f64>>,
) -> Result<(Vec<f64>, f64)> {
    let per_client = requests.div_ceil(concurrency);
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| std::thread::spawn(move || client(port, per_client)))
        .collect();
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(
            c.join()
                .map_err(|_| anyhow::anyhow!("a client panicked"))??,
        );
    }
    let per_second = latencies.len() as f64 / started.elapsed().as_secs_f64();
    Ok((latencies, per_second))
}

/// A busybox root (the static busybox of busybox-static) and `runc spec`'s config, made
/// non-interactive, with `args` as the process.
pub fn make_busybox_bundle(bundle: &Path, args: &[&str]) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("failed to copy /bin/busybox (busybox-static)")?;
    for applet in ["sh", "true", "sleep", "echo", "cat"] {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    let _ = std::fs::remove_file(bundle.join("config.json"));
    let status = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .status()
        .context("runc is not installed (scripts/setup.sh installs it)")?;
    if !status.success() {
        bail!("runc spec failed in {}", bundle.display());
    }
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
    spec["root"]["readonly"] = true.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

/// crun 1.8 refuses a hybrid host whose cgroup2 mount lists controllers; in the bench's own
/// mount namespace an empty file hides that list. Every row runs in the same namespace.
pub fn enter_private_mount_namespace() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    wrun::sandbox::rootfs::make_mounts_private().context("make / private")?;
    let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let listed = std::fs::read_to_string(controllers).is_ok_and(|t| !t.trim().is_empty());
    if listed && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let empty = std::env::temp_dir().join(format!("wrun-bench-empty-{}", std::process::id()));
        std::fs::write(&empty, "")?;
        mount(
            Some(&empty),
            controllers,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context("hide the cgroup2 controller list from crun")?;
        // The mount holds the file; its name is not needed any more.
        std::fs::remove_file(&empty)?;
    }
    Ok(())
}
