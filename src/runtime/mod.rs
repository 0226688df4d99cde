//! Running views: each view's operator graph ([`dataflow::Node`]), its contents
//! ([`contents::ViewContents`]) and the [`executor::Executor`] that drives every view one epoch
//! at a time and publishes their contents at each barrier.

pub mod contents;
pub mod dataflow;
pub mod executor;
pub mod subscribe;

pub use executor::{Executor, RunningView};
pub use subscribe::{SubscribeEvent, Subscription};
