//! The micro-VM row: QEMU `-M microvm`, a Debian kernel booted directly and a busybox
//! initramfs that prints a marker and powers off. KVM where it boots; software emulation
//! (TCG) only on request and labelled as such.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MARKER: &str = "microvm-ok";

/// A kernel and the initramfs variants built by `bench/microvm/build.sh`.
pub struct Images {
    pub dir: PathBuf,
}

impl Images {
    /// Builds them (idempotently) if missing.
    pub fn ensure() -> Result<Images> {
        let dir = PathBuf::from(
            std::env::var_os("WRUN_BENCH_MICROVM")
                .unwrap_or("/var/cache/wrun-bench/microvm".into()),
        );
        let images = Images { dir };
        if !images.kernel().exists() || !images.initramfs("poweroff").exists() {
            let script = crate::repo().join("bench/microvm/build.sh");
            let status = Command::new("sh")
                .arg(&script)
                .env("OUT", &images.dir)
                .stdout(Stdio::null())
                .status()
                .with_context(|| format!("failed to run {}", script.display()))?;
            if !status.success() {
                bail!("{} failed", script.display());
            }
        }
        Ok(images)
    }

    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    pub fn initramfs(&self, variant: &str) -> PathBuf {
        self.dir.join(format!("initramfs-{variant}.gz"))
    }

    /// Bytes a VM needs on disk: kernel and initramfs.
    pub fn size(&self) -> u64 {
        [self.kernel(), self.initramfs("poweroff")]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// QEMU's command for one boot of `variant` (`poweroff` exits, `sleep` stays up).
pub fn command(images: &Images, accel: Accel, variant: &str) -> Command {
    let (accel_name, cpu) = match accel {
        // -cpu host aborts on nested KVM (QEMU cannot set MSR 0x10a, IA32_ARCH_CAPABILITIES).
        Accel::Kvm => ("kvm", "host,-arch-capabilities"),
        Accel::Tcg => ("tcg", "max"),
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,isa-serial=on",
        "-accel",
        accel_name,
    ])
    .args(["-cpu", cpu, "-m", "256", "-smp", "1"])
    .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
    .args(["-serial", "stdio", "-kernel"])
    .arg(images.kernel())
    .arg("-initrd")
    .arg(images.initramfs(variant))
    // With `quiet`, TCG boots hung before the first line in 4 of 9 trials here; with the
    // console busy from the start (earlyprintk) 3 of 3 booted.
    .args([
        "-append",
        "console=ttyS0 earlyprintk=ttyS0 reboot=t panic=-1",
    ])
    .stdin(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

/// One boot to power-off; fails unless the guest printed the marker within `limit`.
pub fn boot_once(images: &Images, accel: Accel, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut child = command(images, accel, "poweroff")
        .stdout(Stdio::piped())
        .spawn()
        .context("qemu-system-x86 is not installed (bench/microvm/build.sh installs it)")?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    loop {
        if let Some(status) = child.try_wait()? {
            let elapsed = started.elapsed();
            let output = reader.join().unwrap_or_default();
            if !output.contains(MARKER) {
                bail!("the guest exited ({status}) without reaching init");
            }
            return Ok(elapsed);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let output = reader.join().unwrap_or_default();
            let last = output
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
                .chars()
                .take(120)
                .collect::<String>();
            bail!(
                "no boot to init within {} s (last console line: {last})",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// PSS of an idle VM (the `sleep` initramfs) once it has booted, in bytes.
pub fn idle_pss(images: &Images, accel: Accel, settle: Duration) -> Result<u64> {
    let mut child = command(images, accel, "sleep")
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(settle);
    let pss = crate::density::pss_of(child.id() as i32);
    let _ = child.kill();
    let _ = child.wait();
    pss.context("failed to read the VM's PSS")
}

pub fn kvm_usable() -> bool {
    Path::new("/dev/kvm").exists()
}
