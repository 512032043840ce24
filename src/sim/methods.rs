//! The request/response methods of `imsg rpc` (everything but the watch): parameter validation with
//! imsg's messages, then a query on the blocking pool, then the JSON result.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::sim::params::Params;
use crate::sim::protocol::RpcError;
use crate::sim::query::{self, BuildOptions, ChatCache, ChatKey, HistoryFilter};
use crate::sim::rpc::Backend;
use crate::sim::time::{iso, iso_from_apple_ns, parse_iso_to_apple_ns};
use crate::sim::{Dialect, send, shapes};

/// The version `status` reports: the imsg release whose protocol the strict mode follows.
pub const EMULATED_IMSG_VERSION: &str = "0.15.10";

/// Methods of the strict (protocol v1) server, as `status.supported_methods` lists them.
pub const STRICT_METHODS: &[&str] = &[
    "initialize",
    "status",
    "watch.unsubscribe",
    "chats.list",
    "chats.get",
    "messages.history",
    "messages.search",
    "messages.after",
    "watch.subscribe",
    "message.send_status",
    "send",
];

/// Methods of the 0.9-era server that the simulator implements.
pub const BASELINE_METHODS: &[&str] = &[
    "chats.list",
    "messages.history",
    "watch.subscribe",
    "watch.unsubscribe",
    "send",
];

/// Strict methods that work without the database.
const NO_DB_METHODS: &[&str] = &["initialize", "status", "watch.unsubscribe"];

const BRIDGE_NOT_STARTED: &str =
    "The bridge is not started. Run imsg launch explicitly before using bridge methods.";

/// True when `method` exists in this dialect.
pub fn is_supported(method: &str, dialect: Dialect) -> bool {
    match dialect {
        Dialect::Strict => STRICT_METHODS.contains(&method),
        Dialect::Baseline => BASELINE_METHODS.contains(&method),
    }
}

/// Run one method (not `watch.*`, which need the client session).
pub(crate) async fn call(
    backend: &Arc<Backend>,
    method: &str,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    if !is_supported(method, backend.dialect) || method.starts_with("watch.") {
        return Err(RpcError::method_not_found(method));
    }
    let p = Params::new(method, params, backend.dialect)?;
    match method {
        "initialize" => initialize(backend, &p).await,
        "status" => {
            p.allow(&[])?;
            Ok(status(backend).await)
        }
        "chats.list" => chats_list(backend, &p).await,
        "chats.get" => chats_get(backend, &p).await,
        "messages.history" => messages_history(backend, &p).await,
        "messages.after" => messages_after(backend, &p).await,
        "messages.search" => messages_search(backend, &p).await,
        "message.send_status" => send_status(backend, &p).await,
        "send" => send::send(backend, &p).await,
        _ => Err(RpcError::method_not_found(method)),
    }
}

async fn initialize(backend: &Arc<Backend>, p: &Params) -> Result<Value, RpcError> {
    p.allow(&["protocol_version"])?;
    if let Some(v) = p.int("protocol_version")?
        && v != 1
    {
        return Err(RpcError::invalid_params(format!(
            "unsupported protocol_version {v}; this server speaks protocol 1"
        )));
    }
    Ok(status(backend).await)
}

/// `status`: version, database readiness and features, methods usable now and compiled in.
async fn status(backend: &Arc<Backend>) -> Value {
    let path = backend.pool.path().display().to_string();
    let features = backend.pool.run(|c| Ok(query::schema_features(c)?)).await;
    let (database, ready) = match features {
        Ok(features) => (json!({"path": path, "ready": true, "features": features}), true),
        Err(e) => {
            let error = if e.is_unavailable() {
                format!(
                    "{e}. Grant Full Disk Access to the app that runs imsg (System Settings > Privacy & \
                     Security > Full Disk Access), then retry."
                )
            } else {
                e.to_string()
            };
            (json!({"path": path, "ready": false, "error": error}), false)
        }
    };
    let methods: Vec<&str> = STRICT_METHODS
        .iter()
        .copied()
        .filter(|m| ready || NO_DB_METHODS.contains(m))
        .collect();
    json!({
        "version": EMULATED_IMSG_VERSION,
        "protocol_version": 1,
        "database": database,
        "bridge": {"ready": false, "error": BRIDGE_NOT_STARTED},
        "contacts": {"available": false},
        "methods": methods,
        "supported_methods": STRICT_METHODS,
        "capabilities": {
            "engine": {"version": EMULATED_IMSG_VERSION, "commit": "imsg-sim", "simulator": env!("CARGO_PKG_VERSION")},
            "features": {},
        },
    })
}

