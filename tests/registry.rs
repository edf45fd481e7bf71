//! Registries, against Debian's docker-registry (the CNCF distribution server) on loopback:
//! plain HTTP, and TLS with a CA made by the test and htpasswd basic auth; skopeo as the
//! other client; bad input one line each, with no partial image left.

use std::path::Path;
use std::process::{Command, Output};
use wrun_tests::registry::Registry;
use wrun_tests::*;

/// `wrun --root ROOT ARGS` with this registry's client configuration.
fn wrun(world: &World, registry: &Registry, args: &[&str]) -> Output {
    world
        .command(wrun_bin())
        .env("WRUN_CONFIG", registry.wrun_config())
        .env("DOCKER_CONFIG", registry.docker_config())
        .args(args)
        .output()
        .expect("wrun")
}

fn ok(world: &World, registry: &Registry, args: &[&str]) -> String {
    let out = wrun(world, registry, args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        stderr(&out),
        registry.log()
    );
    stdout(&out)
}

fn images(world: &World) -> String {
    stdout(&world.wrun(&["images", "--format", "{{.Repository}}:{{.Tag}}"]))
}

/// `skopeo copy OPTIONS SOURCE docker://REFERENCE` to a plain-HTTP test registry.
fn skopeo_copy(options: &[&str], source: &str, reference: &str) {
    let copied = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .args(options)
        .arg(source)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(copied.status.success(), "skopeo: {}", stderr(&copied));
}

/// No pull left a staging directory or a blob cut short in the store.
fn assert_no_partial_pull(world: &World) {
    let store = world.root.path().join("images");
    let staged: Vec<_> = std::fs::read_dir(&store)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(".pull-") || name.starts_with(".import-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(staged.is_empty(), "staging left: {staged:?}");
    let partial: Vec<_> = std::fs::read_dir(store.join(".pull/blobs/sha256"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(".partial"))
                .collect()
        })
        .unwrap_or_default();
    assert!(partial.is_empty(), "partial blobs left: {partial:?}");
}

#[test]
fn wasm_images_go_to_a_plain_registry_and_come_back_warm() {
    let world = privileged_test!(World::new());
    let registry = Registry::plain();
    for (form, name) in [("image", "hello"), ("artifact", "hello-artifact")] {
        let reference = format!("{}/wasm/{name}:v1", registry.host);
        ok(
            &world,
            &registry,
            &[
                "image",
                "pack",
                "--format",
                form,
                s(&sample("hello")),
                "-t",
                &reference,
            ],
        );
        let pushed = ok(&world, &registry, &["push", &reference]);
        assert!(
            pushed.starts_with(&format!("{reference} sha256:")),
            "{pushed}"
        );
        ok(&world, &registry, &["rmi", &reference]);
        let cache = world.root.path().join("cache");
        let _ = std::fs::remove_dir_all(&cache);
        let pulled = ok(&world, &registry, &["pull", &reference]);
        assert_eq!(pulled, pushed, "the same digest comes back");
        // The pull compiled the module: the first run finds its code in the cache.
        assert!(std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0) > 0);
        let run = world.run(&[&reference]);
        assert_output(&run, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    }
    // `run` pulls what is not here, as `docker run` does.
    let reference = format!("{}/wasm/hello:v1", registry.host);
    ok(&world, &registry, &["rmi", &reference]);
    let run = world
        .run_cmd(&[&reference])
        .env("WRUN_CONFIG", registry.wrun_config())
        .output()
        .unwrap();
    assert_output(&run, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    assert!(images(&world).contains(&reference), "{}", images(&world));
    // And `run -d`: pulled, then detached; its output in its log.
    ok(&world, &registry, &["rmi", &reference]);
    let detached = world
        .run_cmd(&["-d", "--name", "pulled", &reference])
        .env("WRUN_CONFIG", registry.wrun_config())
        .output()
        .unwrap();
    assert!(detached.status.success(), "{}", stderr(&detached));
    wait_until(10, "the pulled container never logged", || {
        stdout(&world.wrun(&["logs", "pulled"])).contains("Hello from WebAssembly")
    });
    assert!(world.wrun(&["rm", "-f", "pulled"]).status.success());
    assert_no_partial_pull(&world);
    world.assert_nothing_left();
}

#[test]
fn native_images_pushed_by_skopeo_are_pulled_and_run_oci_and_docker_manifests() {
    let world = privileged_test!(World::new());
    let registry = Registry::plain();
    for (format, tag) in [("oci", "oci"), ("v2s2", "docker")] {
        let reference = format!("{}/library/busybox:{tag}", registry.host);
        let archive = format!("oci-archive:{}", busybox_archive().display());
        skopeo_copy(&["--format", format], &archive, &reference);
        ok(&world, &registry, &["pull", &reference]);
        let run = world.run(&[&reference, "echo", "pulled", tag]);
        assert_output(&run, 0, &format!("pulled {tag}\n"));
    }
    // The layer they share is stored once.
    let layers: Vec<_> = std::fs::read_dir(world.root.path().join("images/blobs/sha256"))
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().map(|m| m.len() > 500_000).unwrap_or(false))
        .collect();
    assert_eq!(layers.len(), 1, "busybox's layer, once");
    assert_no_partial_pull(&world);
    world.assert_nothing_left();
}

