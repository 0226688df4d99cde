//! What the engine reads back from disk, on arbitrary bytes: log segment frames and record
//! payloads, checkpoint IPC files and manifests. Damage is an error, never a panic.
//!
//! arrow-ipc panics on some damaged messages (found here: a buffer sliced out of bounds, in
//! `read_buffer`); the engine runs it under `sluice::sync::contain`, which turns that into a
//! "damaged" error. Such a panic unwinds to it here too; any other panic is a crash.

#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use sluice::state::files::{Manifest, decode_ipc};
use sluice::storage::segment::{Frame, decode_payload, read_frame};

fn let_contained_panics_unwind() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !sluice::sync::panic_is_contained() {
                fuzzer_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_contained_panics_unwind();
    // A segment: frames until the end or the first damage, each payload decoded.
    let mut reader = std::io::Cursor::new(data);
    let mut payload = Vec::new();
    for _ in 0..1024 {
        let remaining = data.len() as u64 - reader.position();
        match read_frame(&mut reader, remaining, &mut payload) {
            Ok(Frame::Record(_)) => {
                let _ = decode_payload(&payload);
            }
            Ok(_) | Err(_) => break,
        }
    }
    // The bytes as one record payload, as a checkpoint file, as a manifest.
    let _ = decode_payload(data);
    let _ = decode_ipc(data.to_vec());
    let _ = serde_json::from_slice::<Manifest>(data);
});
