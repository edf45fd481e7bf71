//! `run -p`: Wasm HTTP handlers served on published host ports, over loopback with a plain
//! HTTP/1.1 client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use wrun_tests::*;

/// GET `path` on 127.0.0.1:`port`: (status, body).
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get(port, path)
}

/// Waits for the first answer (the container prints its ID before it serves).
fn wait_serving(port: u16) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = get(port, "/api/info") {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "port {port} never answered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn frontend() -> String {
    sample("frontend-app").to_str().unwrap().to_string()
}

#[test]
fn three_replicas_serve_a_thousand_requests_with_their_own_names() {
    let world = privileged_test!(World::new());
    for n in 1..=3 {
        let publish = format!("127.0.0.1:{}:8080", port(n));
        let name = format!("frontend-app-{n}");
        let out = world.run(&[
            "-d",
            "--name",
            &name,
            "-e",
            &format!("REPLICA={name}"),
            "-p",
            &publish,
            &frontend(),
        ]);
        assert_exit(&out, 0);
    }
    for n in 1..=3 {
        wait_serving(port(n));
        let (status, body) = get(port(n), "/").unwrap();
        assert_eq!(status, 200);
        assert_contains(&body, &format!("Hello from frontend-app-{n}"));
    }
    for i in 0..1000u16 {
        let n = i % 3 + 1;
        let (status, body) = get(port(n), "/api/info").unwrap();
        assert_eq!(status, 200, "{body}");
        assert_contains(&body, &format!("\"replica\":\"frontend-app-{n}\""));
    }
    // One instance serves a replica's requests in turn: its counter saw all of them.
    let (_, body) = get(port(1), "/api/info").unwrap();
    assert_contains(&body, "\"requests\":");
    // The published ports, as Docker shows them: ps's PORTS, `port`, inspect.
    let published = format!("127.0.0.1:{}", port(2));
    assert_contains(
        &stdout(&world.wrun(&["ps"])),
        &format!("{published}->8080/tcp"),
    );
    assert_output(
        &world.wrun(&["port", "frontend-app-2"]),
        0,
        &format!("8080/tcp -> {published}\n"),
    );
    assert_output(
        &world.wrun(&["port", "frontend-app-2", "8080/tcp"]),
        0,
        &format!("{published}\n"),
    );
    assert_one_line_error(
        &world.wrun(&["port", "frontend-app-2", "81"]),
        125,
        "no public port `81`",
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&world.wrun(&["inspect", "frontend-app-2"]))).unwrap();
    let binding = &inspect[0]["NetworkSettings"]["Ports"]["8080/tcp"][0];
    assert_eq!(
        binding["HostPort"].as_str(),
        Some(port(2).to_string().as_str())
    );
    let names: Vec<String> = (1..=3).map(|n| format!("frontend-app-{n}")).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    let out = world.wrun(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        get(port(1), "/").is_err(),
        "the port still answers after rm"
    );
    world.assert_nothing_left();
}

#[test]
fn a_trapping_request_gets_500_and_the_server_keeps_serving() {
    let world = privileged_test!(World::new());
    let publish = format!("127.0.0.1:{}:8080", port(4));
    let out = world.run(&[
        "-d",
        "--name",
        "trapper",
        "-p",
        &publish,
        "--request-timeout",
        "300ms",
        &frontend(),
    ]);
    assert_exit(&out, 0);
    wait_serving(port(4));
    assert_eq!(get(port(4), "/trap").unwrap().0, 500);
    assert_eq!(get(port(4), "/api/info").unwrap().0, 200);
    let started = Instant::now();
    assert_eq!(get(port(4), "/spin").unwrap().0, 503);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(get(port(4), "/api/info").unwrap().0, 200);
    // A client that leaves mid-request: the guest finishes, and the instance serves on.
    let mut leaving = TcpStream::connect(("127.0.0.1", port(4))).unwrap();
    write!(leaving, "GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(leaving);
    let (status, body) = get(port(4), "/api/info").unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(port(4), "/outbound").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("HttpRequestDenied"),
        "outbound HTTP was not refused: {body}"
    );
    assert!(world.wrun(&["rm", "-f", "trapper"]).status.success());
    world.assert_nothing_left();
}

