//! Attachment files beside the database: where they are stored, their MIME type and UTI, how
//! `filename` is written (`~/…` under `$HOME`) and how `original_path` / `missing` are computed.

use std::path::{Path, PathBuf};

use crate::sim::SimError;
use crate::util::{expand_tilde, home_dir};

/// The MIME type and UTI Messages records for a file name, judged by its extension.
pub fn mime_and_uti(name: &str) -> (&'static str, &'static str) {
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => ("image/jpeg", "public.jpeg"),
        "png" => ("image/png", "public.png"),
        "heic" => ("image/heic", "public.heic"),
        "gif" => ("image/gif", "com.compuserve.gif"),
        "webp" => ("image/webp", "org.webmproject.webp"),
        "mp4" => ("video/mp4", "public.mpeg-4"),
        "mov" => ("video/quicktime", "com.apple.quicktime-movie"),
        "m4a" => ("audio/x-m4a", "com.apple.m4a-audio"),
        "caf" => ("audio/x-caf", "com.apple.coreaudio-format"),
        "mp3" => ("audio/mpeg", "public.mp3"),
        "pdf" => ("application/pdf", "com.adobe.pdf"),
        "txt" => ("text/plain", "public.plain-text"),
        "vcf" => ("text/vcard", "public.vcard"),
        "zip" => ("application/zip", "public.zip-archive"),
        _ => ("application/octet-stream", "public.data"),
    }
}

/// A file copied into the simulated Messages attachment store.
#[derive(Debug, Clone)]
pub struct StoredFile {
    /// The attachment guid (uppercase UUID), also the name of its folder.
    pub guid: String,
    /// What goes into `attachment.filename`: `~/…` when under `$HOME`, else absolute.
    pub filename: String,
    /// The original file name (`attachment.transfer_name`).
    pub transfer_name: String,
    pub mime_type: &'static str,
    pub uti: &'static str,
    pub total_bytes: i64,
}

/// Copy `source` to `Attachments/xx/yy/<guid>/<basename>` beside the database, like Messages lays
/// out `~/Library/Messages/Attachments`. `xx/yy` come from the guid so the layout is stable.
pub fn store(db_path: &Path, source: &Path) -> Result<StoredFile, SimError> {
    let meta = std::fs::metadata(source)
        .map_err(|_| SimError::BadInput(format!("attachment not found: {}", source.display())))?;
    if !meta.is_file() {
        return Err(SimError::BadInput(format!(
            "attachment is not a regular file: {}",
            source.display()
        )));
    }
    let transfer_name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| SimError::BadInput(format!("attachment has no file name: {}", source.display())))?;
    let guid = uuid::Uuid::new_v4().to_string().to_uppercase();
    let dir = attachments_root(db_path)?
        .join(guid[0..2].to_ascii_lowercase())
        .join(guid[2..4].to_ascii_lowercase())
        .join(&guid);
    std::fs::create_dir_all(&dir).map_err(|e| SimError::io("cannot create", &dir, e))?;
    let dest = dir.join(&transfer_name);
    let copied = std::fs::copy(source, &dest).map_err(|e| SimError::io("cannot copy to", &dest, e))?;
    let (mime_type, uti) = mime_and_uti(&transfer_name);
    Ok(StoredFile {
        guid,
        filename: contract_home(&dest),
        transfer_name,
        mime_type,
        uti,
        total_bytes: i64::try_from(copied).unwrap_or(i64::MAX),
    })
}

/// Record `path` as an attachment without copying it (`inject --attachment-ref`): the file may be
/// elsewhere, a symlink, unreadable, or not exist yet, which is what the bridge's checks are about.
pub fn reference(path: &Path) -> Result<StoredFile, SimError> {
    if !path.is_absolute() {
        return Err(SimError::BadInput(format!(
            "--attachment-ref needs an absolute path: {}",
            path.display()
        )));
    }
    let transfer_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mime_type, uti) = mime_and_uti(&transfer_name);
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(StoredFile {
        guid: uuid::Uuid::new_v4().to_string().to_uppercase(),
        filename: path.display().to_string(),
        transfer_name,
        mime_type,
        uti,
        total_bytes: i64::try_from(size).unwrap_or(i64::MAX),
    })
}

/// `Attachments/` beside the database file, as an absolute path.
pub fn attachments_root(db_path: &Path) -> Result<PathBuf, SimError> {
    let parent = match db_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = std::fs::canonicalize(&parent).map_err(|e| SimError::io("cannot resolve", &parent, e))?;
    Ok(parent.join("Attachments"))
}

/// Write a path under `$HOME` as `~/…`, the way Messages stores `attachment.filename`.
pub fn contract_home(path: &Path) -> String {
    contract_home_with(path, home_dir().as_deref())
}

fn contract_home_with(path: &Path, home: Option<&Path>) -> String {
    if let Some(home) = home
        && home != Path::new("/")
        && let Ok(rest) = path.strip_prefix(home)
    {
        return format!("~/{}", rest.display());
    }
    path.display().to_string()
}

/// `original_path`: `filename` with `~` expanded; empty when `filename` is empty.
pub fn original_path(filename: &str) -> String {
    if filename.is_empty() {
        return String::new();
    }
    expand_tilde(filename).display().to_string()
}

/// `missing`: the path is empty, does not exist, or is a directory.
pub fn is_missing(original_path: &str) -> bool {
    original_path.is_empty() || !Path::new(original_path).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_extensions_case_insensitively() {
        assert_eq!(mime_and_uti("IMG_0001.HEIC"), ("image/heic", "public.heic"));
        assert_eq!(mime_and_uti("a.jpeg"), ("image/jpeg", "public.jpeg"));
        assert_eq!(mime_and_uti("noext"), ("application/octet-stream", "public.data"));
    }

    #[test]
    fn contracts_only_paths_under_home() {
        let home = Path::new("/home/me");
        assert_eq!(
            contract_home_with(Path::new("/home/me/x/a.png"), Some(home)),
            "~/x/a.png"
        );
        assert_eq!(
            contract_home_with(Path::new("/tmp/a.png"), Some(home)),
            "/tmp/a.png"
        );
        assert_eq!(
            contract_home_with(Path::new("/tmp/a.png"), Some(Path::new("/"))),
            "/tmp/a.png"
        );
    }

    #[test]
    fn stores_a_copy_with_the_messages_layout() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("photo.png");
        std::fs::write(&src, b"png bytes").unwrap();
        let stored = store(&dir.path().join("chat.db"), &src).unwrap();
        assert_eq!(stored.transfer_name, "photo.png");
        assert_eq!(stored.mime_type, "image/png");
        assert_eq!(stored.total_bytes, 9);
        let path = original_path(&stored.filename);
        assert!(!is_missing(&path), "{path}");
        assert!(path.contains(&format!(
            "/Attachments/{}/",
            stored.guid[0..2].to_ascii_lowercase()
        )));
        assert!(path.ends_with(&format!("{}/photo.png", stored.guid)));
    }

    #[test]
    fn reports_a_missing_source_as_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let err = store(&dir.path().join("chat.db"), &dir.path().join("nope.png")).unwrap_err();
        assert!(err.to_string().starts_with("attachment not found: "), "{err}");
    }

    #[test]
    fn counts_directories_and_empty_paths_as_missing() {
        assert!(is_missing(""));
        assert!(is_missing("/"));
        assert!(is_missing("/definitely/not/here.png"));
    }
}
