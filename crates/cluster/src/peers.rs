//! What each node says of itself, for every node's status: every node puts its role and
//! how far it applied the log into a key-value bucket (`{stream}_nodes`) every second, and
//! reads everyone's back. Entries expire, so a node that stopped drops out of the list.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{Role, Shared};

/// How often a node says where it is.
const EVERY: Duration = Duration::from_secs(1);
/// How long an entry lasts without being said again.
const EXPIRES: Duration = Duration::from_secs(10);
/// The longest one round may take to list the nodes (well under [`EXPIRES`]).
const LIST_WITHIN: Duration = Duration::from_secs(3);

/// One node as it last said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its name.
    pub node: String,
    /// Its HTTP address.
    pub url: String,
    /// Its role then.
    pub role: String,
    /// The log sequence it had applied.
    pub applied: u64,
    /// Messages it was behind the log's last sequence as this node knows it.
    #[serde(default)]
    pub behind: u64,
}

/// A key-value key for a node name: the characters a key may not hold become `_`.
fn key_of(node: &str) -> String {
    node.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

pub(crate) async fn run(shared: Arc<Shared>, js: jetstream::Context) {
    let options = &shared.options;
    let bucket = format!("{}_nodes", options.stream);
    let store = loop {
        match crate::lease::key_value(
            &js,
            options,
            &bucket,
            "Loom: every node's progress",
            EXPIRES,
        )
        .await
        {
            Ok(store) => break store,
            Err(e) => {
                tracing::debug!(error = %e, "opening the nodes bucket; retrying");
                tokio::time::sleep(EVERY).await;
            }
        }
    };
    let key = key_of(&options.node);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let role = match *shared.role.lock().expect("role lock") {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Sequencer => "sequencer",
        };
        let me = PeerStatus {
            node: options.node.clone(),
            url: options.url.clone(),
            role: role.into(),
            applied: shared.applied.load(Ordering::Acquire),
            behind: 0,
        };
        let bytes = serde_json::to_vec(&me).expect("serializable");
        match tokio::time::timeout(LIST_WITHIN, store.put(&key, bytes.into())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "saying where this node is");
                continue;
            }
            Err(_) => {
                tracing::debug!("saying where this node is took longer than {LIST_WITHIN:?}");
                continue;
            }
        }
        // Bounded: listing the keys reads them through a consumer, which can wait for
        // messages that do not come (the bucket's stream changing leader, say); a round that
        // hung would stop this node from saying where it is, and it would drop out of
        // everyone's list when its entry expires.
        let listed = tokio::time::timeout(LIST_WITHIN, async {
            let mut keys = store.keys().await.ok()?;
            let mut peers = Vec::new();
            while let Some(Ok(k)) = keys.next().await {
                if let Ok(Some(value)) = store.get(&k).await
                    && let Ok(peer) = serde_json::from_slice::<PeerStatus>(&value)
                {
                    peers.push(peer);
                }
            }
            Some(peers)
        })
        .await;
        let Ok(Some(mut peers)) = listed else {
            tracing::debug!("listing the nodes failed or took longer than {LIST_WITHIN:?}");
            continue;
        };
        peers.sort_by(|a, b| a.node.cmp(&b.node));
        *shared.peers.lock().expect("peers lock") = peers;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_names_become_valid_keys() {
        assert_eq!(super::key_of("127.0.0.1:7071"), "127_0_0_1_7071");
        assert_eq!(super::key_of("loom-1_a"), "loom-1_a");
    }
}
