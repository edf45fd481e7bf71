//! Reclaiming space as Docker's verbs do: `container prune` (stopped containers), `image
//! prune` (images no container uses, with `-a`), `system prune` (both, and with `-a` the
//! compiled-code cache) and `system df` (what each kind holds and what could go).

use super::table::print_table;
use super::time::size;
use super::Failure;
use std::collections::BTreeSet;
use std::path::Path;
use wrun::container::record::{Container, Containers, Status};
use wrun::image::store::ImageEntry;
use wrun::state::StateRoot;

/// Containers: `prune`
#[derive(clap::Args, Debug)]
pub struct ContainerCommand {
    #[command(subcommand)]
    command: ContainerSubcommand,
}

#[derive(clap::Subcommand, Debug)]
enum ContainerSubcommand {
    /// Remove every stopped container
    Prune(Confirm),
}

impl ContainerCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let ContainerSubcommand::Prune(confirm) = self.command;
        if !confirm.given("all stopped containers") {
            return Ok(());
        }
        let reclaimed = prune_containers(state)?;
        wrun::out_line!("Total reclaimed space: {}", size(reclaimed));
        Ok(())
    }
}

/// Space: `df`, `prune`
#[derive(clap::Args, Debug)]
pub struct SystemCommand {
    #[command(subcommand)]
    command: SystemSubcommand,
}

#[derive(clap::Subcommand, Debug)]
enum SystemSubcommand {
    /// Show the space images, containers and the compiled-code cache take
    Df,
    /// Remove stopped containers; with -a also unused images and the compiled-code cache
    Prune(PruneAll),
}

impl SystemCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        match self.command {
            SystemSubcommand::Df => df(state),
            SystemSubcommand::Prune(prune) => {
                let what = if prune.all {
                    "all stopped containers, all images without a container, the compiled-code cache"
                } else {
                    "all stopped containers"
                };
                if !prune.confirm.given(what) {
                    return Ok(());
                }
                let mut reclaimed = prune_containers(state)?;
                if prune.all {
                    reclaimed += prune_images(state)?;
                    reclaimed += prune_cache(state)?;
                }
                wrun::out_line!("Total reclaimed space: {}", size(reclaimed));
                Ok(())
            }
        }
    }
}

/// `-f`, or the caller's "y" to Docker's question.
#[derive(clap::Args, Debug)]
pub struct Confirm {
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
}

