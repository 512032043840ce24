//! The proxy's bookkeeping, without I/O: which requests are in flight (the client's ids are swapped
//! for ours, so the proxy can ask imsg things of its own), which subscriptions the client holds and
//! the last row each was given, and what to answer when the link dies under them.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::wire::{
    Disposition, Frame, MessageParams, RpcErrorBody, Started, SubscribeParams, WithSubscription, value_of,
    view,
};

/// JSON-RPC code of the proxy's own errors: imsg's "internal error".
const LOST_CODE: i64 = -32603;
/// Notifications held while a (re)subscription is unanswered; more are dropped, the watch resumes.
const HELD_MAX: usize = 4096;

/// Methods that only read: repeating them cannot do anything twice.
const READ_ONLY: [&str; 12] = [
    "initialize",
    "status",
    "chats.list",
    "chats.get",
    "messages.history",
    "messages.after",
    "messages.search",
    "messages.stats",
    "messages.scheduled",
    "message.send_status",
    "watch.subscribe",
    "watch.unsubscribe",
];

/// A request sent to imsg and not answered yet.
#[derive(Debug, Clone, PartialEq)]
enum Pending {
    /// The client's, under its own id.
    Client {
        id: Value,
        method: String,
        subscribe: Option<SubscribeParams>,
    },
    /// Ours: a subscription re-made after the link came back.
    Resubscribe { client_sub: i64 },
    /// Ours: where "now" is, for a client's subscription that gave no cursor (held until known).
    Floor { held: Frame, step: FloorStep },
}

/// The two questions that find the newest row: the most recent chat, then its newest message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloorStep {
    Chats,
    History,
}

/// A subscription the client holds.
#[derive(Debug, Clone, PartialEq)]
struct Sub {
    /// imsg's id in the current session; None while the (re)subscription is unanswered.
    upstream: Option<i64>,
    params: SubscribeParams,
    /// The last row forwarded (or the client's own `since_rowid`).
    last: Option<i64>,
}

/// Where an answer from imsg goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// To the client: the frame (its id restored) and the method it answers.
    Client { frame: Frame, method: String },
    /// One of ours, consumed here.
    Own,
    /// One of ours, answered by sending this to imsg (the next question, or the held request).
    Send(Frame),
    /// No request of that id: forwarded as it came.
    Unknown,
}

/// What to do with a `message` notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Forward these params (subscription id rewritten to the client's).
    Forward(MessageParams),
    /// Already forwarded (a replay after resubscribing): drop it.
    Duplicate,
    /// Its subscription is not answered yet: kept until it is.
    Held,
    /// Not a subscription we know: forward as it came.
    Unknown,
}

/// The books of one proxied `imsg rpc`.
#[derive(Debug, Default)]
pub struct Book {
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// By the id the client knows (imsg's id in the session that created it).
    subs: BTreeMap<i64, Sub>,
    held: Vec<MessageParams>,
}

impl Book {
    /// Take a client request: record it and give it our id. A `watch.unsubscribe` is pointed at
    /// imsg's current id for that subscription and forgotten, so it is never re-made.
    pub fn request(&mut self, mut frame: Frame) -> Frame {
        let id = self.take_id();
        let method = frame.method.clone().unwrap_or_default();
        let subscribe = (method == "watch.subscribe").then(|| {
            frame
                .params
                .as_ref()
                .and_then(view::<SubscribeParams>)
                .unwrap_or_default()
        });
        if method == "watch.unsubscribe" {
            frame.params = frame.params.take().map(|params| self.unsubscribe(params));
        }
        let client_id = frame.id.replace(Value::from(id)).unwrap_or(Value::Null);
        self.pending.insert(
            id,
            Pending::Client {
                id: client_id,
                method,
                subscribe,
            },
        );
        frame
    }

    /// A `watch.subscribe` without a cursor starts at imsg's newest row, which a resumed watch
    /// could not name: ask imsg for that row first and subscribe from it, so rows that arrive while
    /// the link is down before the first delivery are not lost. Returns the first question.
    pub fn subscribe_from_now(&mut self, held: Frame) -> Frame {
        let id = self.take_id();
        self.pending.insert(
            id,
            Pending::Floor {
                held,
                step: FloorStep::Chats,
            },
        );
        Frame::request(id, "chats.list", serde_json::json!({"limit": 1}))
    }

