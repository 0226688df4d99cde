//! Reserved column names. Every name the engine adds to a user's rows lives here, so that a
//! user column can never collide with one by accident elsewhere.

/// The weight of a row in a stored or streamed change batch: `+1` inserts, `-1` retracts.
pub const WEIGHT_COLUMN: &str = "_sluice_weight";

/// True when `name` is reserved for the engine and may not name a user column.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("_sluice_")
}
