//! Time as the sans-IO cores take it: plain numbers on a clock the caller owns — the daemon's
//! monotonic clock from the relay's start, or a test's virtual one. Nothing below the shells
//! reads a clock itself.

/// Milliseconds: the key engine's, the call core's and the features' unit.
pub type Millis = u64;

/// Microseconds: the media plane's unit (a clip's frames are paced in µs).
pub type Micros = u64;
