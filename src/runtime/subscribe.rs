//! Subscriptions: a view's changes, epoch by epoch, to one client.
//!
//! The executor hands each subscriber every epoch's changes of its view as one message on a
//! bounded channel: the changes are shared (`Arc`), so a hundred subscribers to one view cost
//! a hundred pointer copies per epoch, not a hundred copies of the rows. A subscriber whose
//! channel is full has fallen too far behind: the executor drops it and says why, so the
//! client gets an error rather than a feed with a silent gap.

use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

use crate::stream::ChangeBatch;

/// `WITH (SNAPSHOT = …, PROGRESS = …)` and `AS OF …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// The current contents first, as inserts (default true).
    pub snapshot: bool,
    /// A progress row after every epoch (default false).
    pub progress: bool,
    /// The epoch to start at (default: the current one).
    pub as_of: Option<u64>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            snapshot: true,
            progress: false,
            as_of: None,
        }
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum SubscribeEvent {
    /// The view's changes in an epoch (for the first message, its contents as inserts).
    Changes {
        /// The epoch.
        epoch: u64,
        /// The changes.
        changes: Arc<Vec<ChangeBatch>>,
    },
    /// Every change up to and including `epoch` has been sent.
    Progress {
        /// The epoch.
        epoch: u64,
    },
}

/// Why a subscription ended, set by the executor before it lets go of the channel.
#[derive(Debug, Default)]
pub struct EndReason(OnceLock<String>);

impl EndReason {
    /// Records why; the first reason stands.
    pub fn set(&self, reason: impl Into<String>) {
        let _ = self.0.set(reason.into());
    }

    /// The reason, once set.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// The executor's side of a subscription.
#[derive(Debug)]
pub struct SubscriberFeed {
    /// The view subscribed to.
    pub view: u32,
    /// A progress message after every epoch, changed or not.
    pub progress: bool,
    /// Not before this epoch (`AS OF` in the future): nothing is sent until it is reached.
    pub start: u64,
    /// Whether the first message (the snapshot, or nothing) has gone out.
    pub started: bool,
    /// Send the view's contents first.
    pub snapshot: bool,
    /// The channel.
    pub sender: mpsc::Sender<SubscribeEvent>,
    /// Why it ended.
    pub end: Arc<EndReason>,
}

impl SubscriberFeed {
    /// Sends `event`; false when the subscriber is gone or has fallen behind (then dropped,
    /// with the reason recorded).
    pub fn offer(&self, event: SubscribeEvent) -> bool {
        match self.sender.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.end.set(format!(
                    "subscriber fell too far behind ({} epochs unread); subscription dropped",
                    self.sender.max_capacity()
                ));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The client's side of a subscription. Dropping it ends the subscription: the executor
/// notices at its next epoch.
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<SubscribeEvent>,
    end: Arc<EndReason>,
    /// Keeps a view that exists only for this subscription (`SUBSCRIBE (SELECT …)`) alive.
    _owned: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Subscription {
    /// A subscription over `receiver`; `owned` lives as long as it.
    pub fn new(
        receiver: mpsc::Receiver<SubscribeEvent>,
        end: Arc<EndReason>,
        owned: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Self {
        Self {
            receiver,
            end,
            _owned: owned,
        }
    }

    /// The next event; `Err` with the reason when the executor ended the subscription.
    pub async fn next(&mut self) -> Result<SubscribeEvent, String> {
        match self.receiver.recv().await {
            Some(event) => Ok(event),
            None => Err(self.reason()),
        }
    }

    /// The next event if one is waiting; `Ok(None)` if none is.
    pub fn try_next(&mut self) -> Result<Option<SubscribeEvent>, String> {
        match self.receiver.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(self.reason()),
        }
    }

    fn reason(&self) -> String {
        self.end.get().unwrap_or(VIEW_DROPPED).to_string()
    }
}

/// Why a subscription ends when its view goes (and when nothing else was said).
pub const VIEW_DROPPED: &str = "the subscription ended: its view was dropped";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_channel_drops_the_subscriber_with_a_reason() {
        let (sender, receiver) = mpsc::channel(2);
        let end = Arc::new(EndReason::default());
        let feed = SubscriberFeed {
            view: 1,
            progress: true,
            start: 0,
            started: true,
            snapshot: false,
            sender,
            end: Arc::clone(&end),
        };
        let mut sub = Subscription::new(receiver, end, None);
        assert!(feed.offer(SubscribeEvent::Progress { epoch: 1 }));
        assert!(feed.offer(SubscribeEvent::Progress { epoch: 2 }));
        assert!(!feed.offer(SubscribeEvent::Progress { epoch: 3 }));
        drop(feed);
        // What was sent before the drop is still delivered, in order, then the reason.
        assert!(matches!(
            sub.next().await,
            Ok(SubscribeEvent::Progress { epoch: 1 })
        ));
        assert!(matches!(
            sub.try_next(),
            Ok(Some(SubscribeEvent::Progress { epoch: 2 }))
        ));
        let reason = sub.next().await.unwrap_err();
        assert!(reason.contains("fell too far behind"), "{reason}");
    }

    #[tokio::test]
    async fn a_dropped_view_ends_the_subscription() {
        let (sender, receiver) = mpsc::channel(2);
        let mut sub = Subscription::new(receiver, Arc::default(), None);
        drop(sender);
        assert!(sub.next().await.unwrap_err().contains("dropped"));
    }
}