    /// Whether a client request is a subscription without a cursor.
    pub fn wants_floor(frame: &Frame) -> bool {
        frame.method.as_deref() == Some("watch.subscribe")
            && frame
                .params
                .as_ref()
                .and_then(view::<SubscribeParams>)
                .unwrap_or_default()
                .since_rowid
                .is_none_or(|rowid| rowid == 0)
    }

    /// The next step of the floor probe, or the held subscription with its cursor (as it came,
    /// when imsg could not tell: then it starts at imsg's newest row, as asked).
    fn floor_answer(&mut self, held: Frame, step: FloorStep, result: Option<&Value>) -> Frame {
        match (step, result) {
            (FloorStep::Chats, Some(result)) => {
                let chat = result["chats"][0]["id"].as_i64();
                match chat {
                    Some(chat) => {
                        let id = self.take_id();
                        self.pending.insert(
                            id,
                            Pending::Floor {
                                held,
                                step: FloorStep::History,
                            },
                        );
                        Frame::request(
                            id,
                            "messages.history",
                            serde_json::json!({"chat_id": chat, "limit": 1}),
                        )
                    }
                    None => self.request(held),
                }
            }
            (FloorStep::History, Some(result)) => match result["messages"][0]["id"].as_i64() {
                Some(row) => self.request(with_cursor(held, row)),
                None => self.request(held),
            },
            (_, None) => self.request(held),
        }
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn unsubscribe(&mut self, params: Value) -> Value {
        let Some(mut with) = view::<WithSubscription>(&params) else {
            return params;
        };
        let Some(client_sub) = with.subscription.as_i64() else {
            return params;
        };
        match self.subs.remove(&client_sub).and_then(|sub| sub.upstream) {
            Some(upstream) => {
                with.subscription = Value::from(upstream);
                value_of(&with)
            }
            None => params,
        }
    }

    /// Route imsg's answer to request `frame.id`.
    pub fn answer(&mut self, mut frame: Frame) -> Answer {
        let Some(pending) = frame
            .id
            .as_ref()
            .and_then(Value::as_u64)
            .and_then(|id| self.pending.remove(&id))
        else {
            return Answer::Unknown;
        };
        match pending {
            Pending::Client {
                id,
                method,
                subscribe,
            } => {
                if let (Some(params), Some(sub)) = (subscribe, subscription_of(frame.result.as_ref())) {
                    let last = params.since_rowid.filter(|r| *r > 0);
                    self.subs.insert(
                        sub,
                        Sub {
                            upstream: Some(sub),
                            params,
                            last,
                        },
                    );
                }
                frame.id = Some(id);
                Answer::Client { frame, method }
            }
            Pending::Floor { held, step } => {
                Answer::Send(self.floor_answer(held, step, frame.result.as_ref()))
            }
            Pending::Resubscribe { client_sub } => {
                let upstream = subscription_of(frame.result.as_ref());
                if let Some(sub) = self.subs.get_mut(&client_sub) {
                    sub.upstream = upstream;
                }
                if upstream.is_none() {
                    tracing::warn!(
                        subscription = client_sub,
                        "imsg refused to resume a subscription; it ends"
                    );
                    self.subs.remove(&client_sub);
                }
                Answer::Own
            }
        }
    }

    /// Route a `message` notification: rewrite its subscription, drop replays, hold early ones.
    pub fn message(&mut self, mut params: MessageParams) -> Delivery {
        let Some(upstream) = params.subscription.as_i64() else {
            return Delivery::Unknown;
        };
        let Some((client_sub, sub)) = self.subs.iter_mut().find(|(_, s)| s.upstream == Some(upstream)) else {
            if self.awaiting_subscription() && self.held.len() < HELD_MAX {
                self.held.push(params);
                return Delivery::Held;
            }
            return Delivery::Unknown;
        };
        let row = params.message.id;
        if let (Some(row), Some(last)) = (row, sub.last)
            && row <= last
        {
            return Delivery::Duplicate;
        }
        if let Some(row) = row {
            sub.last = Some(row);
        }
        params.subscription = Value::from(*client_sub);
        Delivery::Forward(params)
    }

    fn awaiting_subscription(&self) -> bool {
        self.subs.values().any(|s| s.upstream.is_none())
            || self.pending.values().any(|p| {
                matches!(
                    p,
                    Pending::Client {
                        subscribe: Some(_),
                        ..
                    }
                )
            })
    }

    /// Notifications held for a subscription that is now answered, in arrival order.
    pub fn release_held(&mut self) -> Vec<MessageParams> {
        if self.awaiting_subscription() {
            return Vec::new();
        }
        std::mem::take(&mut self.held)
    }

    /// imsg's id for a subscription-scoped notification (`error`, `watch.overflow`) → the client's.
    pub fn client_subscription(&self, upstream: i64) -> Option<i64> {
        self.subs
            .iter()
            .find(|(_, s)| s.upstream == Some(upstream))
            .map(|(client, _)| *client)
    }

    /// The subscription's stream ended for good (imsg's `error` notification).
    pub fn forget_subscription(&mut self, client_sub: i64) {
        self.subs.remove(&client_sub);
    }

    /// Re-make one subscription from its last forwarded row (imsg's `watch.overflow`).
    pub fn resubscribe(&mut self, client_sub: i64) -> Option<Frame> {
        let sub = self.subs.get_mut(&client_sub)?;
        sub.upstream = None;
        let mut params = sub.params.clone();
        if let Some(last) = sub.last {
            params.since_rowid = Some(last);
        }
        let id = self.take_id();
        self.pending.insert(id, Pending::Resubscribe { client_sub });
        Some(Frame::request(id, "watch.subscribe", value_of(&params)))
    }

    /// The session died. Every request in flight gets its error (it may or may not have reached
    /// imsg), and every subscription is re-made on the next session from its last row.
    pub fn lost(&mut self, reason: &str) -> (Vec<Frame>, Vec<Frame>) {
        let mut failed: Vec<(u64, Frame)> = self
            .pending
            .drain()
            .filter_map(|(ours, pending)| match pending {
                Pending::Client { id, method, .. } => Some((ours, lost_answer(id, &method, reason))),
                Pending::Floor { held, .. } => {
                    let id = held.id.unwrap_or(Value::Null);
                    let method = held.method.unwrap_or_default();
                    Some((ours, lost_answer(id, &method, reason)))
                }
                Pending::Resubscribe { .. } => None,
            })
            .collect();
        failed.sort_by_key(|(ours, _)| *ours);
        self.held.clear();
        let clients: Vec<i64> = self.subs.keys().copied().collect();
        let again = clients.into_iter().filter_map(|c| self.resubscribe(c)).collect();
        (failed.into_iter().map(|(_, f)| f).collect(), again)
    }

    /// Requests still unanswered (the client's only).
    pub fn in_flight(&self) -> usize {
        self.pending
            .values()
            .filter(|p| matches!(p, Pending::Client { .. }))
            .count()
    }
}

/// A held `watch.subscribe` with `since_rowid` set.
fn with_cursor(mut held: Frame, row: i64) -> Frame {
    let mut params = held
        .params
        .as_ref()
        .and_then(view::<SubscribeParams>)
        .unwrap_or_default();
    params.since_rowid = Some(row);
    held.params = Some(value_of(&params));
    held
}

/// The subscription id in a `watch.subscribe` result.
fn subscription_of(result: Option<&Value>) -> Option<i64> {
    result.and_then(view::<WithSubscription>)?.subscription.as_i64()
}

/// The answer to a request the link took down with it.
fn lost_answer(id: Value, method: &str, reason: &str) -> Frame {
    let body = RpcErrorBody {
        code: LOST_CODE,
        message: format!("imsg-bridge: {reason} before imsg answered {method}"),
        data: Disposition {
            disposition: Started::Unknown,
            retry_safe: READ_ONLY.contains(&method),
        },
    };
    Frame::error_response(id, &body)
}

/// The answer to a request that never reached imsg (a local file that could not be uploaded).
pub fn not_started(id: Value, message: String) -> Frame {
    let body = RpcErrorBody {
        code: LOST_CODE,
        message,
        data: Disposition {
            disposition: Started::NotStarted,
            retry_safe: true,
        },
    };
    Frame::error_response(id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(value: Value) -> Frame {
        serde_json::from_value(value).unwrap()
    }

    fn message(sub: i64, row: i64) -> MessageParams {
        view(&json!({"subscription": sub, "message": {"id": row, "text": "t"}})).unwrap()
    }

    /// Subscribe as the client, answered with imsg's subscription `sub`.
    fn subscribed(book: &mut Book, client_id: Value, params: Value, sub: i64) {
        let sent = book.request(frame(
            json!({"jsonrpc":"2.0","id": client_id,"method":"watch.subscribe","params": params}),
        ));
        let answer = book.answer(frame(
            json!({"jsonrpc":"2.0","id": sent.id,"result":{"subscription": sub}}),
        ));
        assert!(matches!(answer, Answer::Client { .. }));
    }

    #[test]
    fn gives_requests_our_ids_and_answers_with_the_clients() {
        let mut book = Book::default();
        let a = book.request(frame(json!({"jsonrpc":"2.0","id":"x","method":"chats.list"})));
        let b = book.request(frame(json!({"jsonrpc":"2.0","id":"x","method":"status"})));
        assert_ne!(
            a.id, b.id,
            "two requests with the same client id still get two of ours"
        );
        let answer = book.answer(frame(json!({"jsonrpc":"2.0","id": b.id,"result":{}})));
        let Answer::Client { frame, method } = answer else {
            panic!("{answer:?}")
        };
        assert_eq!((frame.id, method.as_str()), (Some(json!("x")), "status"));
        assert_eq!(book.answer(frame_with_id(99)), Answer::Unknown);
        assert_eq!(book.in_flight(), 1);
    }

    fn frame_with_id(id: u64) -> Frame {
        frame(json!({"jsonrpc":"2.0","id": id,"result":{}}))
    }

    #[test]
    fn a_cut_link_fails_requests_in_flight_with_their_disposition() {
        let mut book = Book::default();
        book.request(frame(
            json!({"jsonrpc":"2.0","id":1,"method":"send","params":{"text":"hi"}}),
        ));
        book.request(frame(json!({"jsonrpc":"2.0","id":2,"method":"chats.list"})));
        let (failed, again) = book.lost("the link to the Mac was lost");
        assert!(again.is_empty());
        let data: Vec<Value> = failed
            .iter()
            .map(|f| f.error.clone().unwrap()["data"].clone())
            .collect();
        assert_eq!(
            data,
            vec![
                json!({"disposition":"unknown","retry_safe":false}),
                json!({"disposition":"unknown","retry_safe":true}),
            ]
        );
        assert_eq!(failed[0].id, Some(json!(1)));
        assert_eq!(book.in_flight(), 0);
    }

    #[test]
    fn resumes_each_subscription_from_its_last_row_under_the_same_id() {
        let mut book = Book::default();
        subscribed(&mut book, json!(1), json!({"attachments": true}), 4);
        let Delivery::Forward(first) = book.message(message(4, 100)) else {
            panic!()
        };
        assert_eq!(first.subscription, json!(4));
        let (_, again) = book.lost("cut");
        assert_eq!(again.len(), 1);
        assert_eq!(
            again[0].params,
            Some(json!({"attachments": true, "since_rowid": 100}))
        );
        assert_eq!(
            book.message(message(1, 101)),
            Delivery::Held,
            "before the resubscription is answered"
        );
        book.answer(frame(
            json!({"jsonrpc":"2.0","id": again[0].id,"result":{"subscription":1}}),
        ));
        let held = book.release_held();
        assert_eq!(held.len(), 1);
        let Delivery::Forward(resumed) = book.message(held[0].clone()) else {
            panic!()
        };
        assert_eq!(resumed.subscription, json!(4), "the client keeps the id it knows");
        assert_eq!(book.message(message(1, 100)), Delivery::Duplicate);
        assert_eq!(book.message(message(1, 101)), Delivery::Duplicate);
        assert!(matches!(book.message(message(1, 102)), Delivery::Forward(_)));
    }

    #[test]
    fn a_clients_own_cursor_is_where_a_resumed_watch_starts_before_any_row() {
        let mut book = Book::default();
        subscribed(&mut book, json!(1), json!({"since_rowid": 50}), 1);
        let (_, again) = book.lost("cut");
        assert_eq!(again[0].params, Some(json!({"since_rowid": 50})));
    }

    #[test]
    fn an_unsubscribed_watch_is_not_resumed_and_imsg_hears_its_current_id() {
        let mut book = Book::default();
        subscribed(&mut book, json!(1), json!({}), 3);
        let (_, again) = book.lost("cut");
        book.answer(frame(
            json!({"jsonrpc":"2.0","id": again[0].id,"result":{"subscription":1}}),
        ));
        let sent = book.request(frame(
            json!({"jsonrpc":"2.0","id":9,"method":"watch.unsubscribe","params":{"subscription":3}}),
        ));
        assert_eq!(sent.params, Some(json!({"subscription": 1})));
        let (_, again) = book.lost("cut");
        assert!(again.is_empty());
    }

    #[test]
    fn a_refused_resubscription_ends_that_subscription() {
        let mut book = Book::default();
        subscribed(&mut book, json!(1), json!({}), 2);
        let again = book.resubscribe(2).unwrap();
        book.answer(frame(
            json!({"jsonrpc":"2.0","id": again.id,"error":{"code":-32000,"message":"limit"}}),
        ));
        assert_eq!(book.client_subscription(2), None);
        assert_eq!(book.message(message(2, 5)), Delivery::Unknown);
    }

    #[test]
    fn a_subscription_without_a_cursor_starts_from_the_newest_row_imsg_names() {
        let mut book = Book::default();
        let client =
            frame(json!({"jsonrpc":"2.0","id":"s","method":"watch.subscribe","params":{"attachments":true}}));
        assert!(Book::wants_floor(&client));
        let chats = book.subscribe_from_now(client);
        assert_eq!(chats.method.as_deref(), Some("chats.list"));
        let Answer::Send(history) = book.answer(frame(
            json!({"jsonrpc":"2.0","id": chats.id,"result":{"chats":[{"id":7}]}}),
        )) else {
            panic!()
        };
        assert_eq!(history.params, Some(json!({"chat_id": 7, "limit": 1})));
        let Answer::Send(subscribe) = book.answer(frame(
            json!({"jsonrpc":"2.0","id": history.id,"result":{"messages":[{"id":420}]}}),
        )) else {
            panic!()
        };
        assert_eq!(
            subscribe.params,
            Some(json!({"attachments": true, "since_rowid": 420}))
        );
        let Answer::Client { frame: answered, .. } = book.answer(frame(
            json!({"jsonrpc":"2.0","id": subscribe.id,"result":{"subscription":1}}),
        )) else {
            panic!()
        };
        assert_eq!(answered.id, Some(json!("s")));
        let (_, again) = book.lost("cut");
        assert_eq!(
            again[0].params,
            Some(json!({"attachments": true, "since_rowid": 420}))
        );
    }

    #[test]
    fn an_empty_database_subscribes_as_the_client_asked() {
        let mut book = Book::default();
        let chats =
            book.subscribe_from_now(frame(json!({"jsonrpc":"2.0","id":1,"method":"watch.subscribe"})));
        let Answer::Send(subscribe) = book.answer(frame(
            json!({"jsonrpc":"2.0","id": chats.id,"result":{"chats":[]}}),
        )) else {
            panic!()
        };
        assert_eq!(subscribe.method.as_deref(), Some("watch.subscribe"));
        assert_eq!(subscribe.params, None);
        assert!(!Book::wants_floor(&frame(
            json!({"jsonrpc":"2.0","id":1,"method":"watch.subscribe","params":{"since_rowid":5}})
        )));
    }

    #[test]
    fn a_request_that_never_started_is_safe_to_retry() {
        let frame = not_started(json!(3), "cannot upload".into());
        assert_eq!(
            frame.error.unwrap()["data"],
            json!({"disposition":"not_started","retry_safe":true})
        );
    }
}