#[test]
fn publishing_needs_a_component_that_can_listen_and_a_free_port() {
    let world = privileged_test!(World::new());
    let publish = format!("127.0.0.1:{}:8080", port(5));
    // A command component may leave its port alone (tests/sockets.rs has ones that listen).
    let out = world.run(&["-p", &publish, s(&sample("hello.component"))]);
    assert_output(&out, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    // So may a preview-1 module (tests/sockets.rs has one that accepts on its pre-opened fd).
    let out = world.run(&["-p", &publish, s(&sample("hello"))]);
    assert_output(&out, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    let out = world.run(&["-p", &publish, s(&fixture("not-a-command.wat"))]);
    assert_one_line_error(&out, 126, "cannot listen on published ports (-p)");
    let busy = std::net::TcpListener::bind(("127.0.0.1", port(6))).unwrap();
    let publish_busy = format!("127.0.0.1:{}:8080", port(6));
    let out = world.run(&["-p", &publish_busy, &frontend()]);
    assert_one_line_error(&out, 125, "failed to listen on 127.0.0.1");
    drop(busy);
    for bad in ["8080", "127.0.0.1:x:80", "99999:80"] {
        let out = world.run(&["-p", bad, &frontend()]);
        assert_ne!(out.status.code(), Some(0), "{bad}");
        assert_eq!(stderr(&out).lines().count(), 1, "{bad}: {}", stderr(&out));
    }
    world.assert_nothing_left();
}

/// A host-side upstream on 127.0.0.1 answering every request with `text`; its port. (A port
/// the kernel picks: a fixed one can be in use by anything else on the host.)
fn upstream(text: String) -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = client.read(&mut request);
            let _ = write!(
                client,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    port
}

/// A loopback port nothing listens on (the kernel's pick, released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn outbound_requests_reach_only_the_hosts_allowed() {
    let world = privileged_test!(World::new());
    let hi = upstream("upstream says hi".to_string());
    let large_port = upstream("z".repeat(100_000));
    let allowed = format!("127.0.0.1:{hi}");
    let closed = format!("127.0.0.1:{}", closed_port());
    let large = format!("127.0.0.1:{large_port}");
    let publish = format!("127.0.0.1:{}:8080", port(12));
    let out = world.run(&[
        "-d",
        "--name",
        "outbound",
        "-p",
        &publish,
        "--allow-outbound",
        &allowed,
        "--allow-outbound",
        &closed,
        "--allow-outbound",
        &large,
        &frontend(),
    ]);
    assert_exit(&out, 0);
    wait_serving(port(12));
    // The sandbox's own loopback is empty: this answer came through the broker.
    let (status, body) = get(port(12), &format!("/outbound?to={allowed}")).unwrap();
    assert_eq!(status, 200);
    assert_contains(&body, "answered 200: upstream says hi");
    // Bodies larger than one write stream through, both ways.
    let (status, body) = get(port(12), &format!("/outbound?to={large}")).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.matches('z').count(), 100_000, "{}", body.len());
    let (_, body) = get(port(12), &format!("/outbound?to={closed}")).unwrap();
    assert_contains(&body, "ConnectionRefused");
    for other in [
        format!("localhost:{hi}"),
        format!("127.0.0.1:{}", port(13)),
        "127.0.0.1".to_string(),
        "example.com".to_string(),
    ] {
        let (_, body) = get(port(12), &format!("/outbound?to={other}")).unwrap();
        assert!(body.contains("HttpRequestDenied"), "{other}: {body}");
    }
    // Still serving, and the allowed host still answers after the refusals.
    let (_, body) = get(port(12), &format!("/outbound?to={allowed}")).unwrap();
    assert_contains(&body, "upstream says hi");
    assert!(world.wrun(&["rm", "-f", "outbound"]).status.success());

    // Without -p the handler is run as a command, which it is not.
    let out = world.run(&["--allow-outbound", &allowed, &frontend()]);
    assert_one_line_error(&out, 126, "is not a `wasi:cli/command` component");
    for bad in ["", "host:0", "a b", "[::1"] {
        let out = world.run(&["-p", &publish, "--allow-outbound", bad, &frontend()]);
        assert_ne!(out.status.code(), Some(0), "{bad}");
        let err = stderr(&out);
        assert!(err.contains("invalid --allow-outbound"), "{bad}: {err}");
    }
    world.assert_nothing_left();
}

#[test]
fn stop_refuses_new_connections_and_lets_requests_in_flight_finish() {
    let world = privileged_test!(World::new());
    let publish = format!("127.0.0.1:{}:8080", port(7));
    let out = world.run(&["-d", "--name", "graceful", "-p", &publish, &frontend()]);
    assert_exit(&out, 0);
    wait_serving(port(7));
    let slow = std::thread::spawn(|| get(port(7), "/slow"));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let stopped = world.wrun(&["stop", "graceful"]);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    let (status, body) = slow.join().unwrap().expect("the slow request was answered");
    assert_eq!(status, 200);
    assert_contains(&body, "slow done");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop waited for the kill"
    );
    assert!(get(port(7), "/").is_err(), "still accepting after stop");
    let inspect = world.wrun(&["inspect", "graceful"]);
    assert_contains(&stdout(&inspect), "\"ExitCode\": 0");
    assert!(world.wrun(&["rm", "graceful"]).status.success());
    world.assert_nothing_left();
}

#[test]
fn a_served_guest_reads_its_preopened_directory_and_nothing_else() {
    let world = privileged_test!(World::new());
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("message.txt"), "from the host\n").unwrap();
    let dir = format!("{}::/data:ro", data.path().display());
    let publish = format!("127.0.0.1:{}:8080", port(8));
    let out = world.run(&[
        "-d",
        "--name",
        "files",
        "--dir",
        &dir,
        "-p",
        &publish,
        &frontend(),
    ]);
    assert_exit(&out, 0);
    wait_serving(port(8));
    let (status, body) = get(port(8), "/file").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_contains(&body, "from the host");
    assert!(world.wrun(&["rm", "-f", "files"]).status.success());
    let publish = format!("127.0.0.1:{}:8080", port(9));
    let out = world.run(&["-d", "--name", "nofiles", "-p", &publish, &frontend()]);
    assert_exit(&out, 0);
    wait_serving(port(9));
    assert_eq!(get(port(9), "/file").unwrap().0, 404);
    assert!(world.wrun(&["rm", "-f", "nofiles"]).status.success());
    world.assert_nothing_left();
}

#[test]
fn a_detached_run_of_a_module_that_cannot_listen_is_refused_before_an_id() {
    let world = privileged_test!(World::new());
    let publish = format!("127.0.0.1:{}:8080", port(17));
    // A component that is neither a command nor an HTTP handler has no way to listen.
    let out = world.run(&["-d", "-p", &publish, s(&fixture("not-a-command.wat"))]);
    assert_one_line_error(&out, 126, "cannot listen on published ports (-p)");
    assert_contains(&stderr(&out), "neither a `wasi:cli/command` nor");
    assert_eq!(stdout(&out), "", "no ID for a container that can only fail");
    assert_eq!(stdout(&world.wrun(&["ps", "-aq"])), "");
    assert!(TcpStream::connect(("127.0.0.1", port(17))).is_err());
    world.assert_nothing_left();
}
