//! The pairing store proper: `imessage-pairing.json` (pending requests of every account) and
//! `imessage-<account>-allowFrom.json` (approved sender ids), read and rewritten in OpenClaw's format.

use std::collections::HashSet;
use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::{debug, warn};

use super::lock::FileLock;
use super::{CHANNEL, CODE_ALPHABET, CODE_LENGTH, MAX_PENDING, PENDING_TTL, PairingError};
use crate::config::DEFAULT_ACCOUNT_ID;
use crate::state::FileError;
use crate::util::{atomic_write, lock};

/// How many random codes to try before giving up on uniqueness (as upstream).
const CODE_TRIES: usize = 500;

/// Where pairing codes come from. Production uses [`OsRandom`]; tests pass a closure.
pub trait Random: Send {
    fn next_u32(&mut self) -> Result<u32, PairingError>;
}

/// The operating system's cryptographic random source: a code is a secret that admits its holder.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    fn next_u32(&mut self) -> Result<u32, PairingError> {
        getrandom::u32().map_err(|e| PairingError::Random(e.to_string()))
    }
}

impl<F: FnMut() -> u32 + Send> Random for F {
    fn next_u32(&mut self) -> Result<u32, PairingError> {
        Ok(self())
    }
}

/// One pending request as stored in `imessage-pairing.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The sender id (the normalised handle) that asked.
    pub id: String,
    pub code: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// String values; always carries `accountId` once we wrote it.
    pub meta: Map<String, Value>,
    /// Keys we do not know, kept so that rewriting does not drop what a newer OpenClaw wrote.
    extra: Map<String, Value>,
}

impl Request {
    /// The account the request belongs to (`meta.accountId`, lowercased; `default` when absent).
    pub fn account(&self) -> String {
        self.meta
            .get("accountId")
            .and_then(Value::as_str)
            .map(account_key)
            .unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_owned())
    }

    /// `None` for entries that cannot be a live request: not an object, no string id or code, or a
    /// `createdAt` that does not parse (upstream prunes those as expired).
    fn from_json(value: &Value) -> Option<Self> {
        let mut object = value.as_object()?.clone();
        let id = object.remove("id")?.as_str()?.trim().to_owned();
        let code = object.remove("code")?.as_str()?.trim().to_owned();
        let created_at = parse_time(&object.remove("createdAt")?)?;
        // Eviction falls back to createdAt when lastSeenAt is unreadable, as upstream does.
        let last_seen_at = object
            .remove("lastSeenAt")
            .and_then(|v| parse_time(&v))
            .unwrap_or(created_at);
        let meta = match object.remove("meta") {
            Some(Value::Object(meta)) => meta,
            _ => Map::new(),
        };
        Some(Self {
            id,
            code,
            created_at,
            last_seen_at,
            meta,
            extra: object,
        })
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        now.signed_duration_since(self.created_at)
            .to_std()
            .is_ok_and(|age| age > PENDING_TTL)
    }
}

/// The request as it appears in the file (and in `pairing list --json`), fields in OpenClaw's order.
impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Stored<'a> {
            id: &'a str,
            code: &'a str,
            created_at: String,
            last_seen_at: String,
            #[serde(skip_serializing_if = "Map::is_empty")]
            meta: &'a Map<String, Value>,
            #[serde(flatten)]
            extra: &'a Map<String, Value>,
        }
        Stored {
            id: &self.id,
            code: &self.code,
            created_at: iso(self.created_at),
            last_seen_at: iso(self.last_seen_at),
            meta: &self.meta,
            extra: &self.extra,
        }
        .serialize(serializer)
    }
}

/// `imessage-pairing.json`.
#[derive(Serialize)]
struct PairingFile<'a> {
    version: u32,
    requests: &'a [Request],
}

/// `imessage-<account>-allowFrom.json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AllowFile<'a> {
    version: u32,
    allow_from: &'a [String],
}

/// The outcome of [`PairingStore::upsert_request`]. Reply to the sender only when `created`; an
/// empty `code` means the account already has [`MAX_PENDING`] requests and the sender gets nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upsert {
    pub code: String,
    pub created: bool,
}

