//! The OCI runtime spec wrun writes itself to run an image or a root file system directory
//! natively: runc's defaults, the image's user, the caller's flags.

use super::oci::BundleError;
use super::Preopen;
use crate::sandbox::native::profile;
use oci_spec::runtime::{
    Capability, LinuxCapabilities, Mount, MountBuilder, ProcessBuilder, Spec, UserBuilder,
};
use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;

/// What `wrun run` asks of a native workload beyond the image.
#[derive(Debug, Clone, Default)]
pub struct NativeOptions {
    /// The command: entrypoint and arguments already combined.
    pub args: Vec<String>,
    /// `NAME=VALUE`, the image's followed by the caller's.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// `uid[:gid]` or a name from the image's /etc/passwd.
    pub user: Option<String>,
    pub volumes: Vec<Preopen>,
    pub read_only: bool,
    pub hostname: String,
    pub init: bool,
}

/// The spec wrun writes for a native run: runc's defaults (mounts, masked and read-only
/// paths, new namespaces), a tmpfs `/tmp`, the default capability set, the volumes.
pub fn spec_for(rootfs_for_users: &Path, options: &NativeOptions) -> Result<Spec, BundleError> {
    let invalid = |e: oci_spec::OciSpecError| BundleError::Invalid(e.to_string());
    let (uid, gid) = resolve_user(rootfs_for_users, options.user.as_deref())?;
    let caps: HashSet<Capability> = profile::DEFAULT_CAPABILITIES
        .iter()
        .filter_map(|name| Capability::from_str(name.trim_start_matches("CAP_")).ok())
        .collect();
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_permitted(Some(caps.clone()));
    capabilities.set_effective(Some(caps));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let mut env = options.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(invalid)?,
        )
        .args(options.args.clone())
        .env(env)
        .cwd(options.cwd.clone().unwrap_or_else(|| "/".into()))
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()
        .map_err(invalid)?;
    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_hostname(Some(options.hostname.clone()));
    let mut mounts: Vec<Mount> = spec
        .mounts()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ().as_deref() != Some("cgroup"))
        .collect();
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec!["nosuid".into(), "nodev".into(), "mode=1777".into()])
            .build()
            .map_err(invalid)?,
    );
    for volume in &options.volumes {
        let mut opts = vec!["rbind".to_string(), "nosuid".into(), "nodev".into()];
        if volume.read_only {
            opts.push("ro".into());
        }
        mounts.push(
            MountBuilder::default()
                .destination(volume.guest.clone())
                .typ("bind")
                .source(volume.host.clone())
                .options(opts)
                .build()
                .map_err(invalid)?,
        );
    }
    spec.set_mounts(Some(mounts));
    if let Some(root) = spec.root().clone() {
        let mut root = root;
        root.set_readonly(Some(options.read_only));
        spec.set_root(Some(root));
    }
    Ok(spec)
}

/// `uid[:gid]`, or a name looked up in the image's /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<(u32, u32), BundleError> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let lookup = |table: &str, key: &str, field: usize| -> Option<u32> {
        table
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&key))
            .and_then(|f| f.get(field)?.parse().ok())
    };
    let uid = name
        .parse()
        .ok()
        .or_else(|| lookup(&passwd, name, 2))
        .ok_or_else(|| BundleError::Invalid(format!("no user `{name}` in the image")))?;
    let gid = match group {
        Some(g) => {
            let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
            g.parse()
                .ok()
                .or_else(|| lookup(&groups, g, 2))
                .ok_or_else(|| BundleError::Invalid(format!("no group `{g}` in the image")))?
        }
        None => lookup(&passwd, name, 3).unwrap_or(uid),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:101:102::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nweb:x:102:\nstaff:x:50:\n",
        )
        .unwrap();
        assert_eq!(resolve_user(dir.path(), None).unwrap(), (0, 0));
        assert_eq!(resolve_user(dir.path(), Some("web")).unwrap(), (101, 102));
        assert_eq!(
            resolve_user(dir.path(), Some("web:staff")).unwrap(),
            (101, 50)
        );
        assert_eq!(
            resolve_user(dir.path(), Some("1000:1000")).unwrap(),
            (1000, 1000)
        );
        assert!(resolve_user(dir.path(), Some("nobody")).is_err());
    }
}