#[test]
fn tls_and_basic_auth_with_dockers_credentials() {
    let world = privileged_test!(busybox_world());
    let registry = Registry::tls_with_login("alice", "s3cret");
    let host = registry.host.clone();
    let reference = format!("{host}/team/busybox:v1");
    let login = |password: &str| {
        let mut child = world
            .command(wrun_bin())
            .env("WRUN_CONFIG", registry.wrun_config())
            .env("DOCKER_CONFIG", registry.docker_config())
            .args(["login", "-u", "alice", "--password-stdin", &host])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    assert_one_line_error(&login("wrong"), 125, "unauthorized");
    let logged_in = login("s3cret");
    assert_output(&logged_in, 0, "Login Succeeded\n");
    // Where Docker keeps it, as Docker writes it: base64 of user:password.
    let config = std::fs::read_to_string(registry.docker_config().join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(json["auths"][&host]["auth"], "YWxpY2U6czNjcmV0");
    // Push and pull over TLS, the registry's CA found in certs.d.
    let archive = busybox_archive();
    ok(
        &world,
        &registry,
        &["image", "import", s(&archive), "-t", &reference],
    );
    ok(&world, &registry, &["push", &reference]);
    ok(&world, &registry, &["rmi", &reference]);
    ok(&world, &registry, &["pull", &reference]);
    let run = world.run(&[&reference, "echo", "over", "tls"]);
    assert_output(&run, 0, "over tls\n");
    // Without the CA: refused, one line.
    let no_ca = world
        .command(wrun_bin())
        .env("DOCKER_CONFIG", registry.docker_config())
        .args(["pull", &reference])
        .output()
        .unwrap();
    assert_one_line_error(&no_ca, 125, "cannot reach the registry");
    // Another client reads what `wrun login` wrote: skopeo, with the same file.
    let auth_file = registry.docker_config().join("config.json");
    let inspected = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--authfile", s(&auth_file)])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(
        inspected.status.success(),
        "skopeo inspect: {}",
        stderr(&inspected)
    );
    // After logout, the registry refuses.
    assert_output(
        &wrun(&world, &registry, &["logout", &host]),
        0,
        &format!("Removing login credentials for {host}\n"),
    );
    assert_one_line_error(
        &wrun(&world, &registry, &["pull", &reference]),
        125,
        "unauthorized",
    );
    // And wrun reads what another client's login wrote.
    let login = Command::new("skopeo")
        .args(["login", "--authfile", s(&auth_file), "--tls-verify=false"])
        .args(["-u", "alice", "--password-stdin", &host])
        .output_with_stdin(b"s3cret\n");
    assert!(login.status.success(), "skopeo login: {}", stderr(&login));
    ok(&world, &registry, &["pull", &reference]);
    assert_no_partial_pull(&world);
    world.assert_nothing_left();
}

/// A command's output, `input` written to its stdin.
trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> Output;
}

impl OutputWithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().expect("wait")
    }
}