impl Confirm {
    /// Whether to go on removing `what`: `-f`, or a "y" on stdin.
    fn given(&self, what: &str) -> bool {
        if self.force {
            return true;
        }
        wrun::err_line!("WARNING! This will remove {what}.");
        eprint!("Are you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        matches!(answer.trim(), "y" | "Y" | "yes")
    }
}

/// `system prune` and `image prune`: `-a` and `-f`.
#[derive(clap::Args, Debug)]
pub struct PruneAll {
    /// Also what is only unused, not just stopped (images without a container, the cache)
    #[arg(short, long)]
    all: bool,
    #[command(flatten)]
    confirm: Confirm,
}

/// `image prune`: with `-a`, every image no container was made from (wrun keeps no untagged
/// images, so without it only unreferenced blobs go).
pub fn image_prune(state: &StateRoot, prune: PruneAll) -> Result<(), Failure> {
    let what = if prune.all {
        "all images without at least one container associated to them"
    } else {
        "blobs no image refers to"
    };
    if !prune.confirm.given(what) {
        return Ok(());
    }
    let reclaimed = if prune.all {
        prune_images(state)?
    } else {
        collect_garbage(state)?
    };
    wrun::out_line!("Total reclaimed space: {}", size(reclaimed));
    Ok(())
}

fn runtime(e: impl Into<anyhow::Error>) -> Failure {
    Failure::runtime(e.into())
}

/// Removes stopped containers, printing their IDs; the bytes freed (writable layers).
fn prune_containers(state: &StateRoot) -> Result<u64, Failure> {
    let containers = Containers::open(state).map_err(runtime)?;
    let mut reclaimed = 0;
    let mut deleted = Vec::new();
    for c in stopped(&containers) {
        let layer = du(&state.overlays_dir().join(c.id()));
        match wrun::container::remove(&containers, &c, false) {
            Ok(()) => {
                reclaimed += layer;
                deleted.push(c.id().to_string());
            }
            Err(e) => wrun::err_line!("wrun: {:#}", anyhow::Error::new(e)),
        }
    }
    // After runs whose monitor died, and any writable layer whose removal failed.
    wrun::sandbox::sweep_stale(state);
    if !deleted.is_empty() {
        wrun::out_line!("Deleted Containers:\n{}\n", deleted.join("\n"));
    }
    Ok(reclaimed)
}

fn stopped(containers: &Containers) -> Vec<Container> {
    containers
        .list()
        .into_iter()
        .filter(|c| c.state().is_ok_and(|s| s.status() != Status::Running))
        .collect()
}

/// Removes images no container refers to, printing them; the bytes freed.
fn prune_images(state: &StateRoot) -> Result<u64, Failure> {
    let store = wrun::image::open_store(state).map_err(runtime)?;
    let before = du(store.dir());
    let used = images_in_use(state)?;
    for entry in store.entries().map_err(runtime)? {
        if !used.contains(&entry.digest()) {
            wrun::image::remove(&store, &entry).map_err(runtime)?;
            wrun::out_line!("Deleted: {}", entry.reference);
        }
    }
    Ok(before.saturating_sub(du(store.dir())))
}

/// Removes blobs no image refers to; the bytes freed.
fn collect_garbage(state: &StateRoot) -> Result<u64, Failure> {
    let store = wrun::image::open_store(state).map_err(runtime)?;
    let before = du(store.dir());
    let _lock = store.lock().map_err(runtime)?;
    let mut keep = Vec::new();
    for entry in store.entries().map_err(runtime)? {
        keep.extend(referenced_blobs(&store, &entry));
    }
    store.collect_garbage(&keep).map_err(runtime)?;
    Ok(before.saturating_sub(du(store.dir())))
}

/// The digests an image needs: its manifest, config, layers and module.
fn referenced_blobs(store: &wrun::image::store::ImageStore, entry: &ImageEntry) -> Vec<String> {
    let digest = entry.digest();
    let mut blobs = vec![digest.clone()];
    if let Ok(manifest) = store.read_manifest(&digest) {
        blobs.push(manifest.config().digest().to_string());
        blobs.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
    }
    if let Some(module) = entry.annotation(wrun::image::store::MODULE_DIGEST) {
        blobs.push(module.to_string());
    }
    blobs
}

/// Empties the compiled-code cache (recompiled on the next run); the bytes freed.
fn prune_cache(state: &StateRoot) -> Result<u64, Failure> {
    let dir = state.cache_dir();
    let before = du(&dir);
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            wrun::err_line!("wrun: failed to remove `{}`: {e}", path.display());
        }
    }
    Ok(before.saturating_sub(du(&dir)))
}

fn images_in_use(state: &StateRoot) -> Result<BTreeSet<String>, Failure> {
    let containers = Containers::open(state).map_err(runtime)?;
    Ok(containers
        .list()
        .into_iter()
        .filter_map(|c| Some(c.config.image?.digest))
        .collect())
}

/// `system df`: images, containers and the cache, each with what could be reclaimed.
fn df(state: &StateRoot) -> Result<(), Failure> {
    let store = wrun::image::open_store(state).map_err(runtime)?;
    let entries = store.entries().map_err(runtime)?;
    let used = images_in_use(state)?;
    let active_images = entries
        .iter()
        .filter(|e| used.contains(&e.digest()))
        .count();
    let kept: BTreeSet<String> = entries
        .iter()
        .filter(|e| used.contains(&e.digest()))
        .flat_map(|e| referenced_blobs(&store, e))
        .collect();
    let blobs = store.dir().join("blobs/sha256");
    let (mut images_size, mut images_free) = (0, 0);
    for blob in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
        let bytes = blob.metadata().map(|m| m.len()).unwrap_or(0);
        images_size += bytes;
        let digest = format!("sha256:{}", blob.file_name().to_string_lossy());
        if !kept.contains(&digest) {
            images_free += bytes;
        }
    }
    let containers = Containers::open(state).map_err(runtime)?;
    let all = containers.list();
    let layer = |c: &Container| du(&state.overlays_dir().join(c.id()));
    let stopped = stopped(&containers);
    let cache = du(&state.cache_dir());
    let rows = [
        (
            "Images",
            entries.len(),
            active_images,
            images_size,
            images_free,
        ),
        (
            "Containers",
            all.len(),
            all.len() - stopped.len(),
            all.iter().map(layer).sum(),
            stopped.iter().map(layer).sum(),
        ),
        (
            "Compiled cache",
            count_entries(&state.cache_dir()),
            0,
            cache,
            cache,
        ),
    ];
    let mut table = vec![["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(String::from)];
    for (kind, total, active, bytes, free) in rows {
        table.push([
            kind.to_string(),
            total.to_string(),
            active.to_string(),
            size(bytes),
            size(free),
        ]);
    }
    print_table(&table);
    Ok(())
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The bytes under `path` (files only, not following links); 0 if it is not there.
fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| du(&entry.path()))
        .sum()
}
