//! Notifications: notifiers (a resource of the model), the events the server computes, the
//! outbox that delivers them once across replicas, and the formats of each kind of receiver.
//!
//! The path of an alert: a job ends (or a plan is late, an agent goes silent) → the
//! [`evaluate`] worker records an event and one delivery per notifier its plan routes it to, in
//! one transaction → the [`deliver`] worker claims due deliveries under a lease and sends them
//! ([`send`], in the shape [`message`] makes) → each attempt is recorded; failures wait out a
//! backoff.

pub(crate) mod deliver;
pub(crate) mod evaluate;
pub mod message;
pub mod model;
pub mod send;

pub use message::Notification;
pub use model::{NotifierInput, NotifierKind, NotifierSecrets, NotifierView, StoredNotifier};
pub use send::{SendError, Sender};
