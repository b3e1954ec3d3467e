//! A node's two tasks: the publisher, which sends this node's messages one after another (so
//! broadcasts keep their order), and the membership task, which joins (with backoff), announces
//! every heartbeat, follows the link's state, and handles what arrives on the cluster channels
//! (and, after a join, adopts the cluster's bans). Each runs on the node's `TaskTracker`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backend::{Deliveries, Delivery, Lease, Link};
use crate::protocol::{AdminReply, Announce, Body, Envelope, Op, Reply, PROTOCOL_VERSION};
use crate::shared::{lock, ClusterState, Inner, Outgoing};
use crate::view::ViewFull;
use wscope_core::wire::{BroadcastPayload, ErrorBody};
use wscope_core::AdminAnswer;

/// The longest wait between attempts to reach an unreachable engine.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Most queued messages published in one batch (one round trip on Redis).
const PUBLISH_BATCH: usize = 256;

/// Most payload bytes published in one batch (a single larger message goes alone): Redis takes
/// a pipelined batch in one go, and copies each payload to every subscriber's output buffer.
const PUBLISH_BATCH_BYTES: usize = 1 << 20;

/// Sends queued messages in order, in batches of what has queued up meanwhile (one message alone
/// when traffic is light), each at most [`PUBLISH_BATCH_BYTES`] (or the window), and no faster
/// than this node hears its own messages back on the shared channel
/// ([`crate::config::ClusterConfig::publish_window`]).
/// While the node is not connected, queued broadcasts are counted undelivered at once instead of
/// waiting on the engine one by one.
pub(crate) async fn publisher(inner: Arc<Inner>, mut rx: mpsc::Receiver<Outgoing>) {
    let timeout = inner.config.survey_timeout.max(Duration::from_millis(100));
    let mut pending: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
    // The last broadcast number published.
    let mut seq = 0u64;
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = inner.stop.cancelled() => return,
                n = rx.recv_many(&mut pending, PUBLISH_BATCH) => if n == 0 { return },
            }
        }
        let limit = PUBLISH_BATCH_BYTES.min(inner.config.publish_window);
        let rest = pending.split_off(batch_len(&pending, limit));
        let batch = std::mem::replace(&mut pending, rest);
        let cost: usize = batch.iter().map(Outgoing::cost).sum();
        let broadcasts = batch
            .iter()
            .filter(|o| matches!(o, Outgoing::Broadcast { .. }))
            .count() as u64;
        if *inner.state_now() != ClusterState::Connected {
            inner.release(cost);
            // Nothing sent on a link that is down comes back.
            inner.heard_back(usize::MAX);
            inner
                .counters
                .broadcasts_undelivered
                .fetch_add(broadcasts, Ordering::Relaxed);
            continue;
        }
        let Encoded {
            payloads,
            next,
            unencoded,
        } = encode(&inner, batch, seq);
        let to_all: usize = payloads
            .iter()
            .filter(|(channel, _)| *channel == inner.channel_all)
            .map(|(_, payload)| payload.len())
            .sum();
        if !window(&inner, to_all, timeout).await {
            return;
        }
        inner.sent_to(&inner.channel_all, to_all);
        let published = matches!(
            tokio::time::timeout(timeout, inner.backend.publish_batch(payloads)).await,
            Ok(Ok(()))
        );
        inner.release(cost);
        let sent = broadcasts - unencoded;
        if published {
            seq = next;
            inner
                .counters
                .broadcasts_sent
                .fetch_add(sent, Ordering::Relaxed);
        } else {
            // Not published (or not known to be): the numbers are given again, so receivers
            // see no gap for what was never sent, and nothing is waited for back.
            inner.heard_back(to_all);
            inner
                .counters
                .broadcasts_undelivered
                .fetch_add(sent, Ordering::Relaxed);
        }
        inner
            .counters
            .broadcasts_undelivered
            .fetch_add(unencoded, Ordering::Relaxed);
    }
}

/// A batch ready to publish.
struct Encoded {
    /// Each payload and its channel, in order.
    payloads: Vec<(String, Bytes)>,
    /// The last broadcast number given, once these are published.
    next: u64,
    /// Broadcasts that could not be encoded (not published, not numbered).
    unencoded: u64,
}

/// Writes `batch`'s envelopes, numbering its broadcasts after `seq`.
fn encode(inner: &Inner, batch: Vec<Outgoing>, seq: u64) -> Encoded {
    let mut next = seq;
    let mut unencoded = 0;
    let payloads = batch
        .into_iter()
        .filter_map(|out| match out {
            Outgoing::Ready { channel, payload } => Some((channel, payload)),
            Outgoing::Broadcast { path, message } => {
                let message = BroadcastPayload::from_message(&message)?;
                let body = Body::Broadcast {
                    seq: next + 1,
                    path,
                    message,
                };
                let Some(payload) = inner.envelope(&body) else {
                    unencoded += 1;
                    return None;
                };
                next += 1;
                Some((inner.channel_all.clone(), payload))
            }
        })
        .collect();
    Encoded {
        payloads,
        next,
        unencoded,
    }
}