/// A required positive `chat_id` (strict) or any integer `chat_id` (baseline).
pub(crate) fn required_chat_id(p: &Params) -> Result<i64, RpcError> {
    let id = p
        .int("chat_id")?
        .ok_or_else(|| RpcError::invalid_params("chat_id is required"))?;
    positive_chat_id(p, id)
}

fn positive_chat_id(p: &Params, id: i64) -> Result<i64, RpcError> {
    if p.dialect().is_strict() && id <= 0 {
        return Err(RpcError::invalid_params("chat_id must be a positive integer"));
    }
    Ok(id)
}

/// An optional chat filter.
pub(crate) fn optional_chat_id(p: &Params) -> Result<Option<i64>, RpcError> {
    p.int("chat_id")?.map(|id| positive_chat_id(p, id)).transpose()
}

/// A `limit`: default when absent; strict rejects values outside `1..=max`, baseline clamps them.
fn limit(p: &Params, default: i64, max: Option<i64>) -> Result<i64, RpcError> {
    let Some(n) = p.int("limit")? else {
        return Ok(default);
    };
    let upper = max.unwrap_or(i64::MAX);
    if p.dialect().is_strict() && !(1..=upper).contains(&n) {
        return Err(RpcError::invalid_params(match max {
            Some(max) => format!("limit must be between 1 and {max}"),
            None => "limit must be a positive integer".to_string(),
        }));
    }
    Ok(n.clamp(1, upper))
}

/// An ISO-8601 date parameter in Apple nanoseconds; a bad date is `-32602` (strict) or `-32603`
/// (baseline), with imsg's `Invalid ISO8601 date: <v>`.
pub(crate) fn date_param(p: &Params, key: &str) -> Result<Option<i64>, RpcError> {
    let Some(raw) = p.string(key)? else {
        return Ok(None);
    };
    if raw.is_empty() && !p.dialect().is_strict() {
        return Ok(None);
    }
    parse_iso_to_apple_ns(&raw)
        .map(Some)
        .map_err(|detail| match p.dialect() {
            Dialect::Strict => RpcError::invalid_params(detail),
            Dialect::Baseline => RpcError::internal(detail),
        })
}

async fn chats_list(backend: &Arc<Backend>, p: &Params) -> Result<Value, RpcError> {
    p.allow(&["limit", "unread_only", "unreadOnly"])?;
    let limit = limit(p, 20, None)?;
    let unread_only = match backend.dialect {
        Dialect::Strict => p.bool_any(&["unread_only", "unreadOnly"])?.unwrap_or(false),
        Dialect::Baseline => false,
    };
    let dialect = backend.dialect;
    let chats = backend
        .pool
        .run(move |c| Ok(query::list_chats(c, limit, unread_only)?))
        .await
        .map_err(|e| backend.db_error(e))?;
    let chats: Vec<Value> = chats.iter().map(|c| shapes::chat_json(c, dialect)).collect();
    Ok(json!({ "chats": chats }))
}

async fn chats_get(backend: &Arc<Backend>, p: &Params) -> Result<Value, RpcError> {
    p.allow(&["chat_id"])?;
    let id = required_chat_id(p)?;
    let chat = backend
        .pool
        .run(move |c| Ok(query::chat_info(c, ChatKey::Id(id))?))
        .await
        .map_err(|e| backend.db_error(e))?;
    chat.map(|info| shapes::group_json(&info))
        .ok_or_else(|| RpcError::invalid_params(format!("Chat not found: {id}")))
}

