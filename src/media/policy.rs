//! Pure attachment rules: is a path inside the attachment roots (docs/attachments.md), what local name a
//! remote file gets in the cache, its MIME type, and the `<media:…>` placeholder (docs/attachments.md).

use std::collections::HashSet;
use std::path::Path;

/// Longest local file name we write, in bytes (APFS and ext4 allow 255; leave room for suffixes).
const MAX_NAME_BYTES: usize = 120;

/// POSIX-normalise an absolute path: `\` → `/`, empty and `.` segments dropped, `..` applied.
/// None for relative paths, NUL bytes, or `/` alone.
pub fn normalize(path: &str) -> Option<Vec<String>> {
    let value = path.trim().replace('\\', "/");
    if value.contains('\0') || !value.starts_with('/') {
        return None;
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in value.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s.to_string()),
        }
    }
    (!segments.is_empty()).then_some(segments)
}

/// Whether `path` lies under one of `roots` (normalised patterns; `*` matches one whole segment).
pub fn in_roots(path: &str, roots: &[String]) -> bool {
    let Some(candidate) = normalize(path) else {
        return false;
    };
    roots.iter().any(|root| {
        let Some(pattern) = normalize(root) else {
            return false;
        };
        candidate.len() >= pattern.len()
            && pattern
                .iter()
                .zip(&candidate)
                .all(|(want, have)| want == "*" || want == have)
    })
}

/// A file name that is safe to create in a cache directory: no separators, no control characters,
/// no characters that reorder the text shown after them (they are dropped), no leading dot, at most `MAX_NAME_BYTES`, never empty, and unique within `taken` (`name-1.ext`,
/// `name-2.ext`, … on collision, as upstream names duplicates within one message).
pub fn safe_name(raw: &str, taken: &mut HashSet<String>) -> String {
    // The last path component only: `../../x` names `x`.
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut cleaned: String = last
        .chars()
        .filter(|c| !crate::util::escape::reorders_text(*c))
        .map(|c| if c.is_control() || c == ':' { '_' } else { c })
        .collect();
    let trimmed = cleaned.trim_start_matches(['.', ' ']).trim_end().to_string();
    cleaned = if trimmed.is_empty() {
        "attachment".to_string()
    } else {
        trimmed
    };
    let (stem, ext) = split_ext(&cleaned);
    let stem = truncate_bytes(stem, MAX_NAME_BYTES.saturating_sub(ext.len() + 8));
    let ext = truncate_bytes(ext, 16);
    let mut name = format!("{stem}{ext}");
    let mut n = 1;
    while !taken.insert(name.to_lowercase()) {
        name = format!("{stem}-{n}{ext}");
        n += 1;
    }
    name
}

/// `("photo", ".jpg")`; a name without an extension (or only a leading dot) has `""`.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 && i < name.len() - 1 => name.split_at(i),
        _ => (name, ""),
    }
}

fn truncate_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// imsg's `mime_type` when it is a real type, else a guess from the extension.
pub fn mime_for(name: &str, imsg_mime: &str) -> String {
    let given = imsg_mime.trim();
    if !given.is_empty() && given.contains('/') && given != "application/octet-stream" {
        return given.to_string();
    }
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let guessed = match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "webp" => "image/webp",
        "tif" | "tiff" => "image/tiff",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "m4a" => "audio/x-m4a",
        "caf" => "audio/x-caf",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "amr" => "audio/amr",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "vcf" => "text/vcard",
        "json" => "application/json",
        "zip" => "application/zip",
        "pkpass" => "application/vnd.apple.pkpass",
        _ if !given.is_empty() => given,
        _ => "application/octet-stream",
    };
    guessed.to_string()
}

/// The body placeholder of a message with media and no text, from the first kept attachment's MIME
/// (docs/attachments.md): `<media:image|audio|video|document>`, else `<media:attachment>`.
pub fn placeholder(first_mime: &str) -> String {
    let mime = first_mime
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let kind = match mime.split_once('/') {
        Some(("image", _)) => "image",
        Some(("audio", _)) => "audio",
        Some(("video", _)) => "video",
        Some(("text", _)) | Some(("application", _)) => "document",
        _ => "attachment",
    };
    format!("<media:{kind}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "/Users/*/Library/Messages/Attachments";

    #[test]
    fn matches_paths_under_the_roots_by_whole_segments() {
        let roots = vec![DEFAULT.to_string(), "/srv/media".to_string()];
        let cases = [
            ("/Users/bot/Library/Messages/Attachments/ab/01/X/photo.jpg", true),
            ("/Users/bot/Library/Messages/Attachments", true),
            ("/srv/media/a.png", true),
            ("/srv/media2/a.png", false),
            ("/Users/bot/Library/Messages/AttachmentsX/a.png", false),
            (
                "/Users/bot/Library/Messages/Attachments/../../../etc/passwd",
                false,
            ),
            ("/Users/bot/Library/Messages/Attachments/./a/../b.jpg", true),
            ("/Users/Library/Messages/Attachments/a.jpg", false),
            ("relative/Library/Messages/Attachments/a.jpg", false),
            ("/srv/media\0/a", false),
            ("\\srv\\media\\a.png", true),
            ("", false),
        ];
        for (path, expected) in cases {
            assert_eq!(in_roots(path, &roots), expected, "{path:?}");
        }
    }

    #[test]
    fn makes_safe_unique_names() {
        let mut taken = HashSet::new();
        let cases = [
            ("photo.jpg", "photo.jpg"),
            ("photo.jpg", "photo-1.jpg"),
            ("PHOTO.jpg", "PHOTO-2.jpg"),
            ("../../x", "x"),
            ("..\\..\\evil.exe", "evil.exe"),
            (".hidden", "hidden"),
            ("...", "attachment"),
            ("", "attachment-1"),
            ("a\u{7}b\nc.txt", "a_b_c.txt"),
            ("dir/", "attachment-2"),
            ("rés umé.pdf", "rés umé.pdf"),
            ("invoice\u{202E}fdp.exe", "invoicefdp.exe"),
            ("\u{2066}a\u{2069}\u{200F}b\u{061C}.png", "ab.png"),
        ];
        for (raw, expected) in cases {
            assert_eq!(safe_name(raw, &mut taken), expected, "{raw:?}");
        }
        let long = format!("{}.jpeg", "é".repeat(200));
        let name = safe_name(&long, &mut taken);
        assert!(name.len() <= MAX_NAME_BYTES && name.ends_with(".jpeg"), "{name}");
    }

    #[test]
    fn prefers_imsgs_mime_and_guesses_from_the_extension_otherwise() {
        assert_eq!(mime_for("x.bin", "image/png"), "image/png");
        assert_eq!(mime_for("IMG_1.HEIC", ""), "image/heic");
        assert_eq!(mime_for("a.pdf", "application/octet-stream"), "application/pdf");
        assert_eq!(mime_for("noext", ""), "application/octet-stream");
        assert_eq!(mime_for("noext", "application/x-custom"), "application/x-custom");
    }

    #[test]
    fn derives_the_placeholder_from_the_first_mime() {
        let cases = [
            ("image/jpeg", "<media:image>"),
            ("IMAGE/PNG; q=1", "<media:image>"),
            ("audio/x-m4a", "<media:audio>"),
            ("video/quicktime", "<media:video>"),
            ("application/pdf", "<media:document>"),
            ("text/vcard", "<media:document>"),
            ("application/zip", "<media:document>"),
            ("", "<media:attachment>"),
            ("weird", "<media:attachment>"),
        ];
        for (mime, expected) in cases {
            assert_eq!(placeholder(mime), expected, "{mime:?}");
        }
    }
}