/// How many of `pending` go in the next batch: at least one, then as many as fit `limit` bytes.
fn batch_len(pending: &[Outgoing], limit: usize) -> usize {
    let mut bytes = 0usize;
    let fit = pending
        .iter()
        .take_while(|out| {
            bytes = bytes.saturating_add(out.cost());
            bytes <= limit
        })
        .count();
    fit.max(1).min(pending.len())
}

/// Waits until `bytes` more fit the publish window (or nothing is in flight); false if the node
/// stopped meanwhile. Bytes not heard back within `patience` of the last one that was are taken
/// as lost (deliveries this node dropped, a reconnect): the window starts over rather than
/// stall.
async fn window(inner: &Inner, bytes: usize, patience: Duration) -> bool {
    let mut deadline = Instant::now() + patience;
    loop {
        let echoed = inner.echoed.notified();
        tokio::pin!(echoed);
        echoed.as_mut().enable();
        let held = inner.in_flight.load(Ordering::Acquire);
        if bytes == 0 || held == 0 || held.saturating_add(bytes) <= inner.config.publish_window {
            return true;
        }
        tokio::select! {
            _ = inner.stop.cancelled() => return false,
            _ = &mut echoed => deadline = Instant::now() + patience,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(
                    held, "cluster: own messages not heard back in time; taken as lost"
                );
                inner.heard_back(held);
            }
        }
    }
}

