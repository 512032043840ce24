//! The `imsg`-compatible simulator over a SQLite file with Apple's chat.db schema.