async fn messages_history(backend: &Arc<Backend>, p: &Params) -> Result<Value, RpcError> {
    p.allow(&[
        "chat_id",
        "limit",
        "participants",
        "start",
        "end",
        "attachments",
        "convert_attachments",
    ])?;
    let filter = HistoryFilter {
        chat_id: required_chat_id(p)?,
        limit: limit(p, 50, None)?,
        participants: p.strings("participants")?.filter(|v| !v.is_empty()),
        start: date_param(p, "start")?,
        end: date_param(p, "end")?,
    };
    let opts = BuildOptions {
        attachments: p.bool("attachments")?.unwrap_or(false),
        reactions: true,
        dialect: backend.dialect,
    };
    // Accepted for compatibility; the simulator has no ffmpeg conversion (converted_* never appear).
    p.bool("convert_attachments")?;
    let messages = backend
        .pool
        .run(move |c| {
            let rows = query::history(c, &filter)?;
            Ok(query::build_messages(c, &rows, opts, &mut ChatCache::default())?)
        })
        .await
        .map_err(|e| backend.db_error(e))?;
    Ok(json!({ "messages": messages }))
}

async fn messages_after(backend: &Arc<Backend>, p: &Params) -> Result<Value, RpcError> {
    p.allow(&[
        "since_rowid",
        "chat_id",
        "limit",
        "attachments",
        "convert_attachments",
        "include_reactions",
    ])?;
    let since = p
        .int("since_rowid")?
        .ok_or_else(|| RpcError::invalid_params("since_rowid is required"))?;
    if since < 0 {
        return Err(RpcError::invalid_params(
            "since_rowid must be a non-negative integer",
        ));
    }
    let chat_id = optional_chat_id(p)?;
    let limit = limit(p, 100, Some(500))?;
    let include_reactions = p.bool("include_reactions")?.unwrap_or(false);
    let opts = BuildOptions {
        attachments: p.bool("attachments")?.unwrap_or(false),
        reactions: true,
        dialect: backend.dialect,
    };
    p.bool("convert_attachments")?;
    backend
        .pool
        .run(move |c| {
            // Scan one row past the page to learn whether more follow.
            let mut rows = query::rows_after(c, since, chat_id, false, limit + 1)?;
            let has_more = rows.len() as i64 > limit;
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            // The cursor is physical: it passes tapbacks and unjoined rows that are not returned.
            let next_rowid = rows.last().map_or(since, |r| r.rowid);
            rows.retain(|r| r.chat_id.is_some() && (include_reactions || r.tapback().is_none()));
            let messages = query::build_messages(c, &rows, opts, &mut ChatCache::default())?;
            Ok(json!({"messages": messages, "next_rowid": next_rowid, "has_more": has_more}))
        })
        .await
        .map_err(|e| backend.db_error(e))
}

async fn messages_search(backend: &Arc<Backend>, p: &Params) -> Result<Value, RpcError> {
    p.allow(&["query", "match", "limit"])?;
    let text = p
        .string("query")?
        .filter(|q| !q.is_empty())
        .ok_or_else(|| RpcError::invalid_params("query is required"))?;
    let exact = match p.string("match")?.as_deref() {
        None | Some("contains") => false,
        Some("exact") => true,
        Some(other) => {
            return Err(RpcError::invalid_params(format!(
                "match must be contains or exact, not {other}"
            )));
        }
    };
    let limit = limit(p, 50, Some(100))?;
    let opts = BuildOptions {
        attachments: false,
        reactions: false,
        dialect: backend.dialect,
    };
    let messages = backend
        .pool
        .run(move |c| {
            let rows = query::search(c, &text, exact, limit)?;
            Ok(query::build_messages(c, &rows, opts, &mut ChatCache::default())?)
        })
        .await
        .map_err(|e| backend.db_error(e))?;
    Ok(json!({ "messages": messages }))
}