/// Joins, announces, follows the link and handles deliveries until the registry shuts down (then
/// leaves) or the node is stopped.
pub(crate) async fn membership(inner: Arc<Inner>) {
    let mut link = inner.backend.link();
    let mut deliveries: Option<Deliveries> = None;
    let first_backoff = (inner.config.heartbeat / 4).max(Duration::from_millis(50));
    let mut backoff = first_backoff;
    let mut next_beat = Instant::now();
    let shutdown = inner.registry.shutdown_started();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = inner.stop.cancelled() => return,
            _ = &mut shutdown => {
                leave(&inner).await;
                return;
            }
            delivery = recv(&mut deliveries) => match delivery {
                Some(delivery) => handle(&inner, delivery),
                None => deliveries = None,
            },
            changed = link.changed() => {
                if changed.is_err() {
                    // The backend dropped its link watch: rely on heartbeats alone.
                    link = tokio::sync::watch::channel(Link::Connected).1;
                    continue;
                }
                let now_link = *link.borrow_and_update();
                match now_link {
                    Link::Disconnected => {
                        inner.set_state(ClusterState::Disconnected, "link to the engine lost")
                    }
                    Link::Connected => next_beat = Instant::now(),
                }
            }
            _ = tokio::time::sleep_until(next_beat) => {
                let joined = beat(&inner, &mut deliveries).await;
                inner.attempts.send_modify(|n| *n += 1);
                if joined {
                    backoff = first_backoff;
                    next_beat = Instant::now() + inner.config.heartbeat;
                } else if *inner.state_now() == ClusterState::Refused {
                    inner.stop.cancel();
                    return;
                } else {
                    next_beat = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// The next delivery, or never while there is no subscription.
async fn recv(deliveries: &mut Option<Deliveries>) -> Option<Delivery> {
    match deliveries {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One heartbeat: subscribe if not yet, take or renew the lease on the instance id with the
/// announcement as its value, and announce. True if the node is a connected member after it.
async fn beat(inner: &Arc<Inner>, deliveries: &mut Option<Deliveries>) -> bool {
    let wait = inner.config.survey_timeout.max(Duration::from_millis(100));
    if deliveries.is_none() {
        let channels = vec![
            inner.config.channel_all(),
            inner.config.channel_to(&inner.instance),
        ];
        match tokio::time::timeout(wait, inner.backend.subscribe(channels)).await {
            Ok(Ok(rx)) => *deliveries = Some(rx),
            Ok(Err(e)) => {
                inner.set_state(ClusterState::Disconnected, &e.to_string());
                return false;
            }
            Err(_) => {
                inner.set_state(ClusterState::Disconnected, "subscribe timed out");
                return false;
            }
        }
    }
    let announce = inner.announce();
    let value = match serde_json::to_vec(&announce) {
        Ok(value) => bytes::Bytes::from(value),
        Err(e) => {
            // No lease renewed with nonsense: this beat fails, and the lease runs out if the
            // next ones do too.
            inner.unencodable(&e);
            return false;
        }
    };
    let key = inner.config.lease_key(&inner.instance);
    let ttl = inner.config.effective_ttl();
    let lease = tokio::time::timeout(
        wait,
        inner.backend.lease(&key, inner.incarnation(), value, ttl),
    )
    .await;
    match lease {
        Ok(Ok(Lease::Held)) => {
            let was = *inner.state_now();
            inner.set_state(ClusterState::Connected, "");
            if was != ClusterState::Connected {
                inner.send(inner.channel_all.clone(), &Body::Hello {});
                inner.tasks.spawn(adopt_bans(inner.clone()));
            }
            inner.send(inner.channel_all.clone(), &Body::Announce(announce));
            let now = inner.now_ms();
            let view = {
                let mut view = lock(&inner.view);
                view.forget_old(inner.timing(), now);
                view
            };
            // Broadcast numbers are kept only for senders the view still has.
            lock(&inner.heard_seq).retain(|incarnation, _| view.knows_incarnation(incarnation));
            drop(view);
            true
        }
        Ok(Ok(Lease::HeldByOther { value })) => {
            let holder = describe_holder(&value);
            let why = format!(
                "instance id {:?} is already a member of cluster {:?} ({holder}); start this \
                 instance with another --instance-id, or wait for the other to leave",
                inner.instance, inner.config.name
            );
            *lock(&inner.view_holder) = Some(holder);
            inner.set_state(ClusterState::Refused, &why);
            false
        }
        Ok(Err(e)) => {
            inner.set_state(ClusterState::Disconnected, &e.to_string());
            false
        }
        Err(_) => {
            inner.set_state(ClusterState::Disconnected, "lease timed out");
            false
        }
    }
}

/// Once the members have answered the join's hello (one heartbeat later), asks them for their
/// bans and makes those this instance lacks, for what is left of each: a ban made cluster-wide
/// before this instance joined (or while it was cut off) applies here too.
async fn adopt_bans(inner: Arc<Inner>) {
    tokio::time::sleep(inner.config.heartbeat).await;
    let cluster = crate::handle::Cluster {
        inner: inner.clone(),
    };
    let Ok(answer) = cluster
        .admin(wscope_core::wire::AdminRequest::ListBans {})
        .await
    else {
        return;
    };
    let have: Vec<_> = inner.registry.bans().iter().map(|b| b.target).collect();
    let mut adopted = 0;
    for row in answer.instances {
        let AdminReply::Done(AdminAnswer::ListBans(list)) = row.answer else {
            continue;
        };
        for ban in list.bans {
            if have.contains(&ban.target) || ban.expires_in == 0 {
                continue;
            }
            let left = Duration::from_millis(ban.expires_in);
            if inner.registry.ban(ban.target, left, &ban.reason).is_ok() {
                adopted += 1;
            }
        }
    }
    if adopted > 0 {
        tracing::info!(adopted, "adopted the cluster's bans");
    }
}

/// "main 127.0.0.1:8080, admin 127.0.0.1:9090, started at 1764480000000 (unix ms)" from a lease
/// value, as far as it tells.
fn describe_holder(value: &[u8]) -> String {
    match serde_json::from_slice::<Announce>(value) {
        Ok(a) => format!(
            "held by the instance with main {}, admin {}, started at {} (unix ms)",
            a.main_addr.as_deref().unwrap_or("?"),
            a.admin_addr.as_deref().unwrap_or("?"),
            a.started_at
        ),
        Err(_) => "held by another process".to_owned(),
    }
}

/// Announces the leave and gives the instance id up (best effort: the TTL covers a failure).
async fn leave(inner: &Arc<Inner>) {
    if *inner.state_now() == ClusterState::Connected {
        let _ = inner
            .publish_now(inner.channel_all.clone(), &Body::Leave {})
            .await;
        let key = inner.config.lease_key(&inner.instance);
        let wait = inner.config.survey_timeout;
        let _ = tokio::time::timeout(wait, inner.backend.release(&key, inner.incarnation())).await;
    }
    inner.set_state(ClusterState::Left, "shutting down");
    inner.stop.cancel();
}

/// Handles one payload from the cluster channels; anything unusable is counted and ignored.
fn handle(inner: &Arc<Inner>, delivery: Delivery) {
    // This node's own envelopes, echoed back on the shared channel: skipped unparsed, and the
    // publisher may send more.
    if delivery.payload.starts_with(&inner.own_prefix) {
        if delivery.channel == inner.channel_all {
            inner.heard_back(delivery.payload.len());
        }
        return;
    }
    let ignore = |why: &str| ignored(inner, &delivery.channel, why);
    match open(inner, &delivery.payload) {
        Ok(Some(envelope)) => {
            if let Err(why) = dispatch(inner, envelope) {
                ignore(why);
            }
        }
        Ok(None) => {}
        Err(why) => ignore(why),
    }
}

/// Counts a cluster message ignored, and says why at debug level.
fn ignored(inner: &Inner, channel: &str, why: &str) {
    inner.counters.ignored.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(channel, why, "ignored a cluster message");
}

/// Reads an envelope and checks where it comes from: `Ok(None)` for this instance's own
/// (nothing to do), `Err` with the reason to ignore it.
fn open(inner: &Inner, payload: &[u8]) -> Result<Option<Envelope>, &'static str> {
    if payload.len() > inner.config.max_payload {
        return Err("larger than the largest payload read");
    }
    let envelope: Envelope = serde_json::from_slice(payload).map_err(|_| "malformed")?;
    if envelope.v != PROTOCOL_VERSION {
        return Err("another protocol version");
    }
    if envelope.cluster != inner.config.name {
        return Err("another cluster");
    }
    if envelope.from == inner.instance {
        if envelope.incarnation != inner.incarnation() {
            return Err("another process with this instance id");
        }
        return Ok(None);
    }
    envelope.check_sender()?;
    Ok(Some(envelope))
}

/// Acts on a checked envelope from another instance; `Err` with the reason to ignore it.
fn dispatch(inner: &Arc<Inner>, envelope: Envelope) -> Result<(), &'static str> {
    let now = inner.now_ms();
    let member = || lock(&inner.view).is_member(&envelope.from, &envelope.incarnation);
    match envelope.body {
        Body::Announce(mut announce) => {
            announce.check(&envelope.from)?;
            let heard =
                lock(&inner.view).heard(announce, &envelope.incarnation, inner.timing(), now);
            match heard {
                Ok(Some(old)) => {
                    lock(&inner.heard_seq).remove(&old);
                    tracing::info!(instance = %envelope.from, "cluster member restarted");
                }
                Ok(None) => {}
                Err(ViewFull) => return Err("a new member while the view is full"),
            }
        }
        Body::Hello {} => {
            inner.send(inner.channel_all.clone(), &Body::Announce(inner.announce()));
        }
        Body::Leave {} => lock(&inner.view).left(&envelope.from, &envelope.incarnation, now),
        Body::Request { id, op } => {
            let reply = answer(inner, op);
            inner.send(
                inner.config.channel_to(&envelope.from),
                &Body::Reply { id, reply },
            );
        }
        Body::Reply { id, reply } => {
            if !member() {
                return Err("a reply from a non-member");
            }
            on_reply(inner, envelope.from, id, reply)?;
        }
        Body::Broadcast { seq, path, message } => {
            if !member() {
                return Err("a broadcast from a non-member");
            }
            let message = message.into_message();
            if message.payload_len() > inner.config.max_relay_size {
                return Err("a broadcast larger than the relay limit");
            }
            heard_broadcast(inner, envelope.incarnation, seq);
            inner.registry.broadcast(path.as_deref(), &message);
            inner
                .counters
                .broadcasts_received
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Hands a member's reply to the survey that asked it. Only the members a survey asked, once
/// each: the survey's channel is bounded by the members it asked, whoever else publishes replies.
fn on_reply(inner: &Inner, from: String, id: u64, reply: Reply) -> Result<(), &'static str> {
    let tx = lock(&inner.pending)
        .get_mut(&id)
        .and_then(|survey| survey.asked.remove(&from).then(|| survey.tx.clone()));
    let tx = tx.ok_or("a reply from an instance that was not asked")?;
    let _ = tx.send((from, reply));
    Ok(())
}

/// Notes a member's broadcast number, counting the ones a gap says were lost. One entry per
/// member's incarnation: members only, and the view is bounded.
fn heard_broadcast(inner: &Inner, incarnation: String, seq: u64) {
    let mut heard = lock(&inner.heard_seq);
    let last = heard.entry(incarnation).or_insert(seq.saturating_sub(1));
    if seq > last.saturating_add(1) {
        let gap = seq - *last - 1;
        let _ = inner.counters.broadcasts_lost.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |n| Some(n.saturating_add(gap)),
        );
    }
    *last = (*last).max(seq);
}

/// This node's answer to a survey question.
pub(crate) fn answer(inner: &Inner, op: Op) -> Reply {
    match op {
        Op::Stats {} => Reply::Stats {
            summary: Box::new(inner.registry.summary()),
            traffic: inner.registry.traffic(),
        },
        Op::Connections { query } => Reply::Connections {
            page: inner.registry.connections(&query),
        },
        Op::Admin { request } => match inner.registry.apply(request) {
            Ok(answer) => Reply::Admin {
                status: 200,
                answer: AdminReply::Done(answer),
            },
            Err(failure) => Reply::Admin {
                status: failure.status(),
                answer: AdminReply::Failed(ErrorBody {
                    error: failure.message,
                }),
            },
        },
    }
}
