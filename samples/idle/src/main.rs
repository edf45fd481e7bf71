//! A long-running workload that does nothing: prints `<name> ready` (its arguments, or
//! $REPLICA, or `idle`) and then sleeps until stopped. For detached containers and density.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = if args.is_empty() {
        std::env::var("REPLICA").unwrap_or_else(|_| "idle".to_string())
    } else {
        args.join(" ")
    };
    println!("{name} ready");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