/// The outcome of [`PairingStore::approve`]: who was admitted, to which account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub id: String,
    pub account: String,
}

/// Pending requests and approvals under `stateDir/credentials/`.
pub struct PairingStore {
    dir: PathBuf,
    random: Mutex<Box<dyn Random>>,
}

impl fmt::Debug for PairingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl PairingStore {
    /// The store of `state_dir`, drawing codes from the operating system's random source.
    pub fn new(state_dir: &Path) -> Self {
        Self::with_random(state_dir, OsRandom)
    }

    /// The same with another source of randomness (deterministic tests).
    pub fn with_random(state_dir: &Path, random: impl Random + 'static) -> Self {
        Self {
            dir: state_dir.join("credentials"),
            random: Mutex::new(Box::new(random)),
        }
    }

    /// `stateDir/credentials/imessage-pairing.json`.
    pub fn pairing_path(&self) -> PathBuf {
        self.dir.join(format!("{CHANNEL}-pairing.json"))
    }

    /// `stateDir/credentials/imessage-<account>-allowFrom.json`.
    pub fn allow_path(&self, account: &str) -> PathBuf {
        self.dir
            .join(format!("{CHANNEL}-{}-allowFrom.json", account_key(account)))
    }

    /// The channel-wide file of older OpenClaw versions; still read for the default account.
    pub fn legacy_allow_path(&self) -> PathBuf {
        self.dir.join(format!("{CHANNEL}-allowFrom.json"))
    }

