//! Exits with the code given as its first argument (0 without one).

fn main() {
    let code = match std::env::args().nth(1) {
        None => 0,
        Some(arg) => match arg.parse::<i32>() {
            Ok(code) => code,
            Err(_) => {
                eprintln!("exit: `{arg}` is not an integer");
                2
            }
        },
    };
    std::process::exit(code);
}
