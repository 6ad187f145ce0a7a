//! The `palletizer` command line.
fn main() -> std::process::ExitCode {
    palletizer::cli::main()
}