#[test]
fn bearer_tokens_from_the_registrys_token_server() {
    let world = privileged_test!(World::new());
    let registry = Registry::with_token_auth("carol", "t0ken");
    let host = registry.host.clone();
    let reference = format!("{host}/tokens/hello:v1");
    ok(
        &world,
        &registry,
        &["image", "pack", s(&sample("hello")), "-t", &reference],
    );
    // Anonymous: the token server refuses, and so the push.
    assert_one_line_error(
        &wrun(&world, &registry, &["push", "-q", &reference]),
        125,
        "unauthorized",
    );
    let login = |password: &[u8]| {
        world
            .command(wrun_bin())
            .env("WRUN_CONFIG", registry.wrun_config())
            .env("DOCKER_CONFIG", registry.docker_config())
            .args(["login", "-u", "carol", "--password-stdin", &host])
            .output_with_stdin(password)
    };
    assert_one_line_error(&login(b"wrong\n"), 125, "unauthorized");
    assert_output(&login(b"t0ken\n"), 0, "Login Succeeded\n");
    ok(&world, &registry, &["push", "-q", &reference]);
    ok(&world, &registry, &["rmi", &reference]);
    ok(&world, &registry, &["pull", "-q", &reference]);
    let run = world.run(&[&reference]);
    assert_output(&run, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    world.assert_nothing_left();
}

#[test]
fn a_credential_helper_keeps_the_login_as_dockers_do() {
    let world = privileged_test!(World::new());
    let registry = Registry::tls_with_login("bob", "hunter2");
    let host = registry.host.clone();
    // A helper that speaks Docker's protocol (get, store, erase) and keeps one entry in a file.
    let bin = registry.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let kept = registry.dir.path().join("helper-kept.json");
    let helper = bin.join("docker-credential-wruntest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nkept={}\ncase \"$1\" in\n  store) cat > \"$kept\" ;;\n  get) read host; [ -s \"$kept\" ] && cat \"$kept\" || {{ echo 'credentials not found in native keychain'; exit 1; }} ;;\n  erase) read host; rm -f \"$kept\" ;;\nesac\n",
            kept.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        registry.docker_config().join("config.json"),
        format!("{{\"credHelpers\": {{\"{host}\": \"wruntest\"}}}}"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let with_helper = |args: &[&str], input: &[u8]| {
        world
            .command(wrun_bin())
            .env("PATH", &path)
            .env("WRUN_CONFIG", registry.wrun_config())
            .env("DOCKER_CONFIG", registry.docker_config())
            .args(args)
            .output_with_stdin(input)
    };
    let login = with_helper(
        &["login", "-u", "bob", "--password-stdin", &host],
        b"hunter2\n",
    );
    assert_output(&login, 0, "Login Succeeded\n");
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&kept).expect("the helper kept it")).unwrap();
    assert_eq!(stored["Username"], "bob");
    assert_eq!(stored["Secret"], "hunter2");
    let config = std::fs::read_to_string(registry.docker_config().join("config.json")).unwrap();
    assert!(
        !config.contains("auths"),
        "no password in config.json: {config}"
    );
    // The helper's credentials let a push and a pull through.
    let reference = format!("{host}/helper/hello:v1");
    ok(
        &world,
        &registry,
        &["image", "pack", s(&sample("hello")), "-t", &reference],
    );
    assert!(with_helper(&["push", &reference], b"").status.success());
    ok(&world, &registry, &["rmi", &reference]);
    let pulled = with_helper(&["pull", "-q", &reference], b"");
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert_output(
        &with_helper(&["logout", &host], b""),
        0,
        &format!("Removing login credentials for {host}\n"),
    );
    assert!(!kept.exists(), "the helper erased it");
    assert_one_line_error(
        &with_helper(&["pull", "-q", &reference], b""),
        125,
        "unauthorized",
    );
    world.assert_nothing_left();
}

#[test]
fn from_an_index_the_wasm_image_is_chosen_and_an_index_without_one_is_refused() {
    let world = privileged_test!(World::new());
    let registry = Registry::plain();
    // An index of two images: one for linux/arm64 (which wrun cannot run here) and the Wasm
    // hello, pushed whole by skopeo.
    let layout = multi_platform_layout(world.root.path(), true);
    let reference = format!("{}/multi/hello:v1", registry.host);
    skopeo_copy(
        &["--all"],
        &format!("oci:{}:v1", layout.display()),
        &reference,
    );
    ok(&world, &registry, &["pull", "-q", &reference]);
    let run = world.run(&[&reference]);
    assert_output(&run, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    // An index with only the arm64 image: named, refused, nothing kept.
    let arm_only = multi_platform_layout(&world.root.path().join("arm"), false);
    let arm_reference = format!("{}/multi/arm:v1", registry.host);
    let arm_layout = format!("oci:{}:v1", arm_only.display());
    skopeo_copy(&["--all"], &arm_layout, &arm_reference);
    assert_one_line_error(
        &wrun(&world, &registry, &["pull", "-q", &arm_reference]),
        125,
        "no linux/amd64 or Wasm image among linux/arm64",
    );
    assert_no_partial_pull(&world);
    world.assert_nothing_left();
}

#[test]
fn bad_pulls_fail_in_one_line_and_leave_no_partial_image() {
    let world = privileged_test!(World::new());
    let registry = Registry::plain();
    let before = images(&world);
    let unknown = format!("{}/no/such:v1", registry.host);
    assert_one_line_error(
        &wrun(&world, &registry, &["pull", "-q", &unknown]),
        125,
        "not found in the registry",
    );
    assert_one_line_error(
        &wrun(&world, &registry, &["pull", "-q", "127.0.0.1:9/app:v1"]),
        125,
        "cannot reach the registry 127.0.0.1:9",
    );
    assert_one_line_error(
        &wrun(&world, &registry, &["pull", "Bad/Name"]),
        125,
        "invalid reference `Bad/Name`",
    );
    // A blob the registry serves wrong: refused by its digest; nothing kept.
    let reference = format!("{}/wasm/hello:v1", registry.host);
    ok(
        &world,
        &registry,
        &["image", "pack", s(&sample("hello")), "-t", &reference],
    );
    ok(&world, &registry, &["push", &reference]);
    let manifest = ok(&world, &registry, &["images", "--format", "{{.Digest}}"]);
    ok(&world, &registry, &["rmi", &reference]);
    let stored: serde_json::Value = serde_json::from_slice(
        &std::fs::read(registry.blob_file(manifest.trim())).expect("the manifest in the registry"),
    )
    .unwrap();
    let layer = stored["layers"][0]["digest"].as_str().unwrap().to_string();
    let data = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    assert_one_line_error(
        &wrun(&world, &registry, &["pull", "-q", &reference]),
        125,
        "does not match its digest",
    );
    // Without -q, the blobs fetched whole before it each have their line, as in Docker.
    let noisy = wrun(&world, &registry, &["pull", &reference]);
    let said = stderr(&noisy);
    let lines: Vec<&str> = said.trim_end().lines().collect();
    let (error_line, progress) = lines.split_last().expect("an error line");
    assert!(error_line.contains("does not match its digest"), "{said}");
    assert!(progress.iter().all(|l| l.ends_with("bytes)")), "{said}");
    assert_eq!(images(&world), before);
    assert_no_partial_pull(&world);
    // Put right, the retry pulls it.
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    ok(&world, &registry, &["pull", &reference]);
    // An image wrun cannot run: a manifest whose config is neither an image's nor Wasm's.
    let odd = odd_layout(world.root.path());
    let odd_name = format!("{}/odd:v1", registry.host);
    skopeo_copy(&[], &format!("oci:{}:v1", odd.display()), &odd_name);
    assert_one_line_error(
        &wrun(&world, &registry, &["pull", &odd_name]),
        125,
        "media type `application/x-no-such-config` is neither an image's nor Wasm's",
    );
    assert_no_partial_pull(&world);
    world.assert_nothing_left();
}

#[test]
fn a_download_cut_short_leaves_nothing_and_the_retry_fetches_only_what_is_missing() {
    let world = privileged_test!(World::new());
    let registry = Registry::plain();
    let direct = format!("{}/cut/conformance:v1", registry.host);
    ok(
        &world,
        &registry,
        &["image", "pack", s(&sample("conformance-p1")), "-t", &direct],
    );
    ok(&world, &registry, &["push", &direct]);
    // Through a proxy that drops the connection 64 KiB into the first long answer: the
    // module's layer (the manifest and config are short).
    let proxy = wrun_tests::registry::CuttingProxy::start(&registry.host, 64 * 1024);
    let reference = format!("{}/cut/conformance:v1", proxy.host);
    let cut = wrun(&world, &registry, &["pull", "-q", &reference]);
    assert!(proxy.has_cut());
    assert_eq!(cut.status.code(), Some(125), "{}", stderr(&cut));
    assert_eq!(stderr(&cut).lines().count(), 1, "{}", stderr(&cut));
    assert!(!images(&world).contains(&reference), "{}", images(&world));
    assert_no_partial_pull(&world);
    // What came whole (the config) waits for the retry; what was cut is gone.
    let cache = world.root.path().join("images/.pull/blobs/sha256");
    let waiting: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
    assert_eq!(waiting.len(), 1, "the config blob, kept");
    ok(&world, &registry, &["pull", "-q", &reference]);
    assert!(images(&world).contains(&reference), "{}", images(&world));
    let left: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "the cache is emptied once the image is in: {left:?}"
    );
    world.assert_nothing_left();
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An OCI image layout written by hand, for images no tool here makes.
struct LayoutWriter {
    dir: std::path::PathBuf,
}

impl LayoutWriter {
    fn new(dir: std::path::PathBuf) -> LayoutWriter {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        LayoutWriter { dir }
    }

    /// Stores a blob; its descriptor with `media_type`.
    fn put(&self, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        use sha2::Digest;
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    /// Stores a one-layer manifest; its descriptor, for `platform` (os, architecture) if given.
    fn image(
        &self,
        config: (&str, &[u8]),
        layer: (&str, &[u8]),
        platform: Option<(&str, &str)>,
    ) -> serde_json::Value {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.put(config.0, config.1),
            "layers": [self.put(layer.0, layer.1)],
        });
        let mut descriptor = self.put(OCI_MANIFEST, manifest.to_string().as_bytes());
        if let Some((os, architecture)) = platform {
            descriptor["platform"] = serde_json::json!({"os": os, "architecture": architecture});
        }
        descriptor
    }

    /// Writes `index.json` naming `entry` `v1` (skopeo copies a layout's image by name).
    fn finish(self, mut entry: serde_json::Value) -> std::path::PathBuf {
        entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "v1"});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
        std::fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
        self.dir
    }
}

