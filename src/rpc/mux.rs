//! One `imsg rpc` shared by several clients (the connection-sharing master keeps one warm per
//! command line, so a short-lived drop-in child pays for neither a handshake nor imsg's start;
//! docs/ssh.md, "Connection sharing"). Pure routing, no I/O: each client's request gets an id of
//! ours, its answer goes back under the client's id, and a watch's notifications go to the client
//! that subscribed. A client that leaves has its subscriptions ended.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who sent a line: the master numbers its clients.
pub type ClientId = u64;

/// Notifications held while the subscription they name is not answered yet (imsg may emit
/// before it answers `watch.subscribe`); more are dropped.
const HELD_MAX: usize = 4096;

/// The part of a JSON-RPC line the mux reads or rewrites; everything else is kept.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// `params` or `result` that name a subscription.
#[derive(Debug, Deserialize)]
struct WithSubscription {
    subscription: i64,
}

impl Line {
    fn parse(bytes: &[u8]) -> Option<Line> {
        serde_json::from_slice(bytes).ok()
    }

    fn to_bytes(&self) -> Vec<u8> {
        // Serialising a map of JSON values cannot fail.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    fn subscription_in(value: Option<&Value>) -> Option<i64> {
        WithSubscription::deserialize(value?).ok().map(|w| w.subscription)
    }
}

/// A request of a client, in flight.
#[derive(Debug)]
struct Pending {
    client: ClientId,
    /// The client's id, restored on the answer; None for the mux's own requests.
    id: Option<Value>,
    subscribes: bool,
    /// The subscription a `watch.unsubscribe` ends.
    unsubscribes: Option<i64>,
}

/// Where a line from imsg goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    To(ClientId, Vec<u8>),
    /// To every client (a notification that names no subscription).
    All(Vec<u8>),
}

/// The routing state of one shared `imsg rpc`.
#[derive(Debug, Default)]
pub struct Mux {
    next_id: u64,
    pending: HashMap<u64, Pending>,
    subscriptions: HashMap<i64, ClientId>,
    held: Vec<(i64, Vec<u8>)>,
}

impl Mux {
    /// A client's line, as it goes to imsg: a request under an id of ours, anything else as it came.
    pub fn from_client(&mut self, client: ClientId, bytes: &[u8]) -> Vec<u8> {
        let Some(mut line) = Line::parse(bytes).filter(|l| l.method.is_some() && l.id.is_some()) else {
            return with_newline(bytes);
        };
        self.next_id += 1;
        let method = line.method.as_deref().unwrap_or_default();
        let pending = Pending {
            client,
            id: line.id.replace(Value::from(self.next_id)),
            subscribes: method == "watch.subscribe",
            unsubscribes: (method == "watch.unsubscribe")
                .then(|| Line::subscription_in(line.params.as_ref()))
                .flatten(),
        };
        self.pending.insert(self.next_id, pending);
        line.to_bytes()
    }

    /// Where a line from imsg goes: answers to their client, a watch's notifications to its
    /// subscriber (held until known), other notifications and lines that are not JSON to all, the
    /// mux's own answers nowhere.
    pub fn from_imsg(&mut self, bytes: &[u8]) -> Vec<Route> {
        let Some(mut line) = Line::parse(bytes) else {
            return vec![Route::All(with_newline(bytes))];
        };
        if line.method.is_none() {
            // An answer nobody waits for (its client left) is dropped.
            let Some(pending) = line
                .id
                .as_ref()
                .and_then(Value::as_u64)
                .and_then(|id| self.pending.remove(&id))
            else {
                return Vec::new();
            };
            return self.answer(line, pending);
        }
        match Line::subscription_in(line.params.as_ref()) {
            Some(sub) => match self.subscriptions.get(&sub) {
                Some(client) => vec![Route::To(*client, line.to_bytes())],
                None if self.awaiting_subscription() && self.held.len() < HELD_MAX => {
                    self.held.push((sub, line.to_bytes()));
                    Vec::new()
                }
                None => Vec::new(),
            },
            None => {
                line.id = None;
                vec![Route::All(with_newline(bytes))]
            }
        }
    }

    fn answer(&mut self, mut line: Line, pending: Pending) -> Vec<Route> {
        if let Some(sub) = pending.unsubscribes {
            self.subscriptions.remove(&sub);
        }
        let mut routes = Vec::new();
        if pending.subscribes
            && let Some(sub) = Line::subscription_in(line.result.as_ref())
        {
            self.subscriptions.insert(sub, pending.client);
        }
        let Some(id) = pending.id else {
            return routes;
        };
        line.id = Some(id);
        routes.push(Route::To(pending.client, line.to_bytes()));
        routes.extend(self.release_held());
        routes
    }

    fn awaiting_subscription(&self) -> bool {
        self.pending.values().any(|p| p.subscribes)
    }

    /// Held notifications whose subscription is now known go out; the rest wait while a
    /// subscription is still unanswered, and are dropped once none is.
    fn release_held(&mut self) -> Vec<Route> {
        let waiting = self.awaiting_subscription();
        let mut routes = Vec::new();
        let mut kept = Vec::new();
        for (sub, bytes) in std::mem::take(&mut self.held) {
            match self.subscriptions.get(&sub) {
                Some(client) => routes.push(Route::To(*client, bytes)),
                None if waiting => kept.push((sub, bytes)),
                None => {}
            }
        }
        self.held = kept;
        routes
    }

