//! Locks and panics. A thread that panics while it holds a lock poisons it. What that means
//! depends on what the lock guards, so every lock in the engine is taken through one of two
//! functions that say which case it is:
//!
//! - [`lock_value`]: the lock guards one value that is only ever replaced whole (a status, an
//!   error message, a timestamp, a flag) or nothing at all (a gate). A panic cannot leave it
//!   half-written, so the poisoned lock is taken as it is.
//! - [`lock`]: the lock guards a structure that a panic can leave half-updated (a catalog, a
//!   view's operators, a table's rows). A poisoned one is never used again: taking it panics
//!   with a message naming it, which fails the view or the statement that wanted it (both
//!   catch panics and report them), and every later use fails the same way, loudly.

use std::any::Any;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks a mutex over a structure; panics, naming `what`, if a panic poisoned it.
pub fn lock<'a, T>(mutex: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
    mutex.lock().unwrap_or_else(|_| poisoned(what))
}

/// Read-locks an `RwLock` over a structure; panics, naming `what`, if a panic poisoned it.
pub fn read<'a, T>(lock: &'a RwLock<T>, what: &str) -> RwLockReadGuard<'a, T> {
    lock.read().unwrap_or_else(|_| poisoned(what))
}

/// Write-locks an `RwLock` over a structure; panics, naming `what`, if a panic poisoned it.
pub fn write<'a, T>(lock: &'a RwLock<T>, what: &str) -> RwLockWriteGuard<'a, T> {
    lock.write().unwrap_or_else(|_| poisoned(what))
}

/// Locks a mutex over a value that is only ever replaced whole: a panic cannot have left it
/// half-written, so a poisoned lock is taken as it is.
pub fn lock_value<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks an `RwLock` over a value that is only ever replaced whole (or over nothing: a
/// gate).
pub fn read_value<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks an `RwLock` over a value that is only ever replaced whole (or over nothing).
pub fn write_value<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn poisoned(what: &str) -> ! {
    panic!("{what} may be half-updated: an earlier panic interrupted a change to it")
}

thread_local! {
    /// How many [`contain`] calls this thread is inside.
    static CONTAINED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Runs `f`, turning a panic in it into `Err` with the panic's message. For decoders of our
/// dependencies that panic on malformed input instead of failing (arrow-ipc slicing a buffer
/// a damaged file describes out of bounds): the input is then reported damaged.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    CONTAINED.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(c.get() - 1));
    result.map_err(|panic| panic_message(panic.as_ref()))
}

/// Whether this thread is inside [`contain`]: a panic hook (a fuzzer's, which aborts) can let
/// such a panic unwind to it.
pub fn panic_is_contained() -> bool {
    CONTAINED.with(|c| c.get() > 0)
}

/// The message a panic was raised with (`panic!("…")` carries a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_structure_is_not_reused_but_a_value_is() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let m2 = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _guard = lock(&m2, "the list");
            panic!("boom");
        })
        .join();
        let payload = std::panic::catch_unwind(|| lock(&m, "the list").len()).unwrap_err();
        assert!(panic_message(payload.as_ref()).contains("the list may be half-updated"));
        assert_eq!(lock_value(&m).len(), 1);
    }
}
