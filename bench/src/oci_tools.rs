//! A private dockerd and a private Podman for the `startup` rows through Docker and Podman.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's Docker client, named explicitly: another `docker` may come first on PATH.
const DOCKER: &str = "/usr/bin/docker";
/// The cgroup parents of the tools' containers, removed at teardown.
const DOCKER_CGROUP: &str = "wrun-bench-docker";
const PODMAN_CGROUP: &str = "wrun-bench-podman";
/// Image names, in both tools.
pub const BUSYBOX: &str = "busybox";
pub const HELLO: &str = "hello-wasm";

/// The two images as tars for `import`: a busybox root, and the hello module as `/app.wasm`.
pub struct ImageTars {
    busybox: PathBuf,
    hello: PathBuf,
}

impl ImageTars {
    /// Tars of `rootfs` (the bundle rows' busybox root) and of a tree holding `module` as
    /// `/app.wasm`, made in `dir`.
    pub fn make(dir: &Path, rootfs: &Path, module: &Path) -> Result<ImageTars> {
        let tree = dir.join("hello-image");
        std::fs::create_dir_all(&tree)?;
        std::fs::copy(module, tree.join("app.wasm"))
            .with_context(|| format!("failed to copy {}", module.display()))?;
        let tars = ImageTars {
            busybox: dir.join("busybox-rootfs.tar"),
            hello: dir.join("hello-image.tar"),
        };
        tar(rootfs, &tars.busybox)?;
        tar(&tree, &tars.hello)?;
        Ok(tars)
    }
}

/// A dockerd of the bench's own: data, exec root, socket, pid file and containerd namespaces
/// under one directory, no iptables, masquerading or bridge, wrun added as the runtime `wrun`
/// (runc is its default). Stopped, with what it started, when dropped.
pub struct Dockerd {
    dir: PathBuf,
    daemon: Child,
}

