//! Configuration: json5 loading, raw → validated in two stages, account resolution and merge.
