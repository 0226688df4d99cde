//! The wire protocol's frontend decoder (pgwire's) on arbitrary frames: first as a
//! connection's first bytes, then as the messages after a valid startup. What must hold is the
//! server's contract: a frame decodes to a message or an error, or (see below) closes the
//! connection; it never hangs and never makes the decoder reserve memory that was not sent
//! (libFuzzer's `-timeout` and `-rss_limit_mb` catch those).
//!
//! Known and contained: pgwire 0.42 decodes some messages without bounds checks and panics on
//! counts that overrun their frame (found here: a `Bind` whose parameter count overruns,
//! `split_to out of bounds`; a `Parse` whose type count overruns, `advance out of bounds` in
//! `get_u32`). The server catches a panic per connection and closes only that one
//! (`serve/server.rs`); `tests/abuse.rs` sends those frames. So a panic inside pgwire's decoder
//! ends the input here as it ends the connection there; any other panic is a crash.

#![no_main]

use std::sync::Once;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::error::PgWireResult;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};

/// Decodes one message as the server would; `None` when pgwire's decoder panicked (the server
/// closes the connection then). The panic is let unwind past libFuzzer's hook, as
/// `sluice::sync::contain` does for the engine's own decoders.
fn decode(
    buf: &mut BytesMut,
    ctx: &DecodeContext,
) -> Option<PgWireResult<Option<PgWireFrontendMessage>>> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !sluice::sync::panic_is_contained() {
                fuzzer_hook(info);
            }
        }));
    });
    sluice::sync::contain(|| PgWireFrontendMessage::decode(buf, ctx)).ok()
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let _ = decode(&mut buf, &ctx);
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    let mut buf = BytesMut::from(data);
    for _ in 0..64 {
        match decode(&mut buf, &ctx) {
            Some(Ok(Some(_))) => {}
            _ => break,
        }
    }
});