    /// Record that `sender_id` asked for access to `account` and return its code (see [`Upsert`]).
    /// `meta` values are stored as trimmed strings (empty ones dropped) plus `accountId`.
    pub fn upsert_request(
        &self,
        account: &str,
        sender_id: &str,
        meta: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Upsert, PairingError> {
        let account = account_key(account);
        let id = sender_id.trim();
        if id.is_empty() {
            return Err(PairingError::EmptySender);
        }
        let mut meta = clean_meta(meta);
        meta.insert("accountId".into(), json!(account));

        let path = self.pairing_path();
        self.ensure_dir()?;
        let _lock = FileLock::acquire(&path)?;
        let (mut requests, mut changed) = load_live(&path, now)?;
        let codes: HashSet<String> = requests.iter().map(|r| r.code.to_uppercase()).collect();

        if let Some(existing) = requests.iter_mut().find(|r| r.id == id && r.account() == account) {
            // Same sender again within the hour: same code, no second reply.
            if existing.code.is_empty() {
                existing.code = self.unique_code(&codes)?;
            }
            existing.last_seen_at = now;
            existing.meta = meta;
            let code = existing.code.clone();
            cap_pending(&mut requests, &account);
            write_requests(&path, &requests)?;
            debug!(account, sender = id, code, "pairing request seen again");
            return Ok(Upsert { code, created: false });
        }

        changed |= cap_pending(&mut requests, &account);
        if pending_of(&requests, &account) >= MAX_PENDING {
            if changed {
                write_requests(&path, &requests)?;
            }
            debug!(
                account,
                sender = id,
                "pairing request not created: {MAX_PENDING} already pending"
            );
            return Ok(Upsert {
                code: String::new(),
                created: false,
            });
        }
        let code = self.unique_code(&codes)?;
        requests.push(Request {
            id: id.to_owned(),
            code: code.clone(),
            created_at: now,
            last_seen_at: now,
            meta,
            extra: Map::new(),
        });
        write_requests(&path, &requests)?;
        debug!(account, sender = id, code, "pairing request created");
        Ok(Upsert { code, created: true })
    }

    /// The pending requests (of `account`, or of every account), oldest first. Expired and excess
    /// requests are pruned from the file on the way.
    pub fn list(&self, account: Option<&str>, now: DateTime<Utc>) -> Result<Vec<Request>, PairingError> {
        let path = self.pairing_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let _lock = FileLock::acquire(&path)?;
        let (mut requests, mut changed) = load_live(&path, now)?;
        let accounts: HashSet<String> = requests.iter().map(Request::account).collect();
        for each in &accounts {
            changed |= cap_pending(&mut requests, each);
        }
        if changed {
            write_requests(&path, &requests)?;
        }
        if let Some(account) = account.map(account_key) {
            requests.retain(|r| r.account() == account);
        }
        requests.sort_by_key(|r| r.created_at);
        Ok(requests)
    }

    /// Approve the request with `code` (any case; only of `account` when given): the sender id is
    /// added to the account's allowFrom file and the request removed.
    pub fn approve(
        &self,
        code: &str,
        account: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Approved, PairingError> {
        let unknown = || PairingError::UnknownCode(code.to_owned());
        let wanted = code.trim().to_uppercase();
        let path = self.pairing_path();
        if wanted.is_empty() || !path.exists() {
            return Err(unknown());
        }
        let account = account.map(account_key);
        let _lock = FileLock::acquire(&path)?;
        let (mut requests, changed) = load_live(&path, now)?;
        let found = requests.iter().position(|r| {
            r.code.to_uppercase() == wanted && account.as_ref().is_none_or(|a| *a == r.account())
        });
        let Some(index) = found else {
            if changed {
                write_requests(&path, &requests)?;
            }
            return Err(unknown());
        };
        let request = requests.remove(index);
        let account = account.unwrap_or_else(|| request.account());
        // Admit first, then forget the request: a crash in between leaves a harmless stale request
        // rather than an approval that was lost.
        self.add_allowed(&account, &request.id)?;
        write_requests(&path, &requests)?;
        debug!(account, sender = request.id, "pairing request approved");
        Ok(Approved {
            id: request.id,
            account,
        })
    }

    /// The approved sender ids of `account` (with the legacy channel-wide file for `default`).
    /// Unreadable or corrupt files are logged and admit nobody. Reads the files on every call, so
    /// approvals made by another process count at once; the files are small.
    pub fn allowed(&self, account: &str) -> Vec<String> {
        let mut out = Vec::new();
        for path in self.allow_paths(account) {
            match read_allow(&path) {
                Ok(entries) => out.extend(entries),
                Err(err) => warn!("pairing approvals ignored: {err}"),
            }
        }
        dedupe(out)
    }

    /// [`Self::allowed`], failing on the first unreadable or corrupt file.
    pub fn try_allowed(&self, account: &str) -> Result<Vec<String>, PairingError> {
        let mut out = Vec::new();
        for path in self.allow_paths(account) {
            out.extend(read_allow(&path)?);
        }
        Ok(dedupe(out))
    }

    fn allow_paths(&self, account: &str) -> Vec<PathBuf> {
        let mut paths = vec![self.allow_path(account)];
        if account_key(account) == DEFAULT_ACCOUNT_ID {
            paths.push(self.legacy_allow_path());
        }
        paths
    }

    /// Append `id` to the account's allowFrom file unless it is there already.
    fn add_allowed(&self, account: &str, id: &str) -> Result<(), PairingError> {
        let path = self.allow_path(account);
        self.ensure_dir()?;
        let _lock = FileLock::acquire(&path)?;
        let mut entries = read_allow(&path)?;
        if entries.iter().any(|e| e == id) {
            return Ok(());
        }
        entries.push(id.to_owned());
        write_json(
            &path,
            &AllowFile {
                version: 1,
                allow_from: &entries,
            },
        )
    }

    fn unique_code(&self, existing: &HashSet<String>) -> Result<String, PairingError> {
        let mut random = lock(&self.random);
        for _ in 0..CODE_TRIES {
            let mut code = String::with_capacity(CODE_LENGTH);
            for _ in 0..CODE_LENGTH {
                let index = random.next_u32()? as usize % CODE_ALPHABET.len();
                code.push(char::from(CODE_ALPHABET[index]));
            }
            if !existing.contains(&code) {
                return Ok(code);
            }
        }
        Err(PairingError::NoUniqueCode)
    }

    /// The credentials directory, private to the gateway user like OpenClaw makes it.
    fn ensure_dir(&self) -> Result<(), PairingError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(FileError::writing(&self.dir))?;
        Ok(())
    }
}

/// The account id as it appears in file names and `meta.accountId`: lowercased, without characters
/// that could leave the directory; blank means `default`.
fn account_key(raw: &str) -> String {
    let key = raw
        .trim()
        .to_lowercase()
        .replace(['\\', '/', ':', '*', '?', '"', '<', '>', '|'], "_")
        .replace("..", "_");
    if key.is_empty() {
        DEFAULT_ACCOUNT_ID.to_owned()
    } else {
        key
    }
}

fn clean_meta(meta: Map<String, Value>) -> Map<String, Value> {
    meta.into_iter()
        .filter_map(|(key, value)| {
            let text = match value {
                Value::Null => return None,
                Value::String(s) => s.trim().to_owned(),
                other => other.to_string(),
            };
            (!text.is_empty()).then_some((key, Value::String(text)))
        })
        .collect()
}

fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// ISO-8601 (what OpenClaw writes) or epoch milliseconds.
fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .and_then(DateTime::from_timestamp_millis),
        _ => None,
    }
}

