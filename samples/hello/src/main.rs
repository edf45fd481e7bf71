//! Prints a greeting: the smallest useful workload, used for start-up measurements.

fn main() {
    println!("Hello from WebAssembly in a wrun sandbox!");
}
