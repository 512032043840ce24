//! The demo server's `sftp` subsystem: SFTP v3 over this machine's real file system, enough for what
//! the bridge does on a Mac (resolve and stat attachments, read them, stage uploads in a private
//! folder and remove them). Relative paths and `realpath(".")` resolve against the demo folder, the
//! way OpenSSH's sftp-server starts in `$HOME`. Every path is confined to that folder: it is resolved
//! (symlinks included) before use, and whatever lands outside is refused (docs/security.md, "The
//! demo's SSH server").

use std::collections::{HashMap, VecDeque};
use std::io::SeekFrom;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tracing::debug;

/// Largest READ answer, as OpenSSH's sftp-server: its message limit (256 KiB) less room for the header.
const MAX_READ: u32 = 256 * 1024 - 1024;
/// Entries per READDIR answer (sftp-server sends 100).
const READDIR_BATCH: usize = 100;
/// Advertised so the client's flush makes uploads durable before `send` names them, as on a real Mac.
const FSYNC: &str = "fsync@openssh.com";

/// What a handle refers to.
enum Opened {
    File(tokio::fs::File),
    /// The listing, read whole at OPENDIR and handed out in batches.
    Dir(VecDeque<File>),
}

/// One SFTP session (one channel). Requests arrive one at a time, so plain `&mut self` state suffices.
pub struct SftpFs {
    home: PathBuf,
    handles: HashMap<String, Opened>,
    next_handle: u64,
}

impl SftpFs {
    /// Serve `home`, resolved first: confinement compares resolved paths with it.
    pub fn new(home: PathBuf) -> Self {
        Self {
            home: std::fs::canonicalize(&home).unwrap_or(home),
            handles: HashMap::new(),
            next_handle: 0,
        }
    }

    /// `path` resolved and confined to the home: absolute paths as they are, relative ones (and "")
    /// against the home, then every symlink resolved; a result outside the home is refused.
    /// [`Follow::Target`] resolves the last component too (what open, stat and mkdir act on; a path
    /// not there yet is its resolved parent plus the name); [`Follow::Link`] resolves only the parent
    /// (lstat, readlink, remove and rename act on a symlink itself, never on where it points).
    /// Blocking calls on purpose: a few lookups on the local disk, and the checked path is used at once.
    fn path(&self, path: &str, follow: Follow) -> Result<PathBuf, StatusReply> {
        let joined = self.home.join(path);
        let resolved = match (follow, joined.file_name()) {
            (Follow::Link, Some(name)) => self.parent(&joined, path)?.join(name),
            _ => match std::fs::canonicalize(&joined) {
                Ok(real) => real,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => self.missing(&joined, path, err)?,
                Err(err) => return Err(self.refusal(&joined, path, err)),
            },
        };
        if resolved.starts_with(&self.home) {
            Ok(resolved)
        } else {
            Err(denied(path))
        }
    }

    /// A path that does not resolve: its resolved parent plus the name, to be created there. A
    /// dangling symlink in its place is not: creating through it would land wherever it points.
    fn missing(&self, joined: &Path, path: &str, err: std::io::Error) -> Result<PathBuf, StatusReply> {
        let Some(name) = joined.file_name() else {
            return Err(self.refusal(joined, path, err));
        };
        let candidate = self.parent(joined, path)?.join(name);
        match std::fs::symlink_metadata(&candidate) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(candidate),
            _ => Err(denied(path)),
        }
    }

    fn parent(&self, joined: &Path, path: &str) -> Result<PathBuf, StatusReply> {
        let parent = joined.parent().unwrap_or(joined);
        std::fs::canonicalize(parent).map_err(|err| self.refusal(joined, path, err))
    }

    /// What a path that cannot be resolved gets: the OS error inside the home, but "permission
    /// denied" for one that points outside it, so nothing about the rest of the disk shows.
    fn refusal(&self, joined: &Path, path: &str, err: std::io::Error) -> StatusReply {
        if crate::util::fold_dots(joined).starts_with(&self.home) {
            io_status(err)
        } else {
            denied(path)
        }
    }

    fn insert(&mut self, opened: Opened) -> String {
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), opened);
        handle
    }

    fn file(&mut self, handle: &str) -> Result<&mut tokio::fs::File, StatusReply> {
        match self.handles.get_mut(handle) {
            Some(Opened::File(file)) => Ok(file),
            Some(Opened::Dir(_)) => Err(StatusCode::Failure.with_message("not a file handle")),
            None => Err(bad_handle()),
        }
    }
}

/// Whether the last component of a path is resolved when it is a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    Target,
    Link,
}

fn denied(path: &str) -> StatusReply {
    debug!(path = %crate::util::escape::escape_controls(path), "sftp: refused a path outside the demo folder");
    StatusCode::PermissionDenied.with_message("permission denied: outside the demo folder")
}

