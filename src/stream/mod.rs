//! What flows between the parts of the engine: change batches and the reserved column names
//! that carry their metadata.

pub mod change_batch;
pub mod columns;
pub mod message;
pub mod watermark;

pub use change_batch::ChangeBatch;
pub use message::{Barrier, Message, Timestamp};
pub use watermark::WatermarkDef;
