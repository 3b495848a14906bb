//! Reading the buffers scripts hand to native functions (a leaf module: `ccf`
//! and `ccf.crypto` both read through it).

use rquickjs::ArrayBuffer;

/// The bytes of a buffer a script handed over (copied).
pub fn bytes(buf: &ArrayBuffer<'_>) -> Vec<u8> {
    // SAFETY: the slice is copied at once, before any JavaScript can run and detach
    // the buffer.
    unsafe { buf.as_bytes() }
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}
