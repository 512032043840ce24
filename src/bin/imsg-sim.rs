//! The `imsg-sim` binary: an `imsg`-compatible simulator over a SQLite chat.db.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
