//! Attachments: reading files on the Mac (SFTP on the account's connection, exec `cat` when SFTP is
//! refused, or in place for a local imsg), staging inbound media into the cache before the envelope
//! leaves, uploading outbound files, and keeping the cache bounded.

pub mod cache;
pub mod files;
pub mod policy;
pub mod roots;
pub mod stage;
pub mod upload;

pub use files::{FileError, Files, Method, RemoteFiles};
pub use stage::Stager;