/// A layout whose manifest's config has a media type no runtime knows.
fn odd_layout(dir: &Path) -> std::path::PathBuf {
    let layout = LayoutWriter::new(dir.join("odd-layout"));
    let image = layout.image(
        ("application/x-no-such-config", b"{}"),
        ("application/x-no-such-layer", b"not a tar"),
        None,
    );
    layout.finish(image)
}

/// A layout of an index of platforms: a (tiny, fake) linux/arm64 image and, with `wasm`, the
/// hello sample as a CNCF Wasm artifact.
fn multi_platform_layout(dir: &Path, wasm: bool) -> std::path::PathBuf {
    let layout = LayoutWriter::new(dir.join("multi-layout"));
    let arm_config =
        br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let mut platforms = vec![layout.image(
        ("application/vnd.oci.image.config.v1+json", arm_config),
        ("application/vnd.oci.image.layer.v1.tar", &[0u8; 1024]),
        Some(("linux", "arm64")),
    )];
    if wasm {
        let module = std::fs::read(sample("hello")).unwrap();
        let config = br#"{"created":"2026-12-05T00:00:00Z","architecture":"wasm","os":"wasip1","layerDigests":[]}"#;
        platforms.push(layout.image(
            ("application/vnd.wasm.config.v0+json", config),
            ("application/wasm", &module),
            Some(("wasip1", "wasm")),
        ));
    }
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": platforms});
    let entry = layout.put(OCI_INDEX, index.to_string().as_bytes());
    layout.finish(entry)
}
