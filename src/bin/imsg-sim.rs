//! The `imsg-sim` binary: an `imsg`-compatible simulator over a SQLite chat.db.
//!
//! Everything lives in the library (`imsg_bridge::sim`) so the demo can run the same server
//! in-process; this file only hands over to its command line.

fn main() -> std::process::ExitCode {
    imsg_bridge::sim::cli::main()
}
