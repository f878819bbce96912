fn main() {
    eprintln!("gregor-perf: not built yet (issue 3)");
    std::process::exit(2);
}
