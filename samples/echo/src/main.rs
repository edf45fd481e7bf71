//! Prints its arguments on one line, then its environment, one `NAME=VALUE` per line, sorted.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args: {}", args.join(" "));
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    for (name, value) in env {
        println!("env: {name}={value}");
    }
}
