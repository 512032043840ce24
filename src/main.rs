//! The `imsg-bridge` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    imsg_bridge::cli::main()
}