    /// Requests of `client` still unanswered.
    pub fn pending_of(&self, client: ClientId) -> usize {
        self.pending
            .values()
            .filter(|p| p.client == client && p.id.is_some())
            .count()
    }

    /// `client` left: forget its requests and end its subscriptions (the lines to send imsg).
    pub fn client_gone(&mut self, client: ClientId) -> Vec<Vec<u8>> {
        self.pending.retain(|_, p| p.client != client);
        let subs: Vec<i64> = self
            .subscriptions
            .iter()
            .filter(|(_, c)| **c == client)
            .map(|(sub, _)| *sub)
            .collect();
        subs.into_iter()
            .map(|sub| {
                self.subscriptions.remove(&sub);
                self.next_id += 1;
                self.pending.insert(
                    self.next_id,
                    Pending {
                        client,
                        id: None,
                        subscribes: false,
                        unsubscribes: Some(sub),
                    },
                );
                let params = serde_json::json!({ "subscription": sub });
                let request = serde_json::json!({"jsonrpc": "2.0", "id": self.next_id, "method": "watch.unsubscribe", "params": params});
                with_newline(request.to_string().as_bytes())
            })
            .collect()
    }
}

fn with_newline(bytes: &[u8]) -> Vec<u8> {
    let mut line = bytes.to_vec();
    if line.last() != Some(&b'\n') {
        line.push(b'\n');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn line(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn two_clients_with_the_same_ids_each_get_their_own_answer() {
        let mut mux = Mux::default();
        let a = value(&mux.from_client(1, &line(json!({"jsonrpc":"2.0","id":1,"method":"chats.list"}))));
        let b = value(&mux.from_client(2, &line(json!({"jsonrpc":"2.0","id":1,"method":"status"}))));
        assert_ne!(a["id"], b["id"]);
        let routes = mux.from_imsg(&line(json!({"jsonrpc":"2.0","id": b["id"],"result":{"ok":true}})));
        assert_eq!(routes.len(), 1);
        let Route::To(client, bytes) = &routes[0] else {
            panic!()
        };
        assert_eq!((*client, value(bytes)["id"].clone()), (2, json!(1)));
        assert_eq!(mux.pending_of(1), 1);
        assert_eq!(mux.pending_of(2), 0);
    }

    #[test]
    fn a_watch_goes_to_its_subscriber_only_even_before_its_answer() {
        let mut mux = Mux::default();
        let sent = value(&mux.from_client(
            7,
            &line(json!({"jsonrpc":"2.0","id":3,"method":"watch.subscribe","params":{}})),
        ));
        let early =
            line(json!({"jsonrpc":"2.0","method":"message","params":{"subscription":1,"message":{"id":10}}}));
        assert!(
            mux.from_imsg(&early).is_empty(),
            "held until the subscription is known"
        );
        let routes = mux.from_imsg(&line(
            json!({"jsonrpc":"2.0","id": sent["id"],"result":{"subscription":1}}),
        ));
        let clients: Vec<ClientId> = routes
            .iter()
            .map(|r| match r {
                Route::To(c, _) => *c,
                Route::All(_) => 0,
            })
            .collect();
        assert_eq!(clients, vec![7, 7], "the answer, then the held message");
        let later =
            line(json!({"jsonrpc":"2.0","method":"message","params":{"subscription":1,"message":{"id":11}}}));
        assert!(matches!(mux.from_imsg(&later)[0], Route::To(7, _)));
    }

    #[test]
    fn a_client_that_leaves_has_its_watch_ended_and_its_answers_dropped() {
        let mut mux = Mux::default();
        let sent = value(&mux.from_client(
            4,
            &line(json!({"jsonrpc":"2.0","id":1,"method":"watch.subscribe"})),
        ));
        mux.from_imsg(&line(
            json!({"jsonrpc":"2.0","id": sent["id"],"result":{"subscription":2}}),
        ));
        let pending =
            value(&mux.from_client(4, &line(json!({"jsonrpc":"2.0","id":2,"method":"chats.list"}))));
        let unsubscribe = mux.client_gone(4);
        assert_eq!(unsubscribe.len(), 1);
        let request = value(&unsubscribe[0]);
        assert_eq!(
            (request["method"].clone(), request["params"].clone()),
            (json!("watch.unsubscribe"), json!({"subscription":2}))
        );
        assert!(
            mux.from_imsg(&line(
                json!({"jsonrpc":"2.0","id": request["id"],"result":{"ok":true}})
            ))
            .is_empty()
        );
        let orphan = line(json!({"jsonrpc":"2.0","id": pending["id"],"result":{}}));
        assert!(
            mux.from_imsg(&orphan).is_empty(),
            "an answer for a client that left goes nowhere"
        );
        let stray = line(json!({"jsonrpc":"2.0","method":"message","params":{"subscription":2}}));
        assert!(
            mux.from_imsg(&stray).is_empty(),
            "nobody holds that watch any more"
        );
    }
}
