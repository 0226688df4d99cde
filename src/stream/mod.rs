//! What flows between the parts of the engine: change batches and the reserved column names
//! that carry their metadata.

pub mod change_batch;
pub mod columns;
pub mod watermark;

pub use change_batch::ChangeBatch;
pub use watermark::Timestamp;
pub use watermark::WatermarkDef;