fn bad_handle() -> StatusReply {
    StatusCode::Failure.with_message("invalid handle")
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".into(),
        language_tag: "en".into(),
    }
}

/// The SFTP status for a failed file system call, keeping the OS message for the client's logs.
fn io_status(err: std::io::Error) -> StatusReply {
    let code = match err.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        std::io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    code.with_message(err.to_string())
}

/// Attributes as sftp-server reports them: the raw `st_mode` carries the file type bits clients test.
fn attributes(meta: &std::fs::Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(meta.len()),
        uid: Some(meta.uid()),
        gid: Some(meta.gid()),
        permissions: Some(meta.mode()),
        atime: Some(seconds(meta.atime())),
        mtime: Some(seconds(meta.mtime())),
        ..FileAttributes::default()
    }
}

/// SFTP v3 times are u32 seconds; out-of-range times are clamped rather than wrapped.
fn seconds(unix: i64) -> u32 {
    u32::try_from(unix.max(0)).unwrap_or(u32::MAX)
}

/// Only the permission bits of a requested mode; type bits in SETSTAT would be meaningless.
fn permission_bits(mode: u32) -> std::fs::Permissions {
    std::fs::Permissions::from_mode(mode & 0o7777)
}

async fn listing(path: &Path) -> std::io::Result<VecDeque<File>> {
    let mut entries = tokio::fs::read_dir(path).await?;
    let mut files = VecDeque::new();
    while let Some(entry) = entries.next_entry().await? {
        // An entry removed between READDIR and its stat is simply left out.
        let Ok(meta) = tokio::fs::symlink_metadata(entry.path()).await else {
            continue;
        };
        files.push_back(File::new(
            entry.file_name().to_string_lossy().into_owned(),
            attributes(&meta),
        ));
    }
    Ok(files)
}

