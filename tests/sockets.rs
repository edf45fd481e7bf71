//! Plain TCP guests (`wasi:sockets`): a `std::net` server behind `-p`, connections out only
//! where `--allow-outbound` allows, and nothing else reachable.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use wrun_tests::compare::reference_bin;
use wrun_tests::*;

fn kv() -> String {
    sample("tcp-kv").to_str().unwrap().to_string()
}

/// tcp-kv built for preview 1: it serves the listener pre-opened at fd 3.
fn kv_p1() -> String {
    sample("tcp-kv.p1").to_str().unwrap().to_string()
}

fn client() -> String {
    sample("tcp-client").to_str().unwrap().to_string()
}

/// A line-at-a-time connection to the key-value sample.
struct Conn(BufReader<TcpStream>);

impl Conn {
    /// Connects once the server answers, within ten seconds.
    fn open(port: u16) -> Conn {
        let started = Instant::now();
        loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
                let mut conn = Conn(BufReader::new(stream));
                if conn.try_ask("PING").is_ok_and(|a| a == "PONG") {
                    return conn;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "port {port} never answered"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn try_ask(&mut self, line: &str) -> std::io::Result<String> {
        writeln!(self.0.get_mut(), "{line}")?;
        let mut answer = String::new();
        self.0.read_line(&mut answer)?;
        Ok(answer.trim_end().to_string())
    }

    fn ask(&mut self, line: &str) -> String {
        self.try_ask(line).expect("an answer")
    }
}

#[test]
fn three_replicas_of_a_std_tcp_server_answer_on_their_published_ports() {
    let world = privileged_test!(World::new());
    for n in 1..=3 {
        let publish = format!("127.0.0.1:{}:7000", port(n));
        let out = world.run(&["-d", "--name", &format!("kv-{n}"), "-p", &publish, &kv()]);
        assert_exit(&out, 0);
    }
    // Each replica keeps its own data, and serves several connections at once: they are
    // all open before any is answered, and answered in the reverse order.
    for n in 1..=3 {
        let mut conns: Vec<Conn> = (0..4).map(|_| Conn::open(port(n))).collect();
        for (i, conn) in conns.iter_mut().enumerate() {
            assert_eq!(conn.ask(&format!("SET key{i} replica{n}-{i}")), "OK");
        }
        for (i, conn) in conns.iter_mut().enumerate().rev() {
            assert_eq!(conn.ask(&format!("GET key{i}")), format!("replica{n}-{i}"));
        }
        assert_eq!(conns[0].ask("ECHO hello there"), "hello there");
    }
    // A megabyte each way: more than the kernel's socket buffers take at once.
    let big = "x".repeat(1 << 20);
    assert!(Conn::open(port(1)).ask(&format!("ECHO {big}")) == big);
    let mut other = Conn::open(port(2));
    assert_eq!(other.ask("GET key0"), "replica2-0");
    assert_eq!(Conn::open(port(3)).ask("GET key9"), "(nil)");
    // The guest sees the port it bound, not the host's.
    let logs = world.wrun(&["logs", "kv-1"]);
    assert_eq!(stdout(&logs), "tcp-kv: listening on 0.0.0.0:7000\n");
    assert_contains(
        &stdout(&world.wrun(&["ps"])),
        &format!("127.0.0.1:{}->7000/tcp", port(1)),
    );
    // `stop` ends the server like any container; its port is closed and nothing is left.
    for n in 1..=3 {
        assert!(world.wrun(&["stop", &format!("kv-{n}")]).status.success());
        let inspect = world.wrun(&["inspect", "-f", "{{.State.ExitCode}}", &format!("kv-{n}")]);
        assert_eq!(stdout(&inspect).trim(), "143");
        assert!(TcpStream::connect(("127.0.0.1", port(n))).is_err());
        assert!(world.wrun(&["rm", &format!("kv-{n}")]).status.success());
    }
    world.assert_nothing_left();
}

#[test]
fn a_preview1_server_accepts_on_the_listener_pre_opened_for_it() {
    let world = privileged_test!(World::new());
    let publish = format!("127.0.0.1:{}:7000", port(9));
    let out = world.run(&["-d", "--name", "kv-p1", "-p", &publish, &kv_p1()]);
    assert_exit(&out, 0);
    // Connections served together (poll_oneoff over the sockets), answered in reverse order.
    let mut conns: Vec<Conn> = (0..4).map(|_| Conn::open(port(9))).collect();
    for (i, conn) in conns.iter_mut().enumerate() {
        assert_eq!(conn.ask(&format!("SET key{i} p1-{i}")), "OK");
    }
    for (i, conn) in conns.iter_mut().enumerate().rev() {
        assert_eq!(conn.ask(&format!("GET key{i}")), format!("p1-{i}"));
    }
    let big = "y".repeat(1 << 20);
    assert!(conns[1].ask(&format!("ECHO {big}")) == big);
    // QUIT closes the guest's end: the client reads the end of the stream.
    assert_eq!(conns[2].ask("QUIT"), "");
    assert_eq!(conns[3].ask("GET key0"), "p1-0");
    drop(conns);
    let logs = world.wrun(&["logs", "kv-p1"]);
    assert_eq!(stdout(&logs), "tcp-kv: listening on fd 3\n");
    assert!(world.wrun(&["stop", "kv-p1"]).status.success());
    let inspect = world.wrun(&["inspect", "-f", "{{.State.ExitCode}}", "kv-p1"]);
    assert_eq!(stdout(&inspect).trim(), "143");
    assert!(TcpStream::connect(("127.0.0.1", port(9))).is_err());
    assert!(world.wrun(&["rm", "kv-p1"]).status.success());
    world.assert_nothing_left();
}

#[test]
fn a_preview1_guest_keeps_its_directories_beside_its_sockets() {
    let world = privileged_test!(World::new());
    let publish = format!("127.0.0.1:{}:7000", port(10));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in"), "through the volume\n").unwrap();
    let volume = format!("{}:/data", dir.path().display());
    // The socket at fd 3 does not hide the directory after it from libc's pre-open scan.
    let cat = sample("cat");
    let out = world.run(&[
        "-p",
        &publish,
        "-v",
        &volume,
        s(&cat),
        "-o",
        "/data/out",
        "/data/in",
    ]);
    assert_exit(&out, 0);
    let copied = std::fs::read_to_string(dir.path().join("out")).unwrap();
    assert_eq!(copied, "through the volume\n");
    // The descriptors wrun keeps socket numbers with reach no directory: the listener (3)
    // and, after the volume (4), the reserve (5); without a volume, the reserve is 4.
    let escape = sample("escape");
    for (fd, with_volume) in [("3", true), ("5", true), ("3", false), ("4", false)] {
        let mut args = vec!["-p", publish.as_str()];
        if with_volume {
            args.extend(["-v", volume.as_str()]);
        }
        let out = world.run(&[args.as_slice(), &[s(&escape), "descriptor", fd]].concat());
        assert_exit(&out, 0);
        assert_contains(
            &stdout(&out),
            &format!("denied: reach a directory through fd {fd}"),
        );
    }
    // The probe itself reaches a directory that is the guest's: the volume at fd 4.
    let out = world.run(&["-p", &publish, "-v", &volume, s(&escape), "descriptor", "4"]);
    assert_exit(&out, 1);
    assert_contains(&stdout(&out), "ESCAPED: reached a directory through fd 4");
    world.assert_nothing_left();
}

#[test]
fn a_foreground_server_is_refused_every_port_it_was_not_given() {
    let world = privileged_test!(World::new());
    let publish = format!("127.0.0.1:{}:7000", port(4));
    for (address, why) in [
        ("0.0.0.0:7001", "Permission denied"),
        ("0.0.0.0:0", "Permission denied"),
        ("127.0.0.1:8080", "Permission denied"),
    ] {
        let out = world.run(&["-p", &publish, &kv(), address]);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert_contains(&err, &format!("tcp-kv: cannot listen on {address}: {why}"));
    }
    // Without -p the guest has no port at all; -v names the flag that would give it one.
    let out = world.run(&["--verbose", &kv()]);
    assert_exit(&out, 1);
    assert_contains(&stderr(&out), "no published port (-p HOST_PORT:GUEST_PORT)");
    // With -p, the port it binds is named.
    let out = world.run(&["--verbose", "-p", &publish, &kv(), "0.0.0.0:7001"]);
    assert_exit(&out, 1);
    assert_contains(&stderr(&out), "publish it with -p HOST_PORT:7001");
    // A foreground server runs until it is stopped, answering meanwhile.
    let server = world.spawn_run(&["-p", &publish, &kv(), "[::]:7000"]);
    assert_eq!(Conn::open(port(4)).ask("SET a b"), "OK");
    nix_kill(server.id(), libc::SIGTERM);
    let out = server.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert_eq!(stdout(&out), "tcp-kv: listening on [::]:7000\n");
    world.assert_nothing_left();
}

#[test]
fn outbound_tcp_goes_only_to_allowed_hosts_and_ports() {
    let world = privileged_test!(World::new());
    let up = upstream();
    let target = format!("127.0.0.1:{up}");
    let out = world.run(&["--allow-outbound", &target, &client(), &target, "hi"]);
    assert_output(&out, 0, "upstream got hi\n");
    // Not allowed: another port of the same host, a host without a rule, no rule at all.
    let other = format!("127.0.0.1:{}", up.wrapping_add(1).max(1));
    let client = client();
    for (rules, to) in [
        (vec!["--allow-outbound", &target], other.as_str()),
        (vec!["--allow-outbound", &target], "127.0.0.2:80"),
        (vec![], target.as_str()),
    ] {
        let mut args = rules.clone();
        args.extend([client.as_str(), to, "hi"]);
        let out = world.run(&args);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert_contains(&err, &format!("cannot connect to {to}: Permission denied"));
    }
    // Allowed, but nothing listens there: refused by the peer, not by wrun.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let out = world.run(&["--allow-outbound", &closed, &client, &closed, "hi"]);
    assert_exit(&out, 1);
    assert_contains(&stderr(&out), "Connection refused");
    world.assert_nothing_left();
}

#[test]
fn names_resolve_only_when_a_rule_names_them() {
    let world = privileged_test!(World::new());
    let up = upstream();
    let by_name = format!("localhost:{up}");
    // localhost is 127.0.0.1 and ::1 on the host, where the broker looks it up; the client
    // tries both as std does, and the upstream listens on the first.
    let out = world.run(&["--allow-outbound", &by_name, &client(), &by_name, "hi"]);
    assert_output(&out, 0, "upstream got hi\n");
    let by_ip = format!("127.0.0.1:{up}");
    let other_port = format!("localhost:{}", up.wrapping_add(1).max(1));
    for (rule, to, refusal) in [
        // A rule for the address does not name the host.
        (
            by_ip.as_str(),
            by_name.as_str(),
            "failed to lookup address information",
        ),
        (
            by_name.as_str(),
            "example.com:80",
            "failed to lookup address information",
        ),
        // The name resolves, but the rule is for another port.
        (by_name.as_str(), other_port.as_str(), "Permission denied"),
    ] {
        let out = world.run(&["--allow-outbound", rule, &client(), to, "hi"]);
        assert_exit(&out, 1);
        assert_contains(&stderr(&out), &format!("cannot connect to {to}: {refusal}"));
    }
    // Without any rule, lookups fail as under wasmtime without -S allow-ip-name-lookup.
    let out = world.run(&[
        "-p",
        &format!("127.0.0.1:{}:7000", port(8)),
        &client(),
        &by_name,
    ]);
    assert_exit(&out, 1);
    assert_contains(&stderr(&out), "failed to lookup address information");
    world.assert_nothing_left();
}

#[test]
fn a_server_in_the_sandbox_is_reached_by_a_client_in_another() {
    let world = privileged_test!(World::new());
    let publish = format!("127.0.0.1:{}:7000", port(5));
    assert_exit(
        &world.run(&["-d", "--name", "kv", "-p", &publish, &kv()]),
        0,
    );
    Conn::open(port(5));
    let target = format!("127.0.0.1:{}", port(5));
    let out = world.run(&[
        "-d",
        "--name",
        "client",
        "--allow-outbound",
        &target,
        &client(),
        &target,
        "SET from client",
        "GET from",
    ]);
    assert_exit(&out, 0);
    let wait = world.wrun(&["wait", "client"]);
    assert_eq!(stdout(&wait).trim(), "0", "{}", stderr(&wait));
    assert_eq!(stdout(&world.wrun(&["logs", "client"])), "OK\nclient\n");
    assert!(world.wrun(&["rm", "-f", "kv", "client"]).status.success());
    world.assert_nothing_left();
}

#[test]
fn a_tcp_conversation_goes_as_under_the_reference_with_the_hosts_network() {
    let world = privileged_test!(World::new());
    let reference = |args: &[&str]| {
        let mut command = std::process::Command::new(reference_bin());
        command
            .arg("--inherit-network")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    };
    let conversation = [
        "PING",
        "SET k v",
        "GET k",
        "GET missing",
        "DEL k",
        "ECHO  two  spaces ",
        "NOPE",
    ];
    let talk = |port: u16| -> Vec<String> {
        let mut conn = Conn::open(port);
        conversation.iter().map(|line| conn.ask(line)).collect()
    };
    // The same server module: under the reference on a host port, under wrun behind -p.
    let under_reference = {
        let address = format!("127.0.0.1:{}", port(6));
        let mut server = reference(&[&kv(), &address]).spawn().unwrap();
        let said = talk(port(6));
        server.kill().unwrap();
        let out = server.wait_with_output().unwrap();
        assert_eq!(stdout(&out), format!("tcp-kv: listening on {address}\n"));
        said
    };
    let publish = format!("127.0.0.1:{}:7000", port(7));
    assert_exit(
        &world.run(&["-d", "--name", "kv", "-p", &publish, &kv()]),
        0,
    );
    assert_eq!(talk(port(7)), under_reference);
    // The same client module, to the same server.
    let target = format!("127.0.0.1:{}", port(7));
    let lines = ["SET x 1", "GET x", "NOPE"];
    let mut args = vec![client(), target.clone()];
    args.extend(lines.iter().map(|l| l.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let by_reference = reference(&args).output().unwrap();
    let mut wrun_args = vec!["--allow-outbound", &target];
    wrun_args.extend(&args);
    let by_wrun = world.run(&wrun_args);
    assert_exit(&by_reference, 0);
    assert_output(&by_wrun, 0, &stdout(&by_reference));
    assert!(world.wrun(&["rm", "-f", "kv"]).status.success());
    // Refused the same way as the reference without a network grants it: the same message.
    let no_network = std::process::Command::new(reference_bin())
        .args([kv().as_str(), "0.0.0.0:7000"])
        .output()
        .unwrap();
    let in_wrun = world.run(&[&kv(), "0.0.0.0:7000"]);
    assert_exit(&no_network, 1);
    assert_exit(&in_wrun, 1);
    assert_eq!(stderr(&in_wrun), stderr(&no_network));
    world.assert_nothing_left();
}

#[test]
fn udp_is_refused_outside_a_pod_as_by_the_reference_without_a_network() {
    let world = privileged_test!(World::new());
    let echo = sample("udp-echo").to_str().unwrap().to_string();
    // A host-side UDP echo: the sample talks to it under the reference with the host's
    // network (`wasmtime run -S inherit-network`, UDP on by default).
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1500];
        while let Ok((length, peer)) = server.recv_from(&mut buffer) {
            let _ = server.send_to(&buffer[..length], peer);
        }
    });
    let reference = |grant: &[&str]| {
        std::process::Command::new(reference_bin())
            .args(grant)
            .args([echo.as_str(), "send", &target, "ping"])
            .output()
            .unwrap()
    };
    assert_output(&reference(&["--inherit-network"]), 0, "ping\n");
    // wrun outside a pod grants no UDP, even with the address allowed for TCP: the same
    // refusal as the reference's without a network.
    let refused = reference(&[]);
    assert_exit(&refused, 1);
    let in_wrun = world.run(&["--allow-outbound", &target, &echo, "send", &target, "ping"]);
    assert_exit(&in_wrun, 1);
    assert_eq!(stderr(&in_wrun), stderr(&refused));
    world.assert_nothing_left();
}

/// A host-side upstream on 127.0.0.1 answering each line of each connection with `upstream
/// got LINE`; its port.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut conn = BufReader::new(stream);
            let mut line = String::new();
            while conn.read_line(&mut line).is_ok_and(|read| read > 0) {
                let answered = writeln!(conn.get_mut(), "upstream got {}", line.trim_end());
                line.clear();
                if answered.is_err() {
                    break;
                }
            }
        }
    });
    port
}

fn nix_kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) of a child this test started.
    unsafe { libc::kill(pid as i32, signal) };
}
