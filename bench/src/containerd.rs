//! A private containerd (own config, root, state and sockets) for the `ctr run` rows, with
//! wrun's shim on its PATH and the bench images imported.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Containerd {
    dir: PathBuf,
    daemon: Child,
}

impl Containerd {
    pub fn start(dir: &Path, wrun: &Path) -> Result<Containerd> {
        std::fs::create_dir_all(dir.join("bin"))?;
        let shim = crate::sibling_binary("containerd-shim-wrun-v1")?;
        for (link, target) in [("containerd-shim-wrun-v1", shim.as_path()), ("wrun", wrun)] {
            let link = dir.join("bin").join(link);
            if !link.exists() {
                std::os::unix::fs::symlink(target, link)?;
            }
        }
        std::fs::write(
            dir.join("containerd.toml"),
            format!(
                "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 root = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{0}/ctd.sock\"\n\
                 [ttrpc]\n  address = \"{0}/ctd.sock.ttrpc\"\n",
                dir.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let path = format!("{}:{}", dir.join("bin").display(), std::env::var("PATH")?);
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("containerd.toml"))
            .env("PATH", path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("containerd is not installed (scripts/setup.sh installs it)")?;
        let ctd = Containerd {
            dir: dir.to_path_buf(),
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ctd.ctr(&["version"]).status()?.success() {
            if Instant::now() > deadline {
                bail!(
                    "containerd did not start (see {}/containerd.log)",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(ctd)
    }

    /// A private containerd with wrun's `images` (exported from the fixtures' state root) and
    /// busybox imported, and a wrun configuration for the shim that names that state root.
    pub fn with_images(
        fx: &crate::fixtures::Fixtures,
        images: &[&str],
    ) -> Result<(Containerd, PathBuf)> {
        let ctd = Containerd::start(&fx.dir.path().join("containerd"), &fx.wrun)?;
        for image in images {
            let tar = fx
                .dir
                .path()
                .join(format!("{}.tar", image.replace(':', "-")));
            fx.wrun_ok(&["image", "export", image, "-o", tar.to_str().unwrap()])?;
            ctd.import(&tar)?;
        }
        ctd.import(&crate::repo().join("samples/build/busybox-oci.tar"))?;
        let config = fx.dir.path().join("wrun.toml");
        std::fs::write(&config, format!("root = \"{}\"\n", fx.root().display()))?;
        Ok((ctd, config))
    }

    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a")
            .arg(self.dir.join("ctd.sock"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// The daemon's process ID.
    pub fn pid(&self) -> i32 {
        self.daemon.id() as i32
    }

    pub fn import(&self, tar: &Path) -> Result<()> {
        let out = self
            .ctr(&["image", "import", "--all-platforms", tar.to_str().unwrap()])
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            bail!(
                "ctr image import {} failed: {}",
                tar.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