fn pending_of(requests: &[Request], account: &str) -> usize {
    requests.iter().filter(|r| r.account() == account).count()
}

/// Evict the least recently seen requests of `account` beyond [`MAX_PENDING`]; true when any went.
fn cap_pending(requests: &mut Vec<Request>, account: &str) -> bool {
    let mut changed = false;
    while pending_of(requests, account) > MAX_PENDING {
        let oldest = requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.account() == account)
            .min_by_key(|(_, r)| r.last_seen_at)
            .map(|(i, _)| i);
        match oldest {
            Some(index) => {
                requests.remove(index);
                changed = true;
            }
            None => break,
        }
    }
    changed
}

/// The requests of the pairing file that are still live, and whether any were pruned.
fn load_live(path: &Path, now: DateTime<Utc>) -> Result<(Vec<Request>, bool), PairingError> {
    let Some(file) = read_json(path)? else {
        return Ok((Vec::new(), false));
    };
    let raw = match file.get("requests") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(corrupt(path, "\"requests\" is not a list")),
    };
    let live: Vec<Request> = raw
        .iter()
        .filter_map(Request::from_json)
        .filter(|r| !r.expired(now))
        .collect();
    let pruned = live.len() != raw.len();
    Ok((live, pruned))
}

fn write_requests(path: &Path, requests: &[Request]) -> Result<(), PairingError> {
    write_json(path, &PairingFile { version: 1, requests })
}

/// The entries of an allowFrom file: trimmed, non-empty, never `*` (an approval admits one sender,
/// and upstream ignores a wildcard here too), duplicates removed.
fn read_allow(path: &Path) -> Result<Vec<String>, PairingError> {
    let Some(file) = read_json(path)? else {
        return Ok(Vec::new());
    };
    let items = match file.get("allowFrom") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(corrupt(path, "\"allowFrom\" is not a list")),
    };
    let entries = items.iter().filter_map(|item| match item {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    Ok(dedupe(entries.filter(|e| !e.is_empty() && e != "*").collect()))
}

fn dedupe(entries: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    entries.into_iter().filter(|e| seen.insert(e.clone())).collect()
}

/// The top-level object of a store file; `None` when the file does not exist or is blank.
/// A file we cannot understand is an error rather than "empty": rewriting it would lose approvals.
fn read_json(path: &Path) -> Result<Option<Map<String, Value>>, PairingError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(FileError::reading(path)(source).into()),
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let object = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(corrupt(path, "not a JSON object")),
        Err(err) => return Err(corrupt(path, &err.to_string())),
    };
    match object.get("version") {
        None => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => return Err(corrupt(path, &format!("unsupported version {v}"))),
    }
    Ok(Some(object))
}

/// Pretty JSON with a final newline, as OpenClaw writes it; owner-only like OpenClaw's files.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), PairingError> {
    use std::os::unix::fs::PermissionsExt;
    let write_err = FileError::writing(path);
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| write_err(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    atomic_write(path, &bytes).map_err(&write_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(&write_err)?;
    Ok(())
}

fn corrupt(path: &Path, detail: &str) -> PairingError {
    PairingError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.to_owned(),
    }
}
