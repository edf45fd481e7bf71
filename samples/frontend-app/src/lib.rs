//! A small web front end as a `wasi:http/incoming-handler` component: an HTML page at `/`,
//! JSON at `/api/info` with the replica's name ($REPLICA) and how many requests this instance
//! has served; `/file` serves /data/message.txt from a preopened directory. For tests, `/trap`
//! traps, `/spin` never returns, `/slow` answers after a second and `/outbound[?to=HOST:PORT]`
//! sends a GET to that host (example.com by default) and reports what came of it.

use std::sync::atomic::{AtomicU64, Ordering};
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

static SERVED: AtomicU64 = AtomicU64::new(0);

struct FrontendApp;

impl wasi::exports::http::incoming_handler::Guest for FrontendApp {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        let replica = std::env::var("REPLICA").unwrap_or_else(|_| "frontend-app".to_string());
        let path = request.path_with_query().unwrap_or_default();
        let (status, content_type, body) = match path.as_str() {
            "/" => (
                200,
                "text/html; charset=utf-8",
                format!(
                    "<!doctype html>\n<title>{replica}</title>\n<h1>Hello from {replica}</h1>\n\
                     <p>Served from WebAssembly in a wrun sandbox.</p>\n"
                ),
            ),
            "/api/info" => (
                200,
                "application/json",
                format!("{{\"replica\":\"{replica}\",\"requests\":{served}}}\n"),
            ),
            "/trap" => panic!("trapping on purpose"),
            "/spin" => spin(),
            "/file" => match std::fs::read_to_string("/data/message.txt") {
                Ok(text) => (200, "text/plain", text),
                Err(e) => (404, "text/plain", format!("/data/message.txt: {e}\n")),
            },
            "/slow" => {
                // A request that takes a second: for graceful stops.
                wasi::clocks::monotonic_clock::subscribe_duration(1_000_000_000).block();
                (200, "text/plain", "slow done\n".to_string())
            }
            outbound_path if outbound_path.starts_with("/outbound") => {
                let to = outbound_path
                    .split_once("?to=")
                    .map_or("example.com", |(_, to)| to);
                (200, "text/plain", outbound(to))
            }
            _ => (404, "text/plain", "not found\n".to_string()),
        };
        respond(response_out, status, content_type, body.as_bytes());
    }
}

wasi::http::proxy::export!(FrontendApp);

/// Never returns: for `--request-timeout`.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// What became of a GET to `http://{authority}/`: refused unless wrun was told to allow it.
fn outbound(authority: &str) -> String {
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some("/"));
    match wasi::http::outgoing_handler::handle(request, None) {
        Err(code) => format!("refused: {code:?}\n"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => {
                    let status = response.status();
                    format!("answered {status}: {}", read_body(response))
                }
                Some(Ok(Err(code))) => format!("refused: {code:?}\n"),
                other => format!("failed: {other:?}\n"),
            }
        }
    }
}

fn read_body(response: wasi::http::types::IncomingResponse) -> String {
    let Ok(body) = response.consume() else {
        return String::new();
    };
    let Ok(stream) = body.stream() else {
        return String::new();
    };
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend(chunk);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        content_type.as_bytes().to_vec(),
    )])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("the body of a new response");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the body's stream");
    for chunk in body.chunks(4096) {
        stream.blocking_write_and_flush(chunk).expect("write the body");
    }
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("finish the body");
}