impl russh_sftp::server::Handler for SftpFs {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusReply::new(StatusCode::OpUnsupported)
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        debug!(version, home = %self.home.display(), "sftp session started");
        let mut answer = Version::new();
        answer.extensions.insert(FSYNC.into(), "1".into());
        Ok(answer)
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let real = tokio::fs::canonicalize(self.path(&path, Follow::Target)?)
            .await
            .map_err(io_status)?;
        let name = real.to_string_lossy().into_owned();
        Ok(Name {
            id,
            files: vec![File {
                longname: name.clone(),
                filename: name,
                attrs: FileAttributes::default(),
            }],
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let meta = tokio::fs::metadata(self.path(&path, Follow::Target)?)
            .await
            .map_err(io_status)?;
        Ok(Attrs {
            id,
            attrs: attributes(&meta),
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let meta = tokio::fs::symlink_metadata(self.path(&path, Follow::Link)?)
            .await
            .map_err(io_status)?;
        Ok(Attrs {
            id,
            attrs: attributes(&meta),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let meta = self.file(&handle)?.metadata().await.map_err(io_status)?;
        Ok(Attrs {
            id,
            attrs: attributes(&meta),
        })
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = self.path(&filename, Follow::Target)?;
        let mut options = tokio::fs::OpenOptions::new();
        options
            .read(pflags.contains(OpenFlags::READ))
            .write(pflags.contains(OpenFlags::WRITE))
            .append(pflags.contains(OpenFlags::APPEND))
            .truncate(pflags.contains(OpenFlags::TRUNCATE))
            // sftp-server creates with the requested mode or 0666, the umask applying either way.
            .mode(attrs.permissions.map_or(0o666, |mode| mode & 0o7777));
        if pflags.contains(OpenFlags::CREATE) {
            if pflags.contains(OpenFlags::EXCLUDE) {
                options.create_new(true);
            } else {
                options.create(true);
            }
        }
        let file = options.open(&path).await.map_err(io_status)?;
        debug!(path = %path.display(), flags = pflags.bits(), "sftp open");
        Ok(Handle {
            id,
            handle: self.insert(Opened::File(file)),
        })
    }

    async fn read(&mut self, id: u32, handle: String, offset: u64, len: u32) -> Result<Data, Self::Error> {
        let file = self.file(&handle)?;
        file.seek(SeekFrom::Start(offset)).await.map_err(io_status)?;
        let want = len.min(MAX_READ) as usize;
        let mut data = vec![0u8; want];
        let mut filled = 0;
        // Fill the answer when the file has the bytes: a short read tells the client "retry from here".
        while filled < want {
            let n = file.read(&mut data[filled..]).await.map_err(io_status)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Err(StatusReply::new(StatusCode::Eof));
        }
        data.truncate(filled);
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        file.seek(SeekFrom::Start(offset)).await.map_err(io_status)?;
        file.write_all(&data).await.map_err(io_status)?;
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            // tokio finishes a write in the background; flushing surfaces its error here, not never.
            Some(Opened::File(mut file)) => file.flush().await.map_err(io_status)?,
            Some(Opened::Dir(_)) => {}
            None => return Err(bad_handle()),
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let files = listing(&self.path(&path, Follow::Target)?)
            .await
            .map_err(io_status)?;
        Ok(Handle {
            id,
            handle: self.insert(Opened::Dir(files)),
        })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let Some(Opened::Dir(rest)) = self.handles.get_mut(&handle) else {
            return Err(bad_handle());
        };
        if rest.is_empty() {
            return Err(StatusReply::new(StatusCode::Eof));
        }
        let take = rest.len().min(READDIR_BATCH);
        Ok(Name {
            id,
            files: rest.drain(..take).collect(),
        })
    }

    async fn mkdir(&mut self, id: u32, path: String, attrs: FileAttributes) -> Result<Status, Self::Error> {
        let mut builder = tokio::fs::DirBuilder::new();
        builder.mode(attrs.permissions.map_or(0o777, |mode| mode & 0o7777));
        builder
            .create(self.path(&path, Follow::Target)?)
            .await
            .map_err(io_status)?;
        Ok(ok(id))
    }

    /// Permissions only: the bridge sets nothing else, and ownership or times would need more care.
    async fn setstat(&mut self, id: u32, path: String, attrs: FileAttributes) -> Result<Status, Self::Error> {
        if let Some(mode) = attrs.permissions {
            tokio::fs::set_permissions(self.path(&path, Follow::Target)?, permission_bits(mode))
                .await
                .map_err(io_status)?;
        }
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        if let Some(mode) = attrs.permissions {
            file.set_permissions(permission_bits(mode))
                .await
                .map_err(io_status)?;
        }
        Ok(ok(id))
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        tokio::fs::remove_file(self.path(&filename, Follow::Link)?)
            .await
            .map_err(io_status)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        tokio::fs::remove_dir(self.path(&path, Follow::Link)?)
            .await
            .map_err(io_status)?;
        Ok(ok(id))
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> Result<Status, Self::Error> {
        tokio::fs::rename(
            self.path(&oldpath, Follow::Link)?,
            self.path(&newpath, Follow::Link)?,
        )
        .await
        .map_err(io_status)?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let target = tokio::fs::read_link(self.path(&path, Follow::Link)?)
            .await
            .map_err(io_status)?;
        Ok(Name {
            id,
            files: vec![File::new(
                target.to_string_lossy().into_owned(),
                FileAttributes::default(),
            )],
        })
    }

    async fn extended(&mut self, id: u32, request: String, data: Vec<u8>) -> Result<Packet, Self::Error> {
        if request != FSYNC {
            return Err(self.unimplemented());
        }
        // The request data is the handle as an SSH string: u32 length, then the bytes.
        let handle = data
            .split_first_chunk::<4>()
            .and_then(|(len, rest)| rest.get(..u32::from_be_bytes(*len) as usize))
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .ok_or_else(|| StatusReply::new(StatusCode::BadMessage))?;
        let file = self.file(&handle)?;
        file.flush().await.map_err(io_status)?;
        file.sync_all().await.map_err(io_status)?;
        Ok(Packet::Status(ok(id)))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use russh_sftp::client::SftpSession;
    use russh_sftp::client::error::Error;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client and this handler joined by an in-memory pipe instead of an SSH channel.
    async fn session(home: &Path) -> SftpSession {
        let (client, server) = tokio::io::duplex(1 << 20);
        russh_sftp::server::run(server, SftpFs::new(home.to_path_buf())).await;
        SftpSession::new(client).await.unwrap()
    }

    fn status(err: Error) -> StatusCode {
        match err {
            Error::Status(status) => status.status_code,
            other => panic!("not a status: {other}"),
        }
    }

    #[tokio::test]
    async fn resolves_dot_and_relative_paths_against_the_home() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(home.join("sub")).unwrap();
        std::fs::write(home.join("f"), b"x").unwrap();
        let sftp = session(&home).await;
        assert_eq!(sftp.canonicalize(".").await.unwrap(), home.display().to_string());
        assert_eq!(sftp.canonicalize("").await.unwrap(), home.display().to_string());
        assert_eq!(
            sftp.canonicalize("sub/../f").await.unwrap(),
            home.join("f").display().to_string()
        );
        let absolute = home.join("sub").display().to_string();
        assert_eq!(sftp.canonicalize(absolute.as_str()).await.unwrap(), absolute);
        assert_eq!(
            status(sftp.canonicalize("missing").await.unwrap_err()),
            StatusCode::NoSuchFile
        );
    }

    #[tokio::test]
    async fn writes_reads_back_and_removes_a_file_in_a_new_private_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        let sftp = session(home).await;
        sftp.create_dir("d").await.unwrap();
        let mut private = FileAttributes::empty();
        private.permissions = Some(0o700);
        sftp.set_metadata("d", private).await.unwrap();
        let mode = std::fs::metadata(home.join("d")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        // Several write and read requests, and a read answer capped below what the client asks.
        let bytes: Vec<u8> = (0..(MAX_READ as usize * 2 + 17))
            .map(|i| (i % 253) as u8)
            .collect();
        let mut file = sftp.create("d/f").await.unwrap();
        file.write_all(&bytes).await.unwrap();
        file.shutdown().await.unwrap();
        assert!(std::fs::read(home.join("d/f")).unwrap() == bytes);

        let meta = sftp.metadata("d/f").await.unwrap();
        assert!(meta.is_regular() && !meta.is_dir());
        assert_eq!(meta.len(), bytes.len() as u64);
        assert!(meta.mtime.is_some_and(|t| t > 0));
        assert!(sftp.metadata("d").await.unwrap().is_dir());

        let mut back = Vec::new();
        let mut file = sftp.open("d/f").await.unwrap();
        file.read_to_end(&mut back).await.unwrap();
        assert!(back == bytes, "read back differs");
        assert_eq!(file.metadata().await.unwrap().len(), bytes.len() as u64);
        file.shutdown().await.unwrap();

        sftp.remove_file("d/f").await.unwrap();
        sftp.remove_dir("d").await.unwrap();
        assert!(!home.join("d").exists());
    }

    #[tokio::test]
    async fn lists_a_folder_in_batches_with_file_types() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        for i in 0..(READDIR_BATCH + 20) {
            std::fs::write(home.join(format!("file{i}")), b"").unwrap();
        }
        std::fs::create_dir(home.join("sub")).unwrap();
        std::os::unix::fs::symlink("file0", home.join("link")).unwrap();
        let sftp = session(home).await;
        let entries: Vec<_> = sftp.read_dir(".").await.unwrap().collect();
        assert_eq!(entries.len(), READDIR_BATCH + 22);
        let kind = |name: &str| {
            entries
                .iter()
                .find(|e| e.file_name() == name)
                .map(|e| e.file_type())
                .unwrap()
        };
        assert!(kind("file7").is_file());
        assert!(kind("sub").is_dir());
        assert!(kind("link").is_symlink());
        assert_eq!(sftp.read_link("link").await.unwrap(), "file0");
        assert!(sftp.symlink_metadata("link").await.unwrap().is_symlink());
    }

    #[tokio::test]
    async fn refuses_every_path_that_resolves_outside_the_home() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(tmp.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(tmp.path(), home.join("up")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("gone"), home.join("dangling")).unwrap();
        let sftp = session(&home).await;
        let denied = |err| status(err) == StatusCode::PermissionDenied;
        assert!(denied(sftp.read_dir("/").await.err().unwrap()));
        assert!(denied(sftp.canonicalize("..").await.unwrap_err()));
        assert!(denied(sftp.metadata("/etc/passwd").await.unwrap_err()));
        assert!(denied(sftp.open("up/secret").await.err().unwrap()));
        assert!(denied(sftp.open("../secret").await.err().unwrap()));
        assert!(denied(sftp.create("up/new").await.err().unwrap()));
        assert!(denied(sftp.create("dangling").await.err().unwrap()));
        assert!(denied(sftp.create_dir("../made").await.unwrap_err()));
        assert!(denied(sftp.remove_file("up/secret").await.unwrap_err()));
        assert!(denied(sftp.rename("up/secret", "mine").await.unwrap_err()));
        assert!(denied(sftp.read_dir("/no/such/dir").await.err().unwrap()));
        assert!(!tmp.path().join("gone").exists() && !tmp.path().join("made").exists());
        assert!(tmp.path().join("secret").exists());
        // The links themselves are in the home: they can be looked at and removed.
        assert!(sftp.symlink_metadata("up").await.unwrap().is_symlink());
        sftp.remove_file("dangling").await.unwrap();
        assert_eq!(
            status(sftp.metadata("missing").await.unwrap_err()),
            StatusCode::NoSuchFile
        );
    }

    #[tokio::test]
    async fn answers_missing_paths_with_no_such_file() {
        let tmp = tempfile::tempdir().unwrap();
        let sftp = session(tmp.path()).await;
        assert_eq!(
            status(sftp.metadata("nope").await.unwrap_err()),
            StatusCode::NoSuchFile
        );
        assert_eq!(
            status(sftp.open("nope").await.err().unwrap()),
            StatusCode::NoSuchFile
        );
        assert_eq!(
            status(sftp.remove_file("nope").await.unwrap_err()),
            StatusCode::NoSuchFile
        );
        assert_eq!(
            status(sftp.read_dir("nope").await.err().unwrap()),
            StatusCode::NoSuchFile
        );
        assert!(!sftp.try_exists("nope").await.unwrap());
    }
}