impl Dockerd {
    /// Starts it in `dir` and imports the images.
    pub fn start(dir: &Path, wrun: &Path, tars: &ImageTars) -> Result<Dockerd> {
        if !Path::new(DOCKER).exists() {
            bail!("docker client {DOCKER} is not installed (apt-get install docker.io)");
        }
        std::fs::create_dir_all(dir)?;
        let config = serde_json::json!({"runtimes": {"wrun": {"path": absolute(wrun)?}}});
        std::fs::write(dir.join("daemon.json"), config.to_string())?;
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        let daemon = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .args(["--containerd-namespace", "wrun-bench"])
            .args(["--containerd-plugins-namespace", "wrun-bench-plugins"])
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("dockerd is not installed (apt-get install docker.io)")?;
        let mut dockerd = Dockerd {
            dir: dir.to_path_buf(),
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd.docker(&["version"]).status()?.success() {
            if let Some(status) = dockerd.daemon.try_wait()? {
                bail!("dockerd exited ({status}): {}", dockerd.last_log_line());
            }
            if Instant::now() > deadline {
                bail!(
                    "dockerd did not answer within 60 s: {}",
                    dockerd.last_log_line()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        checked(
            dockerd.docker(&["import", path(&tars.busybox), BUSYBOX]),
            "docker import",
            &tars.busybox,
        )?;
        checked(
            dockerd.docker(&[
                "import",
                "--change",
                "ENTRYPOINT [\"/app.wasm\"]",
                path(&tars.hello),
                HELLO,
            ]),
            "docker import",
            &tars.hello,
        )?;
        Ok(dockerd)
    }

    /// `docker ARGS...` against this daemon, with no input or output.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// `docker run --rm --runtime RUNTIME --network none ARGS...` (image and command).
    pub fn run(&self, runtime: &str, args: &[&str]) -> Command {
        let parent = format!("/{DOCKER_CGROUP}");
        let run = [
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--network",
            "none",
            "--cgroup-parent",
            &parent,
        ];
        self.docker(&[&run[..], args].concat())
    }

    fn last_log_line(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        log.lines().last().unwrap_or("no log").trim().to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers a failed run may have left, then dockerd: on SIGTERM it stops its
        // containerd and unmounts what it mounted.
        if let Ok(out) = self.docker(&["ps", "-aq"]).stdout(Stdio::piped()).output() {
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self.docker(&[&["rm", "-f"][..], &ids].concat()).status();
            }
        }
        stop(&mut self.daemon, Duration::from_secs(30));
        report_leftovers("dockerd", &self.dir, DOCKER_CGROUP);
    }
}

/// Podman with storage (vfs), run root, configuration and cgroup parent of its own; the
/// runtime is named on each command. Its containers are removed when dropped.
pub struct Podman {
    dir: PathBuf,
    wrun: PathBuf,
}

impl Podman {
    /// Prepares it in `dir` and imports the images.
    pub fn start(dir: &Path, wrun: &Path, tars: &ImageTars) -> Result<Podman> {
        std::fs::create_dir_all(dir)?;
        // Root here may lack CAP_SYS_RESOURCE: Podman's default ulimits would then fail
        // for every runtime.
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\ndefault_sysctls = []\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )?;
        Command::new("podman")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .context("podman is not installed (apt-get install podman)")?;
        let podman = Podman {
            dir: dir.to_path_buf(),
            wrun: absolute(wrun)?,
        };
        checked(
            podman.podman(&podman.wrun, &["import", path(&tars.busybox), BUSYBOX]),
            "podman import",
            &tars.busybox,
        )?;
        checked(
            podman.podman(
                &podman.wrun,
                &[
                    "import",
                    "--change",
                    "ENTRYPOINT [\"/app.wasm\"]",
                    path(&tars.hello),
                    HELLO,
                ],
            ),
            "podman import",
            &tars.hello,
        )?;
        Ok(podman)
    }

    /// The absolute path of wrun, for `--runtime`.
    pub fn wrun(&self) -> &Path {
        &self.wrun
    }

    /// `podman --root … --runroot … --storage-driver vfs --runtime RUNTIME ARGS...`, with no
    /// input or output.
    pub fn podman(&self, runtime: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs", "--runtime"])
            .arg(runtime)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// `podman run --rm --network none ARGS...` (image and command) with `runtime`.
    pub fn run(&self, runtime: &Path, args: &[&str]) -> Command {
        let parent = format!("/{PODMAN_CGROUP}");
        let run = [
            "run",
            "--rm",
            "--network",
            "none",
            "--cgroup-parent",
            &parent,
        ];
        self.podman(runtime, &[&run[..], args].concat())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers a failed run may have left (each with the runtime it was made with).
        let _ = self
            .podman(&self.wrun, &["rm", "--all", "--force"])
            .status();
        report_leftovers("podman", &self.dir, PODMAN_CGROUP);
    }
}

/// The absolute path of `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `(program, first line of PROGRAM --version)`, for the machine's tool list.
pub fn version(program: &str) -> Option<(String, String)> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .to_string();
    Some((program.to_string(), first))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("failed to resolve {}", path.display()))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("bench paths are UTF-8")
}

/// `tar -C DIR -cf TAR .`
fn tar(dir: &Path, tar: &Path) -> Result<()> {
    let out = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .stdin(Stdio::null())
        .output()
        .context("failed to run tar")?;
    if !out.status.success() {
        bail!(
            "tar of {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `cmd`, which must succeed; else "`what` of `on` failed: its stderr".
fn checked(mut cmd: Command, what: &str, on: &Path) -> Result<()> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("failed to run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} of {} failed: {}",
            on.display(),
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " ")
        );
    }
    Ok(())
}

/// SIGTERM, then SIGKILL after `grace`; reaped either way.
fn stop(child: &mut Child, grace: Duration) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Ends what a tool left (processes naming its directory: its containerd, shims, conmon),
/// removes its cgroup parent, and says on stderr what had to be cleaned or could not be.
fn report_leftovers(tool: &str, dir: &Path, cgroup: &str) {
    let mut left = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pids = processes_naming(dir);
    while !pids.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        pids = processes_naming(dir);
    }
    for pid in pids {
        left.push(format!("process {pid} (killed)"));
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for hierarchy in crate::density::cgroup_hierarchies() {
        let dir = Path::new(&hierarchy).join(cgroup);
        if dir.is_dir() {
            left.extend(remove_cgroup_tree(&dir));
        }
    }
    if !left.is_empty() {
        eprintln!("wrun-bench: {tool} teardown: {}", left.join(", "));
    }
}

/// Processes whose command line mentions `dir`.
fn processes_naming(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != std::process::id() as i32)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// Removes an (empty) cgroup and its descendants, deepest first; the ones that would not go.
fn remove_cgroup_tree(dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                left.extend(remove_cgroup_tree(&entry.path()));
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        left.push(format!("cgroup {} ({e})", dir.display()));
    }
    left
}