/// `message.send_status`: `error != 0` → failed, delivered → delivered, sent → sent, else pending.
async fn send_status(backend: &Arc<Backend>, p: &Params) -> Result<Value, RpcError> {
    p.allow(&["guid"])?;
    let guid = p
        .string("guid")?
        .filter(|g| !g.is_empty())
        .ok_or_else(|| RpcError::invalid_params("guid is required"))?;
    let lookup = guid.clone();
    let row = backend
        .pool
        .run(move |c| Ok(query::send_status(c, &lookup)?))
        .await
        .map_err(|e| backend.db_error(e))?;
    let checked_at = iso(chrono::Utc::now());
    let Some(row) = row else {
        return Ok(json!({
            "ok": true, "guid": guid, "send_state": "pending", "service": null,
            "checked_at": checked_at, "status_fields": null,
        }));
    };
    let state = if row.error != 0 {
        "failed"
    } else if row.is_delivered {
        "delivered"
    } else if row.is_sent {
        "sent"
    } else {
        "pending"
    };
    let date = |d: Option<i64>| d.filter(|d| *d != 0).map(|d| iso_from_apple_ns(Some(d)));
    let mut result = json!({
        "ok": true,
        "guid": guid,
        "send_state": state,
        "service": row.service,
        "checked_at": checked_at,
        "status_fields": {
            "is_sent": row.is_sent,
            "is_delivered": row.is_delivered,
            "is_finished": row.is_finished,
            "error": row.error,
            "date_delivered": date(row.date_delivered),
            "date_read": date(row.date_read),
            "is_delayed": row.is_delayed,
            "is_prepared": row.is_prepared,
            "is_pending_satellite_send": row.is_pending_satellite_send,
            "was_downgraded": row.was_downgraded,
        },
    });
    if let (Some(delivered), Some(obj)) = (date(row.date_delivered), result.as_object_mut())
        && row.is_delivered
    {
        obj.insert("delivered_at".into(), json!(delivered));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Dialect;

    #[test]
    fn offers_only_the_core_methods_in_baseline_mode() {
        assert!(is_supported("messages.after", Dialect::Strict));
        assert!(!is_supported("messages.after", Dialect::Baseline));
        assert!(!is_supported("initialize", Dialect::Baseline));
        assert!(is_supported("send", Dialect::Baseline));
    }

    #[test]
    fn validates_chat_ids_and_limits_like_imsg() {
        let strict = |v: Value| Params::new("messages.history", Some(v), Dialect::Strict).unwrap();
        let baseline = |v: Value| Params::new("messages.history", Some(v), Dialect::Baseline).unwrap();
        let detail = |r: Result<i64, RpcError>| r.unwrap_err().data.unwrap();
        assert_eq!(
            detail(required_chat_id(&strict(json!({})))),
            json!("chat_id is required")
        );
        assert_eq!(
            detail(required_chat_id(&strict(json!({"chat_id": 0})))),
            json!("chat_id must be a positive integer")
        );
        assert_eq!(required_chat_id(&baseline(json!({"chat_id": "7"}))).unwrap(), 7);
        assert_eq!(
            detail(limit(&strict(json!({"limit": 0})), 20, None)),
            json!("limit must be a positive integer")
        );
        assert_eq!(limit(&baseline(json!({"limit": -4})), 20, None).unwrap(), 1);
        assert_eq!(
            detail(limit(&strict(json!({"limit": 501})), 100, Some(500))),
            json!("limit must be between 1 and 500")
        );
    }

    #[test]
    fn reports_bad_dates_by_dialect() {
        let p = Params::new("x", Some(json!({"start": "soon"})), Dialect::Strict).unwrap();
        assert_eq!(date_param(&p, "start").unwrap_err().code, -32602);
        let p = Params::new("x", Some(json!({"start": "soon"})), Dialect::Baseline).unwrap();
        let e = date_param(&p, "start").unwrap_err();
        assert_eq!(
            (e.code, e.data),
            (-32603, Some(json!("Invalid ISO8601 date: soon")))
        );
    }
}
